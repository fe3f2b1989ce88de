"""Reliability flags of the downstream laws (scaling_cli/fit/downstream_reliability.py): each flag
fires on synthetic data made to be degenerate that way, a law fitted to its own noisy samples is
reliable, and the flags reach fit.json, `fit`'s table, `predict` (which withholds the value) and
the HTML report.

    pytest tests/test_downstream_reliability.py
"""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import downstream as ds
from scaling_cli.fit import downstream_reliability as dr
from scaling_cli.fit import laws
from scaling_cli.fit.artifact import read_report
from scaling_cli.fit.bootstrap import FitOptions

OPTS = FitOptions(n_boot=60)
FAST = ["--n-boot", "30", "--grid-size", "2", "--curve-groups", "0"]


def _flags(fitted: dict) -> str:
    reliable, reasons = dr.assess(fitted)
    assert reliable == (not reasons)
    return " | ".join(reasons)


def test_laws_fitted_to_their_own_noisy_samples_are_reliable():
    rng = np.random.default_rng(0)
    d = np.geomspace(1e6, 1e9, 12)
    assert _flags(ds.fit_bleu_tokens(d, ds.bleu_tokens(d, 0.05, 0.5, 1.5) + rng.normal(0, 0.02, 12), OPTS)) == ""
    d = np.geomspace(1e6, 1e10, 10)
    ce = ds.downstream_ce(d, 1.2, 40.0, 0.25) * np.exp(rng.normal(0, 0.002, 10))
    assert _flags(ds.fit_downstream_ce(d, ce, OPTS)) == ""
    loss = np.linspace(2.2, 5.0, 14)
    assert _flags(ds.fit_error_of_loss(loss, ds.error_of_loss(loss, 0.76, 8.0, 1.1) + rng.normal(0, 0.002, 14), OPTS)) == ""


def test_downstream_ce_flags():
    rng = np.random.default_rng(1)
    d = np.geomspace(1e6, 1e9, 8)
    noise = lambda n=8: np.exp(rng.normal(0, 0.002, n))
    # No floor in the data: E runs to 0; with noise, it stays near 0 in enough refits.
    assert "collapsed to 0" in _flags(ds.fit_downstream_ce(d, 40 * d ** -0.25, OPTS))
    assert "reaches 0" in _flags(ds.fit_downstream_ce(d, 40 * d ** -0.25 * noise(), OPTS))
    # A steep law: alpha 1.5 is recovered, and is outside 0.02..1.
    why = _flags(ds.fit_downstream_ce(d, ds.downstream_ce(d, 1.2, 40 * 1e6 ** 1.25, 1.5) * noise(), OPTS))
    assert float(re.search(r"alpha = ([0-9.]+) is outside the plausible range 0.02..1", why).group(1)) == pytest.approx(1.5, abs=0.05)
    # A low outlier at the end: the fitted floor sits above the smallest observed CE.
    why = _flags(ds.fit_downstream_ce(d, np.array([4.0, 3.5, 3.2, 3.1, 3.1, 3.1, 2.6, 3.1]), OPTS))
    assert "not below the smallest observed CE 2.6" in why
    # A quarter decade of D_p: the curvature that places E is invisible.
    narrow = np.geomspace(1e6, 4e6, 5)
    why = _flags(ds.fit_downstream_ce(narrow, ds.downstream_ce(narrow, 1.2, 40.0, 0.25) * noise(5) ** 5, OPTS))
    assert "E is not identified by the data" in why
    # A step: resampled, alpha runs to the optimiser's upper bound 5.
    why = _flags(ds.fit_downstream_ce(d, np.where(d < 3e6, 5.0, 3.0) * noise(), OPTS))
    assert "alpha is not identified" in why and "upper bound 5" in why


def test_bleu_flags_points_and_intervals_at_the_box():
    d = np.geomspace(1e6, 1e9, 8)
    # Convex in log D_p (a power law in D_p): beta runs to its upper bound 10.
    assert "beta = 10 is at its upper bound" in _flags(ds.fit_bleu_tokens(d, 1e-3 * d ** 0.5, OPTS))
    # Falling with D_p: the best alpha > 0 is its lower bound 1e-6.
    falling = 12 - 0.2 * np.log(d / 1e6)
    assert "alpha = 1e-06 is at its lower bound" in _flags(ds.fit_bleu_tokens(d, falling, OPTS))
    # The tiny default's chrF at N≈3.16e4 (4 runs): interior point, interval ending on the box.
    tokens = np.array([675840.0, 225280.0, 450560.0, 900096.0])
    fit = ds.fit_bleu_tokens(tokens, np.array([12.714, 12.261, 9.415, 13.785]), FitOptions(n_boot=200))
    assert 1e-5 < fit["params"]["alpha"] and fit["params"]["beta"] < 9.9  # not at a bound ...
    why = _flags(fit)
    assert "beta is not identified" in why and "upper bound 10" in why  # ... but not identified


def test_error_of_loss_flags():
    rng = np.random.default_rng(3)
    steep = np.linspace(3.0, 3.1, 10)  # a drop sharper than gamma = 50 allows
    err = 0.76 - 0.5 * np.exp(-80 * (steep - 3.0)) + rng.normal(0, 0.002, 10)
    assert "gamma = 50 is at its upper bound" in _flags(ds.fit_error_of_loss(steep, err, OPTS))
    loss = np.linspace(2.2, 5.0, 10)
    why = _flags(ds.fit_error_of_loss(loss, ds.error_of_loss(loss, 1.3, 2.0, 0.3) + rng.normal(0, 0.002, 10), OPTS))
    assert "eps = 1.3" in why and "outside 0..1" in why
    why = _flags(ds.fit_error_of_loss(loss, np.where(loss < 3.5, 0.3, 0.75) + rng.normal(0, 0.002, 10), OPTS))
    assert "eps is not identified by the data" in why
    # Within noise of 1 is not flagged: eps = 0.99 fitted from errors scattered by 0.01.
    near = ds.error_of_loss(loss, 0.99, 20.0, 1.0) + rng.normal(0, 0.01, 10)
    assert "eps" not in _flags(ds.fit_error_of_loss(loss, near, OPTS))


