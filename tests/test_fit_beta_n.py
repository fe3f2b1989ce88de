"""chinchilla_beta_n: Chinchilla with a data exponent that depends on N (after Farseer)."""

import numpy as np
import pytest

from scaling_cli.fit import beta_n, family, laws, parametric, reliability
from scaling_cli.fit.bootstrap import FitOptions

FAST = FitOptions(n_boot=0, grid_size=2, holdout_starts=8)
TRUTH = {"E": 1.9, "A": 400.0, "alpha": 0.34, "B": 2.0, "beta": 0.33, "gamma": 0.04, "N_ref": 1e8, "D_ref": 1e9}


def _runs(truth: dict, seed: int, noise: float = 0.004):
    sizes = np.geomspace(2e7, 5e8, 6)
    n = np.repeat(sizes, 6)
    d = n * np.tile([5, 10, 20, 40, 80, 160], 6)
    law = laws.LAWS[beta_n.NAME]
    clean = law.func((n, d), *(truth[k] for k in law.param_names))
    return n, d, clean * np.exp(np.random.default_rng(seed).normal(0, noise, len(n)))


def _target(truth: dict, n, d, f: float):
    c = f * (6 * n * d).max()
    n_t = np.sqrt(c / (6 * 20))
    law = laws.LAWS[beta_n.NAME]
    return n_t, 20 * n_t, law.func((n_t, 20 * n_t), *(truth[k] for k in law.param_names))


def test_recovers_an_n_dependent_data_exponent_and_extrapolates_where_chinchilla_drifts():
    """Six draws of a truth whose data exponent grows with N (gamma = 0.04): the law finds gamma, and
    30x beyond the fitted compute it misses by a third of what Chinchilla misses, on average."""
    gammas, ours, theirs = [], [], []
    for seed in range(6):
        n, d, loss = _runs(TRUTH, seed)
        entry = beta_n.fit(n, d, loss, FAST)
        assert entry["status"] == "ok"
        gammas.append(entry["params"]["gamma"])
        chin = family.fit_member("chinchilla", n, d, loss, FAST, intervals_=False)
        n_t, d_t, truth = _target(TRUTH, n, d, 30.0)
        ours.append(abs(float(parametric.entry_loss(entry, n_t, d_t, 6 * n_t * d_t)[0]) / truth - 1))
        theirs.append(abs(float(laws.chinchilla_loss((n_t, d_t), *family.entry_chinchilla(chin))) / truth - 1))
    assert np.mean(gammas) == pytest.approx(0.04, abs=0.01) and min(gammas) > 0.01
    assert np.mean(ours) < 0.007 and np.mean(theirs) > 2 * np.mean(ours)


def test_is_chinchilla_when_the_exponent_does_not_move():
    flat = TRUTH | {"gamma": 0.0}
    n, d, loss = _runs(flat, 3)
    entry = beta_n.fit(n, d, loss, FitOptions(n_boot=40, grid_size=2, holdout_starts=8))
    assert abs(entry["params"]["gamma"]) < 0.02
    lo, hi = entry["intervals"]["gamma"]
    assert lo < 0.0 < hi
    # samples answer at any target, one row each, around the point
    s = parametric.entry_loss(entry, np.array([1e9, 2e9]), np.array([2e10, 4e10]), np.array([1.2e20, 4.8e20]),
                              use_samples=True)
    assert s.shape == (40, 2) and np.isfinite(s).all()
    # its numerical compute-optimal D/N is the closed form of the Chinchilla it equals
    p = entry["params"]
    chin = np.array([p["E"], p["A"], p["B"] * p["D_ref"] ** p["beta"], p["alpha"], p["beta"]])
    chin_flat = chin.copy()
    q = dict(p, gamma=0.0)
    assert beta_n.optimal_ratio(q, 1e21) == pytest.approx(reliability.optimal_ratio(chin_flat, 1e21), rel=1e-3)


def test_needs_enough_sizes_and_is_flagged_at_its_bounds():
    n, d, loss = _runs(TRUTH, 0)
    few = beta_n.fit(n[:9], d[:9], loss[:9], FAST)
    assert few["status"] == "not enough data" and ">= 12 points of >= 4 sizes" in few["reason"]
    entry = beta_n.fit(n, d, loss, FitOptions(n_boot=20, grid_size=2, holdout_starts=8))
    assert reliability.assess(entry, float(loss.min()), float((6 * n * d).max()))[0]
    at_bound = {**entry, "params": dict(entry["params"], gamma=beta_n.GAMMA_BOUNDS[1])}
    ok, reasons = reliability.assess(at_bound, float(loss.min()), float((6 * n * d).max()))
    assert not ok and any("gamma = 1 is at its bound" in r for r in reasons)
