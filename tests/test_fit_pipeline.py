"""The pipeline's run selection for loss laws, and model selection by leave-largest-size-out error."""

import numpy as np
import pandas as pd
import pytest

from scaling_cli.fit import selection, synthetic
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.pipeline import best_per_cell


def test_best_per_cell_averages_seeds_then_takes_the_best_lr():
    done = pd.DataFrame({
        "run": list("abcdef"), "params": [1e8] * 5 + [2e8], "tokens": [2e9] * 5 + [4e9],
        "lr": [1e-3, 1e-3, 2e-3, 2e-3, 4e-3, 1e-3], "loss": [3.0, 3.2, 3.05, 3.07, 3.5, 2.9]})
    best, dropped = best_per_cell(done)
    assert dropped == 4 and len(best) == 2
    cell = best[best["params"] == 1e8].iloc[0]
    assert cell["lr"] == 2e-3 and cell["loss"] == pytest.approx(3.06)  # mean of seeds 3.05, 3.07 < mean 3.1
    plain = synthetic.chinchilla_runs(10).assign(run=lambda d: d["run_id"])
    same, none = best_per_cell(plain)
    assert none == 0 and same is plain


def test_holdout_scores_and_selection():
    df = synthetic.chinchilla_runs(120, seed=4, noise=0.005)
    info = selection.holdout_scores(df["params"], df["tokens"], df["flops"], df["loss"], FitOptions(n_boot=0, grid_size=2))
    assert info["n_test"] == int(selection.largest_size_mask(df["params"]).sum()) > 0
    score = info["scores"]["chinchilla"]
    assert score["status"] == "ok" and score["coverage"] == 1.0 and score["rmse_log"] < 0.02
    entries = {"chinchilla": {"status": "ok"}, "compute_only": {"status": "ok"}}
    holdout = {"scores": {"chinchilla": {"status": "ok", "coverage": 1.0, "rmse_log": 0.03},
                          "compute_only": {"status": "ok", "coverage": 1.0, "rmse_log": 0.01}}}
    assert selection.select_loss_law(entries, holdout)["loss_law"] == "compute_only"
    holdout["scores"]["compute_only"]["coverage"] = 0.5  # cannot predict most held-out runs
    assert selection.select_loss_law(entries, holdout)["loss_law"] == "chinchilla"
    assert selection.select_loss_law(entries, {"scores": {}, "reason": "x"})["loss_law"] == "chinchilla"
    assert selection.select_loss_law({"chinchilla": {"status": "not enough data"}}, holdout)["loss_law"] is None


def test_two_sizes_give_no_holdout_score():
    df = synthetic.chinchilla_runs(40, seed=0)
    n = np.where(df["params"] > 1e9, 3e9, 1e8)
    info = selection.holdout_scores(n, df["tokens"], df["flops"], df["loss"], FitOptions(n_boot=0, grid_size=2))
    assert info["scores"] == {} and "3 model sizes" in info["reason"]
