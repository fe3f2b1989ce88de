"""No confident nonsense: degenerate fits are flagged in fit, fit.json and predict, which withholds."""

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import reliability

FAST = ["--n-boot", "20", "--grid-size", "2", "--no-plots"]


def _entry(**params):
    return {"law": "chinchilla", "status": "ok", "param_names": list(params), "params": params,
            "intervals": {k: [v, v] for k, v in params.items()}, "optimizer": {"n_boot": 200, "n_boot_failed": 0}}


def test_assess_flags_the_readme_fit_and_passes_a_sane_one():
    """The README's old result: E = 5.9e-05, B = 5.1e26, beta = 5.0 at its bound, D/N = 6e-5."""
    readme = _entry(E=5.9e-05, A=30.0, B=5.1e26, alpha=0.3, beta=5.0)
    ok, reasons = reliability.assess(readme, min_loss=4.0, max_flops=1e14)
    assert not ok
    text = " | ".join(reasons)
    assert "beta = 5 is at its bound" in text and "E = 5.9e-05 has collapsed" in text and "D/N" in text
    sane = _entry(E=1.82, A=482.0, B=2085.4, alpha=0.348, beta=0.366)
    assert reliability.assess(sane, min_loss=2.2, max_flops=1e21) == (True, [])
    wide = _entry(E=1.14, A=482.0, B=2085.4, alpha=0.348, beta=0.366)
    wide["intervals"]["E"] = [0.05, 1.7]  # the "E = 1.14, 90% CI [0.05, 1.7]"
    ok, reasons = reliability.assess(wide, min_loss=2.2, max_flops=1e21)
    assert not ok and "not identified" in reasons[0]


@pytest.fixture(scope="module")
def degenerate_fit(tmp_path_factory):
    """8 runs, 4 sizes x 2 token budgets, whose loss does not depend on D (like the old CPU default):
    every L(N, D) law puts the compute-optimal D/N near 1e-4. Fitted once: (folder, fit's output)."""
    rng = np.random.default_rng(0)
    n, d = np.repeat([2e5, 4e5, 8e5, 1.6e6], 2), np.tile([2e6, 4e6], 4)
    loss = (2.0 + 60 * n ** -0.3) * np.exp(rng.normal(0, 0.01, 8))
    tmp = tmp_path_factory.mktemp("degenerate")
    pd.DataFrame({"run_id": [f"r{i}" for i in range(8)], "params": n, "tokens": d, "loss": loss}).to_csv(
        tmp / "runs.csv", index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fit", str(tmp / "runs.csv"), "-o", str(tmp / "fit"), "--verbose", *FAST]) == 0
    return tmp, out.getvalue()


def test_fit_flags_unreliable_laws_in_its_table_and_fit_json(degenerate_fit):
    degenerate_fit, out = degenerate_fit
    assert "UNRELIABLE" in out and "compute-optimal D/N" in out and "every fitted law is flagged unreliable" in out
    report = json.loads((degenerate_fit / "fit" / "fit.json").read_text())
    chin = report["laws"]["chinchilla"]
    assert chin["reliable"] is False and any("D/N" in r for r in chin["reasons"])
    assert report["selection"]["reliable"] is False and report["selection"]["reasons"]


def test_predict_withholds_the_allocation_and_every_interval(degenerate_fit, capsys):
    fit = str(degenerate_fit[0] / "fit" / "fit.json")
    assert main(["predict", "--params", "7e9", "--fit", fit, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens"] is None and r["loss"] is None and "withheld" in r["compute_optimal"]
    assert r["reliable"] is False and r["warnings"]
    assert main(["predict", "--params", "7e9", "--tokens", "1.4T", "--fit", fit, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # a flagged law keeps no bootstrap interval, but its backtest misses still give one around the point
    assert r["loss"] > 0 and r["loss_ci"] == [None, None] and r["loss_pi_bootstrap"] == [None, None]
    assert r["loss_lo"] < r["loss"] < r["loss_hi"] and r["loss_pi"] == r["loss_pi_backtest"]
    assert "backtest-calibrated only" in r["interval_method"]
    assert "withheld" in r["compute_optimal"] and r["extrapolation_factor"] > 1e6
    assert {"law", "extrapolation_factor", "backtest_error", "params", "tokens", "flops", "loss_pi"} <= set(r)
    assert main(["predict", "--params", "7e9", "--fit", fit]) == 0
    text = capsys.readouterr().out
    assert "optimal    withheld" in text and "UNRELIABLE" in text and "not predicted" in text
