"""The pipeline's run selection for loss laws, backtests (largest size, largest compute), law selection."""

import numpy as np
import pandas as pd
import pytest

from scaling_cli.fit import backtest, selection, synthetic
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


def test_backtests_hold_out_the_largest_size_and_the_largest_compute():
    df = synthetic.chinchilla_runs(120, seed=4, noise=0.005)
    info = backtest.backtest(df["params"], df["tokens"], df["flops"], df["loss"], FitOptions(n_boot=0, grid_size=2),
                             laws=("chinchilla", "overtrain"))
    size, compute = info["largest_size"], info["largest_compute"]
    assert size["n_test"] == int(backtest.largest_size_mask(df["params"]).sum()) >= 12  # >= 10% of the runs
    assert compute["n_test"] == int(backtest.largest_compute_mask(df["flops"]).sum()) >= 12
    assert min(compute["runs"]["flops"]) >= np.quantile(df["flops"], 0.85)
    assert compute["extrapolation_factor"] > 1.0
    for h in (size, compute):
        score = h["scores"]["chinchilla"]
        assert score["status"] == "ok" and score["coverage"] == 1.0 and score["mean_abs_rel_error"] < 0.02
        assert len(score["predicted"]) == h["n_test"]


def test_selection_prefers_reliable_laws_then_the_best_combined_backtest():
    ok = {"status": "ok", "reliable": True}
    entries = {"chinchilla": dict(ok), "overtrain": dict(ok), "compute_only": dict(ok)}
    score = lambda e, cov=1.0: {"status": "ok", "coverage": cov, "mean_abs_rel_error": e}
    bts = {"largest_size": {"scores": {"chinchilla": score(0.02), "overtrain": score(0.01), "compute_only": score(0.001, 0.5)}},
           "largest_compute": {"scores": {"chinchilla": score(0.02), "overtrain": score(0.02), "compute_only": score(0.001)}}}
    sel = selection.select_loss_law(entries, bts)
    assert sel["loss_law"] == "overtrain" and sel["backtest_error"] == pytest.approx(0.015)
    assert [r["law"] for r in sel["ranking"]][:2] == ["overtrain", "chinchilla"]  # compute_only: too few runs predicted
    entries["overtrain"]["reliable"] = False
    assert selection.select_loss_law(entries, bts)["loss_law"] == "chinchilla"
    assert sel["allocation_law"] == "overtrain"
    # No backtest at all (too few sizes): the default order among reliable laws.
    none = {h: {"scores": {}, "reason": "needs runs of at least 3 model sizes"} for h in bts}
    assert selection.select_loss_law(entries, none)["loss_law"] == "chinchilla"
    assert selection.select_loss_law({"chinchilla": {"status": "not enough data"}}, bts)["loss_law"] is None


def test_two_sizes_give_no_backtest():
    df = synthetic.chinchilla_runs(40, seed=0)
    n = np.where(df["params"] > 1e9, 3e9, 1e8)
    info = backtest.backtest(n, df["tokens"], df["flops"], df["loss"], FitOptions(n_boot=0, grid_size=2))
    assert all(h["scores"] == {} and "3 model sizes" in h["reason"] for h in info.values())


def test_the_average_of_alike_laws_is_used_only_where_it_backtests_better():
    observed = np.array([2.0, 2.2])
    runs = {"loss": observed.tolist()}

    def holdouts(a, b):  # two laws' held-out predictions, the same on both hold-outs
        s = lambda p: {"status": "ok", "coverage": 1.0, "predicted": list(p),
                       "mean_abs_rel_error": float(np.mean(np.abs(np.array(p) / observed - 1)))}
        return {h: {"runs": runs, "scores": {"chinchilla": s(a), "overtrain": s(b)}}
                for h in ("largest_size", "largest_compute")}

    # misses on opposite sides: their geometric mean is closer than either law
    opposite = holdouts(observed * 1.011, observed * 0.99)
    assert selection.averaged_error(opposite, ["chinchilla", "overtrain"]) == pytest.approx(
        abs(np.sqrt(1.011 * 0.99) - 1), rel=1e-9)
    best = {"law": "overtrain", "combined_error": 0.01}
    got = selection.averaging(["overtrain", "chinchilla"], best, opposite)
    assert got["used"] and got["combined_error"] < 0.01
    # misses on the same side: the average is only a worse law
    same = holdouts(observed * 1.02, observed * 1.01)
    assert not selection.averaging(["overtrain", "chinchilla"], best, same)["used"]
    # one law alike: nothing to average
    assert not selection.averaging(["overtrain"], best, opposite)["used"]
    # end to end, select_loss_law records the decision
    entries = {"chinchilla": {"status": "ok", "reliable": True}, "overtrain": {"status": "ok", "reliable": True}}
    sel = selection.select_loss_law(entries, opposite)
    assert sel["alike"] == ["overtrain", "chinchilla"] and sel["average"]["used"]


def test_far_agreement_says_where_alike_laws_part_and_what_the_point_is():
    names = ["E", "A", "B", "alpha", "beta"]
    law = lambda e: {"law": "chinchilla", "status": "ok", "reliable": True, "param_names": names,
                     "params": dict(zip(names, (e, 406.4, 410.7, 0.34, 0.28)))}
    # chinchilla_fixed_e answers in the same Chinchilla form; E differs by 0.1 nats
    entries = {"chinchilla": law(1.69), "chinchilla_fixed_e": law(1.79) | {"law": "chinchilla_fixed_e"}}
    chosen = {"loss_law": "chinchilla_fixed_e", "alike": ["chinchilla_fixed_e", "chinchilla"],
              "allocation_law": "chinchilla_fixed_e", "average": {"used": True, "laws": ["chinchilla_fixed_e", "chinchilla"]}}
    got = selection.far_agreement(entries, chosen, 1e21)
    far = got["points"][-1]
    assert far["distance"] == 100.0 and set(far["predictions"]) == {"chinchilla", "chinchilla_fixed_e"}
    a, b = far["predictions"]["chinchilla_fixed_e"], far["predictions"]["chinchilla"]
    assert a - b == pytest.approx(0.1)
    note = got["notes"][0]
    assert "chinchilla (backtests alike)" in note and f"{b / a - 1:+.1%}" in note
    assert f"geometric mean ({np.sqrt(a * b):.4g}" in note
    # laws that agree within 0.5% at 100x: nothing to say
    entries["chinchilla"] = law(1.79)
    assert selection.far_agreement(entries, chosen, 1e21)["notes"] == []
