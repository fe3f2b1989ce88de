"""Law forms, the log-sum-exp objective and the curve-law features against their definitions."""

import numpy as np
import pytest

from scaling_cli.fit import curve_laws, laws, robust


def test_chinchilla_optimum_is_the_isoflop_minimum():
    p = laws.EPOCH_CHINCHILLA
    c = 1e21
    n_opt, d_opt = laws.chinchilla_optimum(c, *p.values())
    assert 6 * n_opt * d_opt == pytest.approx(c)
    ns = np.geomspace(n_opt / 3, n_opt * 3, 2001)
    losses = laws.chinchilla_loss((ns, c / (6 * ns)), *p.values())
    assert ns[np.argmin(losses)] == pytest.approx(n_opt, rel=2e-3)
    # The inverse: the compute-optimal D for N_opt is D_opt.
    assert laws.chinchilla_tokens_for_params(n_opt, *p.values()) == pytest.approx(d_opt, rel=1e-9)


def test_registry_evaluates_every_loss_law_with_dicts_and_samples():
    x = (np.array([1e8, 1e9]), np.array([2e9, 2e10]))
    point = laws.law_value("chinchilla", x, laws.EPOCH_CHINCHILLA)
    samples = np.tile(list(laws.EPOCH_CHINCHILLA.values()), (3, 1))
    rows = laws.law_value("chinchilla", (x[0][:, None], x[1][:, None]), samples)
    np.testing.assert_allclose(rows.T, np.tile(point, (3, 1)))
    assert set(laws.LAWS) >= {"chinchilla", "compute_only", "step_law", "tissue", "multi_power"}


def test_lse_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(15, 20, 50), rng.uniform(20, 25, 50)])
    y = np.log(1.8 + np.exp(6 - 0.35 * x[:, 0]) + np.exp(7.6 - 0.37 * x[:, 1])) + rng.normal(0, 0.01, 50)
    theta = np.array([6.1, 7.5, 0.34, 0.36, 0.6])
    w = rng.integers(0, 3, 50).astype(float)
    value, grad = robust.lse_objective(theta, x, y, weights=w)
    num = np.array([(robust.lse_objective(theta + h, x, y, weights=w)[0]
                     - robust.lse_objective(theta - h, x, y, weights=w)[0]) / 2e-7 for h in np.eye(5) * 1e-7])
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-4)
    bval, bgrad = robust.lse_objective_batch(np.stack([theta, theta + 0.01]), x, y, weights=np.stack([w, w]))
    assert bval[0] == pytest.approx(value)
    np.testing.assert_allclose(bgrad[0], grad, rtol=1e-10)


def test_batched_bfgs_agrees_with_scipy_lbfgs():
    rng = np.random.default_rng(1)
    n, d = np.exp(rng.uniform(16, 21, 120)), np.exp(rng.uniform(20, 26, 120))
    y = np.log(laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values())) + rng.normal(0, 0.01, 120)
    x = np.column_stack([np.log(n), np.log(d)])
    starts = robust.lse_grid(x, y, exponents=(0.2, 0.6), term_fractions=(0.1, 0.5), const_fractions=(0.3, 0.8))
    thetas, objs = robust.batched_bfgs(starts, x, y)
    best_scipy = min(robust.polish(s, x, y)[1] for s in starts)
    assert objs.min() == pytest.approx(best_scipy, rel=1e-6)


def _s2_by_definition(lr, warmup, lam):
    """Double sum of Tissue et al.: S2(s) = sum_{i<=s} sum_{k<=i} (eta_{k-1} - eta_k) lam^(i-k), k > warmup."""
    t = len(lr)
    eta = np.concatenate([[lr[0]], lr])  # eta[k] is step k's LR (1-based)
    out = np.zeros(t)
    start = max(warmup, 1)
    for s in range(1, t + 1):
        out[s - 1] = sum((eta[k - 1] - eta[k]) * lam ** (i - k)
                         for i in range(1, s + 1) for k in range(start + 1, i + 1))
    return out


def test_tissue_s2_recurrence_equals_the_double_sum():
    lr = curve_laws.cosine_schedule(60, 1e-3, warmup=5)
    s1, s2 = curve_laws.tissue_features(lr, warmup=5, lam=0.9)
    np.testing.assert_allclose(s2, _s2_by_definition(lr, 5, 0.9), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(s1, np.cumsum(lr))


def _mpl_by_definition(lr, t, warmup, L0, A, alpha, B, C, beta, gamma):
    """L(t) of Luo et al. written as the paper's sum over k (1-based steps, k after warmup)."""
    eta = lambda k: lr[k - 1]
    start = max(warmup, 1)
    ld = 0.0
    for k in range(start + 1, t + 1):
        s_k = lr[k - 1:t].sum()
        ld += (eta(k - 1) - eta(k)) * (1 - (C * eta(k) ** (-gamma) * s_k + 1) ** (-beta))
    return L0 + A * lr[:t].sum() ** (-alpha) - B * ld


@pytest.mark.parametrize("make", [lambda: curve_laws.cosine_schedule(300, 1e-3, 20),
                                  lambda: curve_laws.wsd_schedule(300, 1e-3, 20, 0.3, final_frac=0.05)])
def test_multi_power_blocks_match_the_definition(make):
    lr = make()
    p = dict(L0=2.5, A=0.5, alpha=0.5, B=300.0, C=2.0, beta=0.5, gamma=0.5)
    steps = np.array([50, 150, 299, 300])
    exact = curve_laws.multi_power_loss(curve_laws.mpl_features(lr, steps, 20, max_blocks=10_000), **p)
    reference = [_mpl_by_definition(lr, t, 20, **p) for t in steps]
    np.testing.assert_allclose(exact, reference, rtol=1e-10)
    coarse = curve_laws.multi_power_loss(curve_laws.mpl_features(lr, steps, 20, max_blocks=40), **p)
    np.testing.assert_allclose(coarse, reference, atol=2e-3)


def test_schedules_and_warmup_detection():
    lr = curve_laws.wsd_schedule(1000, 3e-4, warmup=50, decay_frac=0.2)
    assert curve_laws.detect_warmup(lr) == 50  # steps 1..50 warm up; step 50 holds the peak
    assert lr[799] == pytest.approx(3e-4) and lr[-1] == pytest.approx(0.0, abs=1e-12)
    cos = curve_laws.cosine_schedule(1000, 3e-4, warmup=50, final_frac=0.1)
    assert cos[-1] == pytest.approx(3e-5)
