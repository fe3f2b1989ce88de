"""Backtest-calibrated intervals: the conformal rule, and its coverage measured on 200 synthetic draws."""

import numpy as np
import pandas as pd
import pytest

from scaling_cli.fit import backtest, calibration, conformal, family, laws, loss_laws, synthetic
from scaling_cli.fit.bootstrap import FitOptions

FAST = FitOptions(n_boot=0, grid_size=2, holdout_starts=8)


def test_quantile_is_the_conformal_order_statistic():
    s = np.arange(1, 20) / 1000.0                      # 19 scores: ceil(20 * 0.9) = 18th smallest
    cal = conformal.calibrate(s, 0.9)
    assert cal["method"] == "conformal" and cal["q"] == pytest.approx(0.018) and cal["n"] == 19
    few = conformal.calibrate([0.002, 0.004, 0.003], 0.9)  # ceil(4 * 0.9) = 4 > 3: largest x 1.5
    assert few["method"] == "largest miss" and few["q"] == pytest.approx(0.006) and "only 3" in few["note"]
    assert conformal.calibrate([], 0.9)["q"] is None and conformal.interval(2.0, 10, None) == [None, None]


def test_interval_grows_as_one_plus_log_distance_and_is_symmetric_in_log():
    cal = {"q": 0.01}
    lo1, hi1 = conformal.interval(2.0, 1.0, cal)
    assert hi1 / 2.0 == pytest.approx(np.exp(0.01)) and 2.0 / lo1 == pytest.approx(np.exp(0.01))
    lo, hi = conformal.interval(2.0, 100.0, cal)
    assert np.log(hi / 2.0) == pytest.approx(0.01 * (1 + np.log(100)))
    assert conformal.interval(2.0, 0.5, cal) == [lo1, hi1]  # inside the data: the edge's width
    # scores divide the distance back out
    s = conformal.scores([2.02, 1.0], [2.0, 1.0], [np.e - 1, 5.0])
    assert s[0] == pytest.approx(np.log(1.01) / (1 + np.log(np.e - 1))) and s[1] == 0.0
    assert conformal.union([1.0, 2.0], [0.9, 1.5]) == [0.9, 2.0] and conformal.union([None, None], [1, 2]) == [1, 2]


# An over-training law (alpha = beta = 0.34) on 5 sizes x 4 multipliers: 1% run scatter and a
# 0.3% offset shared by each size, the noise of real proxy sweeps.
SPEC = synthetic.GridSpec("coverage", synthetic.BENCHMARK_GRIDS["clean"].truth,
                          synthetic._grid_cells(np.geomspace(1e7, 2.56e8, 5), (10, 20, 40, 80)),
                          run_noise=0.01, size_noise=0.003, missing=0.0)


def _draw(seed: int) -> list[tuple[bool, float]]:
    """(truth inside, half-width in log) of the calibrated interval at 10x and 100x for one draw."""
    runs = synthetic.pathological_runs(SPEC, seed)
    n, d, c, loss = (runs[k].to_numpy() for k in ("params", "tokens", "flops", "loss"))
    bt = backtest.backtest(n, d, c, loss, FAST, laws=("overtrain",))
    bt |= calibration.two_sizes_fold(n, d, c, loss, FAST, ("overtrain",))
    cal = calibration.calibrate_law(bt, "overtrain", 0.9)
    fit = family.entry_chinchilla(backtest.refit("overtrain", n, d, c, loss, FAST))
    out = []
    for distance in (10.0, 100.0):
        n_t = np.sqrt(distance * c.max() / (6 * 20))
        point = float(laws.chinchilla_loss((n_t, 20 * n_t), *fit))
        lo, hi = conformal.interval(point, distance, cal)
        truth = float(synthetic.grid_truth(SPEC, n_t, 20 * n_t))
        out.append((lo <= truth <= hi, float(np.log(hi / lo) / 2)))
    return out


@pytest.mark.slow
def test_calibrated_interval_covers_the_truth_at_its_nominal_rate():
    """200 intervals (100 draws x 10x and 100x the largest fitted compute), nominal 90%: at least 80%
    contain the true law, and they are not trivially wide (median half-width under 15%)."""
    got = [x for seed in range(100) for x in _draw(seed)]
    inside = np.array([g[0] for g in got])
    width = np.array([g[1] for g in got])
    assert inside.mean() >= 0.80, f"coverage {inside.mean():.0%}"
    assert np.median(width) < 0.15, f"median half-width {np.median(width):.1%}"


def test_fit_calibrates_every_law_and_measures_the_selected_one():
    runs = synthetic.pathological_runs(synthetic.BENCHMARK_GRIDS["clean"], 0)
    done = runs.rename(columns={"run_id": "run"})
    block = loss_laws.fit_loss_laws(done, FAST)
    law = block["selection"]["loss_law"]
    cal = block["entries"][law]["calibration"]
    # 6 sizes: the two largest sizes are held out as a third, longer calibration fold
    assert set(cal["holdouts"]) == {"largest_size", "largest_compute", "largest_two_sizes"}
    assert cal["n"] >= 9 and cal["method"] == "conformal" and 0 < cal["q"] < 0.05
    folds = block["backtests"] | block["calibration_fold"]
    assert cal["max_distance"] == pytest.approx(max(max(f["runs"]["distance"]) for f in folds.values()))
    cov = block["selection"]["interval_coverage"]
    assert set(cov) == {"largest_size", "largest_compute"}
    for h, info in cov.items():
        n_test = len(block["backtests"][h]["runs"]["loss"])
        assert info["n"] == n_test and 0.0 <= info["coverage"] <= 1.0 and len(info["intervals"]) == n_test


def test_nested_coverage_never_uses_the_held_out_runs():
    """Moving the held-out runs' losses changes their coverage, never their intervals: each interval is
    calibrated on backtests of the training runs alone."""
    runs = synthetic.pathological_runs(synthetic.BENCHMARK_GRIDS["clean"], 1)
    n, d, c, loss = (runs[k].to_numpy() for k in ("params", "tokens", "flops", "loss"))
    bt = backtest.backtest(n, d, c, loss, FAST, laws=("overtrain",))
    first = calibration.nested_coverage(n, d, c, loss, "overtrain", FAST, bt)
    test = backtest.largest_size_mask(n)
    moved = loss.copy()
    moved[test] *= 1.2
    bt2 = backtest.backtest(n, d, c, moved, FAST, laws=("overtrain",))
    second = calibration.nested_coverage(n, d, c, moved, "overtrain", FAST, bt2)
    assert np.allclose(first["largest_size"]["intervals"], second["largest_size"]["intervals"])
    assert second["largest_size"]["coverage"] == 0.0
