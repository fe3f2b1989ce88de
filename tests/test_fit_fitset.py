"""Fit-set selection: the rules, the choice, and recovery of a known law when out-of-regime runs are injected."""

import numpy as np
import pandas as pd
import pytest

from scaling_cli.errors import UserError
from scaling_cli.fit import family, fitset, laws, loss_laws, synthetic
from scaling_cli.fit.bootstrap import FitOptions

FAST = FitOptions(n_boot=0, grid_size=2, holdout_starts=8)


def _grid(sizes, multipliers):
    n = np.repeat(np.asarray(sizes, float), len(multipliers))
    d = n * np.tile(np.asarray(multipliers, float), len(sizes))
    return n, d, 6 * n * d


def test_rules_leave_out_what_they_say():
    n, d, c = _grid([1e7, 2e7, 4e7, 8e7, 1.6e8, 3.2e8], [5, 20, 80])
    assert fitset.FIT_SETS["all"].mask(n, d, c).all()
    drop1 = fitset.FIT_SETS["drop_smallest"].mask(n, d, c)
    assert not drop1[n == 1e7].any() and drop1[n > 1e7].all()
    drop2 = fitset.FIT_SETS["drop_two_smallest"].mask(n, d, c)
    assert not drop2[n <= 2e7].any() and drop2[n > 2e7].all()
    top = fitset.FIT_SETS["top_compute"].mask(n, d, c)
    assert np.array_equal(top, c >= c.max() / 1e3) and (~top).sum() == 6  # C < 4.9e16
    trained = fitset.FIT_SETS["well_trained"].mask(n, d, c)
    assert np.array_equal(trained, d / n >= 10)
    w = fitset.FIT_SETS["sqrt_compute"].weights(c)
    assert w.mean() == pytest.approx(1.0) and np.allclose(w / w.max(), np.sqrt(c / c.max()))
    assert fitset.FIT_SETS["all"].weights(c) is None


def test_rules_say_when_they_do_not_apply():
    n, d, c = _grid([1e7, 2e7, 4e7, 8e7], [20, 40])
    assert "needs runs of >= 5 sizes" in fitset.FIT_SETS["drop_smallest"].applies(n, d, c)
    assert fitset.FIT_SETS["well_trained"].applies(n, d, c) == "leaves out no run"
    assert fitset.FIT_SETS["all"].applies(n, d, c) is None
    with pytest.raises(UserError, match="--fit-set 'nope' is not a fit set; one of: auto, all"):
        fitset.get("nope")


def test_choice_needs_a_clear_margin_and_simpler_laws_win_ties():
    n_free = {"overtrain": 4, "overtrain_fixed_e": 3, "chinchilla": 5}
    # within 25% the simpler law is the candidate's law and score
    assert fitset.candidate_score({"chinchilla": 0.010, "overtrain": 0.012}, n_free) == (0.012, "overtrain")
    assert fitset.candidate_score({"chinchilla": 0.005, "overtrain": 0.012}, n_free) == (0.005, "chinchilla")
    assert fitset.candidate_score({"overtrain": None}, n_free) == (None, None)
    # a candidate must beat all runs by more than 20%
    name, why = fitset.choose({"all": (0.010, "overtrain"), "drop_smallest": (0.0085, "overtrain")})
    assert name == "all" and "tie goes to all runs" in why
    name, why = fitset.choose({"all": (0.010, "overtrain"), "drop_smallest": (0.0075, "overtrain")})
    assert name == "drop_smallest" and "better by more than 20%" in why


@pytest.fixture(scope="module")
def injected():
    """The over-training law (alpha = beta = 0.34, E = 1.8) on 6 sizes x 5 multipliers with 0.3% noise,
    then the two smallest sizes made 3-12% worse than the law (out of the power-law regime)."""
    truth = synthetic.BENCHMARK_GRIDS["clean"].truth
    n, d, c = _grid(np.geomspace(1e7, 3.2e8, 6), [10, 20, 40, 80, 160])
    rng = np.random.default_rng(3)
    clean = laws.chinchilla_loss((n, d), *truth) * np.exp(rng.normal(0, 0.003, len(n)))
    bad = n < 2.5e7
    loss = clean * np.exp(np.where(bad, 0.03 + 0.09 * (1e7 / n) ** 2 * (10 / (d / n)) ** 0.5, 0.0))
    done = pd.DataFrame({"run": [f"r{i}" for i in range(len(n))], "params": n, "tokens": d, "flops": c, "loss": loss})
    auto = loss_laws.fit_loss_laws(done, FAST)
    forced = loss_laws.fit_loss_laws(done, FitOptions(**{**FAST.as_dict(), "fit_set": "all"}))
    return truth, done, bad, auto, forced


def test_selection_leaves_out_the_injected_runs(injected):
    truth, done, bad, auto, forced = injected
    fs = auto["fit_set"]
    assert fs["name"] in ("drop_smallest", "drop_two_smallest")
    left_out = set(fs["left_out"])
    assert left_out <= set(done["run"][bad]) and len(left_out) >= 5
    assert fs["candidates"]["all"]["score"] > fs["candidates"][fs["name"]]["score"]
    assert forced["fit_set"]["name"] == "all" and forced["fit_set"]["n_left_out"] == 0
    assert forced["fit_set"]["reason"] == "forced by --fit-set all"


def test_selection_recovers_the_true_law(injected):
    """The selected law, fitted on the chosen set, recovers the exponent and extrapolates 30x within
    0.5%; fitted on every run (--fit-set all), the same law is pulled off by the injected runs."""
    truth, done, bad, auto, forced = injected
    law = auto["selection"]["loss_law"]
    got = family.entry_chinchilla(auto["entries"][law])
    assert got[3] == pytest.approx(truth[3], abs=0.05)
    c = 30 * done["flops"].max()
    n_t = np.sqrt(c / (6 * 20))
    target = laws.chinchilla_loss((n_t, 20 * n_t), *truth)
    err_auto = abs(laws.chinchilla_loss((n_t, 20 * n_t), *got) / target - 1)
    err_all = abs(laws.chinchilla_loss((n_t, 20 * n_t), *family.entry_chinchilla(forced["entries"][law])) / target - 1)
    assert err_auto < 0.005 and err_all > 2 * err_auto


def test_forcing_a_set_that_does_not_apply_is_a_one_line_error():
    n, d, c = _grid([1e7, 2e7, 4e7, 8e7], [20, 40])
    loss = laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values())
    done = pd.DataFrame({"run": range(len(n)), "params": n, "tokens": d, "flops": c, "loss": loss})
    with pytest.raises(UserError, match="--fit-set drop_smallest: needs runs of >= 5 sizes"):
        loss_laws.choose_fit_set(done, FitOptions(**{**FAST.as_dict(), "fit_set": "drop_smallest"}), None)


def test_the_weighted_candidate_is_forced_only_and_then_weights_every_run():
    runs = synthetic.pathological_runs(synthetic.BENCHMARK_GRIDS["clean"], 0).rename(columns={"run_id": "run"})
    assert "sqrt_compute" not in loss_laws.choose_fit_set(runs, FAST, None)["candidates"]
    forced = loss_laws.choose_fit_set(runs, FitOptions(**{**FAST.as_dict(), "fit_set": "sqrt_compute"}), None)
    weighted = forced["candidates"]["sqrt_compute"]
    assert forced["name"] == "sqrt_compute" and weighted["score"] is not None and weighted["n_left_out"] == 0
    assert weighted["weighting"] == "sqrt_compute"
