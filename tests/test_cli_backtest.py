"""`scaling-cli backtest`: per-law held-out errors, interval coverage, the selected law, a plot."""

import json

import numpy as np
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import synthetic


@pytest.fixture(scope="module")
def suite_csv(tmp_path_factory):
    """4 sizes x 5 multipliers of an over-training law, with a non-embedding column (0.7 N - 5e5)."""
    df = synthetic.overtrain_runs(sizes=(2e7, 4e7, 8e7, 1.6e8), multipliers=(5, 10, 20, 40, 80), seed=5, noise=0.003)
    df["params_nonembed"] = 0.7 * df["params"] - 5e5
    path = tmp_path_factory.mktemp("bt") / "suite.csv"
    df.to_csv(path, index=False)
    return path


def test_backtest_prints_every_laws_held_out_error_and_the_selected_law(suite_csv, capsys):
    assert main(["backtest", str(suite_csv), "--n-boot", "10", "--grid-size", "2"]) == 0
    out = capsys.readouterr().out
    outdir = suite_csv.with_name("suite_backtest")
    result = json.loads((outdir / "backtest.json").read_text())
    size = result["backtests"]["largest_size"]
    assert size["n_test"] == 5 and size["heldout_params"] == pytest.approx(1.6e8)
    assert size["extrapolation_factor"] == pytest.approx(2.0 ** 2)  # 2x the size at the same M: 4x the compute
    for law in ("chinchilla", "chinchilla_fixed_e", "overtrain", "overtrain_fixed_e"):
        s = size["scores"][law]
        assert s["status"] == "ok" and s["mean_abs_rel_error"] < 0.01
        assert any(line.split()[:2] == [law, f"{s['mean_abs_rel_error']:.2%}"] for line in out.splitlines())
        assert 0.0 <= s["interval_coverage"] <= 1.0 and len(s["intervals"]) == 5
    selected = result["selection"]["loss_law"]
    assert f"selected loss law: {selected}" in out and "<- selected" in out
    assert "largest compute" in out and result["backtests"]["largest_compute"]["n_test"] >= 2
    kinds = result["params_kinds"]
    assert set(kinds["kinds"]) == {"total", "nonembed"} and kinds["selected"] in ("total", "nonembed")
    assert "parameter count: fitted with total" in out
    assert (outdir / "backtest.png").stat().st_size > 1000


def test_backtest_json_summary_and_bad_input(suite_csv, tmp_path, capsys):
    assert main(["backtest", str(suite_csv), "--n-boot", "0", "--grid-size", "2", "--no-plots", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["selected"] in summary["combined"]
    assert set(summary["largest_size"]) >= {"chinchilla", "overtrain"}
    assert all(v is None for v in summary["largest_size_interval_coverage"].values())  # no bootstrap: no coverage
    assert np.isfinite(summary["params_kind"]["total"])
    assert main(["backtest", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
