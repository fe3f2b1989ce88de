"""Chinchilla approaches 1 (envelope) and 2 (IsoFLOP) recover the compute-optimal exponent."""

import numpy as np
import pytest

from scaling_cli.fit import approaches, laws, synthetic
from scaling_cli.fit.bootstrap import FitOptions

EPOCH = laws.EPOCH_CHINCHILLA
A_TRUE = EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"])  # N_opt ∝ C^a, a = 0.5126


def test_approach2_isoflop_exponents_within_bootstrap_interval():
    iso = synthetic.isoflop_runs(seed=0)
    entry = approaches.approach2(iso["flops"], iso["params"], iso["tokens"], iso["loss"], FitOptions(n_boot=200))
    assert entry["status"] == "ok" and entry["n_buckets"] == 5
    lo, hi = entry["n_opt"]["exponent_interval"]
    assert lo <= A_TRUE <= hi
    assert entry["n_opt"]["exponent"] == pytest.approx(A_TRUE, abs=0.015)
    # C = 6 N D in this design, so D_opt's exponent is 1 - a.
    assert entry["d_opt"]["exponent"] == pytest.approx(1 - entry["n_opt"]["exponent"], abs=1e-9)
    # Every bucket minimum sits near the true N_opt of its budget (within one grid step, x1.7).
    for b in entry["buckets"]:
        n_true, _ = laws.chinchilla_optimum(b["flops"], *EPOCH.values())
        assert abs(np.log(b["params_opt"] / n_true)) < np.log(1.7)


def _chinchilla_curves(seed=0):
    """Training curves of 10 sizes, each point a loss from the Chinchilla law at that many tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(np.geomspace(1e7, 1e10, 10)):
        d = np.geomspace(1e8, 40 * n, 60)
        loss = laws.chinchilla_loss((n, d), *EPOCH.values()) * np.exp(rng.normal(0, 0.003, len(d)))
        rows += [(f"s{i}", 6 * n * dd, ll, n, dd) for dd, ll in zip(d, loss)]
    run, c, l, n, d = (np.array(v) for v in zip(*rows))
    return run, c.astype(float), l.astype(float), n.astype(float), d.astype(float)


def test_approach1_envelope_of_curves_recovers_exponent():
    entry = approaches.approach1(*_chinchilla_curves(), options=FitOptions(n_boot=100))
    assert entry["status"] == "ok" and entry["source"] == "training curves"
    lo, hi = entry["n_opt"]["exponent_interval"]
    assert lo <= A_TRUE <= hi
    assert entry["n_opt"]["exponent"] == pytest.approx(A_TRUE, abs=0.04)
    assert entry["n_sizes_on_envelope"] >= 8


def test_approach1_from_final_points_uses_the_pareto_front():
    iso = synthetic.isoflop_runs(seed=0)
    entry = approaches.approach1(iso["run_id"], iso["flops"], iso["loss"], iso["params"], iso["tokens"],
                                 FitOptions(n_boot=50))
    assert entry["status"] == "ok" and entry["source"].startswith("final points")
    env = entry["envelope"]
    assert np.all(np.diff(env["loss"]) < 0) and np.all(np.diff(env["flops"]) > 0)


def test_approaches_degrade_gracefully():
    iso = synthetic.isoflop_runs(budgets=(1e18,), seed=0)
    a2 = approaches.approach2(iso["flops"], iso["params"], iso["tokens"], iso["loss"], FitOptions(n_boot=10))
    assert a2["status"] == "not enough data" and "bucket" in a2["reason"]
    run, c, l, n, d = _chinchilla_curves()
    one = run == "s3"
    a1 = approaches.approach1(run[one], c[one], l[one], n[one], d[one], FitOptions(n_boot=10))
    assert a1["status"] == "not enough data"
    # Sizes whose minimum lies outside the swept range are skipped with a reason, not fitted.
    edge = synthetic.isoflop_runs(budgets=(1e18, 1e19), span=8.0)
    edge = edge[edge["params"] > laws.chinchilla_optimum(edge["flops"], *EPOCH.values())[0] * 1.1]
    a2 = approaches.approach2(edge["flops"], edge["params"], edge["tokens"], edge["loss"], FitOptions(n_boot=10))
    assert a2["status"] == "not enough data"
    assert all("outside" in s["reason"] or "convex" in s["reason"] for s in a2["skipped_buckets"])