def test_failed_bootstrap_refits_flag_but_resamples_of_too_few_runs_do_not():
    d = np.geomspace(1e6, 1e10, 10)
    fit = ds.fit_downstream_ce(d, ds.downstream_ce(d, 1.2, 40.0, 0.25), OPTS)
    assert fit["bootstrap"] == {"n_boot": 60, "n_boot_too_few_runs": 0, "n_boot_failed": 0}
    fit["bootstrap"] = {"n_boot": 100, "n_boot_too_few_runs": 40, "n_boot_failed": 7}
    assert _flags(fit) == "7 of 60 bootstrap refits failed"
    fit["bootstrap"] = {"n_boot": 100, "n_boot_too_few_runs": 40, "n_boot_failed": 6}
    assert _flags(fit) == ""
    # The LM fitters count resamples of < 3 distinct runs apart (4 runs: about a third of them).
    four = ds.fit_bleu_tokens(d[:4], ds.bleu_tokens(d[:4], 0.05, 0.5, 1.5), FitOptions(n_boot=100))
    assert 15 < four["bootstrap"]["n_boot_too_few_runs"] < 50 and four["bootstrap"]["n_boot_failed"] == 0


def _table() -> pd.DataFrame:
    """Two sizes x 6 token counts: clean_ce follows its law, bad_ce has no floor (E not identified),
    acc follows Err(L) with eps = 1.3 (an impossible chance error)."""
    rng = np.random.default_rng(4)
    rows = []
    for n in (1e7, 4e7):
        for d in np.geomspace(1e8, 1e10, 6):
            loss = float(laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values()) * np.exp(rng.normal(0, 0.002)))
            rows.append({"params": n, "tokens": d, "loss": loss,
                         "clean_ce": float(ds.downstream_ce(d, 1.2, 40.0, 0.25)) * np.exp(rng.normal(0, 0.002)),
                         "bad_ce": 40 * d ** -0.25 * np.exp(rng.normal(0, 0.002)),
                         "acc": 1 - float(ds.error_of_loss(loss, 1.3, 2.0, 0.3)) + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


def test_flags_reach_fit_json_the_table_predict_and_the_report(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    _table().to_csv(path, index=False)
    outdir = tmp_path / "fit"
    assert main(["fit", str(path), "-o", str(outdir), "--no-plots", "--verbose", *FAST]) == 0
    out = capsys.readouterr().out
    line = lambda col: next(ln for ln in out.splitlines() if ln.strip().startswith(col + " "))
    assert " ok " in line("clean_ce") and " UNRELIABLE " in line("bad_ce") and " UNRELIABLE " in line("acc")
    assert "! N≈1e+07: E is not identified: its interval" in out and "! N≈4e+07: E is not identified" in out
    assert "! eps = 1.3" in out

    report = read_report(str(outdir))
    metrics = report["downstream"]["metrics"]
    assert metrics["clean_ce"]["reliable"] and metrics["bad_ce"]["reliable"] is False
    assert [g["reasons"] for g in metrics["clean_ce"]["groups"]] == [[], []]
    for group in metrics["bad_ce"]["groups"]:  # what fit.json holds is what the check says of it
        assert group["reliable"] is False and (False, group["reasons"]) == dr.assess(group)
    assert metrics["acc"]["reliable"] is False and "eps" in metrics["acc"]["reasons"][0]

    args = ["predict", "--params", "4e7", "--tokens", "3e10", "--fit", str(outdir)]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"clean_ce", "clean_ce_interval", "bad_ce", "bad_ce_interval", "acc", "acc_interval", "loss"} <= set(result)
    assert result["clean_ce"] == pytest.approx(float(ds.downstream_ce(3e10, 1.2, 40.0, 0.25)), rel=0.02)
    for col, what in (("bad_ce", "reaches 0"), ("acc", "eps = 1.3")):
        got = result["downstream"][col]
        assert result[col] is None and result[f"{col}_interval"] == [None, None]
        assert got["status"] == "unreliable" and got["value"] is None and what in got["reason"]
    assert result["downstream"]["bad_ce"]["model_params"] == pytest.approx(4e7)
    assert main(args) == 0  # one line for what it withholds; --verbose gives each reason
    assert "no prediction for 2 downstream metric(s): bad_ce, acc (withheld: flagged unreliable)" in capsys.readouterr().out
    assert main([*args, "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "bad_ce     withheld: L_down = E + A / D_p^alpha at N≈4e+07 is flagged unreliable: E is not identified" in text

    from scaling_cli.html_report import Target, render_report

    page = render_report(str(path), str(outdir), Target(params=4e7, tokens=3e10))
    page = html.unescape(page)
    assert "unreliable: L_down = E + A / D_p^alpha at N≈4e+07 is flagged unreliable" in page  # predictions
    laws_block = page[page.index("Downstream laws"):]
    assert "E is not identified: its interval" in laws_block and "eps = 1.32 is outside 0..1" in laws_block
