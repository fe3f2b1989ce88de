"""Calibrated intervals: a seeded, small coverage study on a sweep with cluster structure by size."""

import numpy as np
import pytest

from scaling_cli.fit import coverage, intervals
from scaling_cli.fit.bootstrap import FitOptions

REPS = 30


@pytest.fixture(scope="module")
def study():
    """Chinchilla's law (alpha = beta) on 6 sizes x 4 multipliers, 2 seeds per cell, noise that grows
    for short runs, and a per-size offset that dominates the noise of the big runs: the structure
    that made the old run-level bootstrap undercover. 30 replicates, 40 resamples each."""
    scenario = coverage.SCENARIOS[2]
    options = FitOptions(n_boot=40, grid_size=2, boot_starts=2)
    need: dict[tuple[str, str], list[float]] = {}
    for r in range(REPS):
        for method, got in coverage.replicate(scenario, "chinchilla", ("pairs", intervals.DEFAULT_METHOD), r,
                                              options).items():
            for q, v in got.items():
                need.setdefault((method, q), []).extend(v)
    return {k: np.asarray(v) for k, v in need.items()}


def test_default_intervals_cover_at_least_85_percent_at_nominal_90(study):
    """Every parameter and the loss at 10x and 100x the largest fitted compute. With 30 replicates a
    true coverage of 90% is observed below 85% with probability ~0.2 per quantity, of 95% (what the
    full study measures for this scenario, README) with probability < 0.01."""
    method = intervals.DEFAULT_METHOD
    assert study[(method, "flagged")].mean() == 0.0  # these fits are sane: predict shows their intervals
    for q in ("E", "A", "B", "alpha", "beta", "L@10x", "L@100x"):
        covered = (study[(method, q)] <= 1.0).mean()
        assert covered >= 0.85, f"{q}: {covered:.0%}"


def test_run_level_bootstrap_undercovers_the_same_sweeps(study):
    """The old scheme (runs resampled independently) misses the per-size offsets: its worst
    quantity covers well under 85% on the very replicates the default covers."""
    worst = min((study[("pairs", q)] <= 1.0).mean() for q in ("E", "A", "alpha", "L@10x", "L@100x"))
    assert worst < 0.85


def test_needed_widening_is_the_factor_that_just_covers():
    assert coverage.needed_widening(2.0, 1.8, 2.2, 2.1) == pytest.approx(np.log(1.05) / np.log(1.1))
    assert coverage.needed_widening(2.0, 1.8, 2.2, 1.7) > 1.0
    assert coverage.needed_widening(2.0, None, None, 2.1) == float("inf")
    w = intervals.two_stage_weights(np.array([0, 0, 1, 1, 1, 2]), 500, np.random.default_rng(0))
    assert w.shape == (500, 6) and (w.sum(axis=1) > 0).all()
    # a drawn size contributes as many runs as it has, so resample sizes vary only with the sizes drawn
    assert set(np.unique(w.sum(axis=1))) <= {float(k) for k in range(2, 10)}
    # units (e.g. the points one run's curve contributes) move together
    units = np.array([0, 0, 1, 2, 2, 3])
    w = intervals.two_stage_weights(np.array([0, 0, 1, 1, 1, 2]), 200, np.random.default_rng(1), units)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all()
    # the default (Bayesian) scheme never drops a size, keeps units together and has mean weight 1
    b = intervals.bayes_weights(np.array([0, 0, 1, 1, 1, 2]), 4000, np.random.default_rng(2), units)
    assert (b > 0).all() and (b[:, 0] == b[:, 1]).all() and (b[:, 3] == b[:, 4]).all()
    assert b.mean(axis=0) == pytest.approx(np.ones(6), abs=0.06)
    assert intervals.small_cluster_factor(4) == pytest.approx(1.65, abs=0.01)
    assert intervals.small_cluster_factor(6) == pytest.approx(1.34, abs=0.01)
    assert intervals.small_cluster_factor(400) == pytest.approx(1.0, abs=0.01)
