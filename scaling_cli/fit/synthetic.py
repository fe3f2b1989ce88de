"""Synthetic runs drawn from known laws plus noise: ground truth for tests and for trying the CLI.

    from scaling_cli.fit.synthetic import isoflop_runs
    isoflop_runs(seed=0).to_csv("synthetic.csv", index=False)
    # scaling-cli fit synthetic.csv

Every generator is deterministic given `seed`, returns a pandas DataFrame in the columns
`scaling-cli fit` reads (params, tokens, flops, loss, ...), and draws multiplicative noise
exp(N(0, noise^2)) on the loss, the noise model the Huber-on-log fit assumes.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit import curve_laws, laws


def _frame(**cols):
    import pandas as pd

    return pd.DataFrame(cols)


def chinchilla_runs(n: int = 400, seed: int = 0, noise: float = 0.01, truth: dict | None = None,
                    params_range=(1e7, 1e10), tokens_range=(1e9, 1e12)):
    """n runs at log-uniform (N, D) with L = E + A/N^alpha + B/D^beta (Epoch's constants by default)."""
    truth = truth or laws.EPOCH_CHINCHILLA
    rng = np.random.default_rng(seed)
    n_arr = np.exp(rng.uniform(*np.log(params_range), n))
    d_arr = np.exp(rng.uniform(*np.log(tokens_range), n))
    loss = laws.chinchilla_loss((n_arr, d_arr), *truth.values()) * np.exp(rng.normal(0, noise, n))
    return _frame(run_id=[f"r{i}" for i in range(n)], params=n_arr, tokens=d_arr,
                  flops=laws.FLOPS_PER_PARAM_TOKEN * n_arr * d_arr, loss=loss)


def isoflop_runs(budgets=(1e17, 3e17, 1e18, 3e18, 1e19), sizes_per_budget: int = 9, seed: int = 0,
                 noise: float = 0.005, truth: dict | None = None, span: float = 8.0):
    """IsoFLOP design: per budget, sizes log-spaced over a factor `span` each side of the true N_opt."""
    truth = truth or laws.EPOCH_CHINCHILLA
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_opt, _ = laws.chinchilla_optimum(c, *truth.values())
        for n in np.geomspace(n_opt / span, n_opt * span, sizes_per_budget):
            d = c / (laws.FLOPS_PER_PARAM_TOKEN * n)
            rows.append((n, d, c))
    n_arr, d_arr, c_arr = (np.array(v) for v in zip(*rows))
    loss = laws.chinchilla_loss((n_arr, d_arr), *truth.values()) * np.exp(rng.normal(0, noise, len(rows)))
    return _frame(run_id=[f"iso{i}" for i in range(len(rows))], params=n_arr, tokens=d_arr, flops=c_arr, loss=loss)


def compute_only_runs(ratios=(20.0, 80.0), sizes=(1e7, 3e7, 1e8, 3e8, 1e9, 3e9), seed: int = 0,
                      noise: float = 0.005, truth: dict | None = None):
    """Runs at fixed D/N ratios with L = E + A C^-alpha per ratio (A grows with over-training)."""
    truth = truth or {"E": 1.9, "A": 40.0, "alpha": 0.08}
    rng = np.random.default_rng(seed)
    rows = []
    for m in ratios:
        a = truth["A"] * (m / ratios[0]) ** 0.1  # over-trained runs sit above the frontier (Gadre et al.)
        for n in sizes:
            c = laws.FLOPS_PER_PARAM_TOKEN * n * n * m
            rows.append((n, n * m, c, laws.compute_loss(c, truth["E"], a, truth["alpha"]), m))
    n_arr, d_arr, c_arr, l_arr, m_arr = (np.array(v) for v in zip(*rows))
    l_arr = l_arr * np.exp(rng.normal(0, noise, len(rows)))
    return _frame(run_id=[f"m{i}" for i in range(len(rows))], params=n_arr, tokens=d_arr, flops=c_arr,
                  loss=l_arr, ratio=m_arr)


def lr_sweep_runs(sizes=(1e7, 3e7, 1e8, 3e8), tokens_per_param=(10.0, 40.0), n_lr: int = 7, seed: int = 0,
                  noise: float = 0.003, curvature: float = 0.08, diverge_above: float = 4.0):
    """LR sweeps per (N, D): L = L_chinchilla + curvature * log(eta/eta_opt)^2, eta_opt from Step Law.

    LRs are log-spaced over x1/8..x8 of the optimum; runs above `diverge_above` x the optimum are
    marked diverged (loss NaN), as a real sweep's largest LRs are.
    """
    rng = np.random.default_rng(seed)
    a, b, c = laws.STEP_LAW["lr"]
    rows = []
    for n in sizes:
        for m in tokens_per_param:
            d = n * m
            eta_opt = a * n**b * d**c
            base = laws.chinchilla_loss((n, d), *laws.EPOCH_CHINCHILLA.values())
            for eta in eta_opt * np.geomspace(1 / 8, 8, n_lr):
                loss = (base + curvature * np.log(eta / eta_opt) ** 2) * np.exp(rng.normal(0, noise))
                status = "diverged" if eta > diverge_above * eta_opt else "done"
                rows.append((n, d, laws.FLOPS_PER_PARAM_TOKEN * n * d, eta, np.nan if status == "diverged" else loss, status))
    n_arr, d_arr, c_arr, lr, loss, status = (np.array(v) for v in zip(*rows))
    return _frame(run_id=[f"lr{i}" for i in range(len(rows))], params=n_arr.astype(float), tokens=d_arr.astype(float),
                  flops=c_arr.astype(float), lr=lr.astype(float), loss=loss.astype(float), status=status)


def schedule_curve(lr: np.ndarray, law: str, params: dict, seed: int = 0, noise: float = 0.02,
                   warmup: int | None = None):
    """Per-step train loss of schedule `lr` under a curve law ('tissue' or 'multi_power') plus noise."""
    rng = np.random.default_rng(seed)
    warmup = curve_laws.detect_warmup(lr) if warmup is None else warmup
    steps = np.arange(1, len(lr) + 1)
    if law == "tissue":
        s1, s2 = curve_laws.tissue_features(lr, warmup)
        clean = curve_laws.tissue_loss((s1, s2), **params)
    else:
        clean = curve_laws.multi_power_loss(curve_laws.mpl_features(lr, steps, warmup), **params)
    return _frame(step=steps, lr=lr, loss=clean + rng.normal(0, noise, len(lr)), clean=clean)


# An over-training law in Gadre et al.'s form with Chinchilla-like constants: alpha = beta = 2 eta
# = 0.34, E = 1.8; compute-optimal M* = (b/a)^(1/(2 eta)) = 3^(1/0.34), about 25 tokens/param.
OVERTRAIN_TRUTH = {"E": 1.8, "a": 420.0 * 6**0.17, "b": 1260.0 * 6**0.17, "eta": 0.17}


def overtrain_runs(sizes=tuple(np.geomspace(1e7, 1.6e8, 5)), multipliers=(5, 10, 20, 40, 80, 160), seed: int = 0,
                   noise: float = 0.005, truth: dict | None = None):
    """Every size at every tokens-per-parameter M = D/N, loss from the over-training law
    L = E + (a M^eta + b M^-eta) C^-eta with C = 6ND (Gadre et al. 2024), plus noise."""
    truth = truth or OVERTRAIN_TRUTH
    rng = np.random.default_rng(seed)
    n_arr, m_arr = (a.ravel() for a in np.meshgrid(np.asarray(sizes, float), np.asarray(multipliers, float)))
    d_arr = n_arr * m_arr
    c_arr = laws.FLOPS_PER_PARAM_TOKEN * n_arr * d_arr
    loss = laws.overtrain_loss((c_arr, m_arr), *truth.values()) * np.exp(rng.normal(0, noise, len(n_arr)))
    return _frame(run_id=[f"ot{i}" for i in range(len(n_arr))], params=n_arr, tokens=d_arr, flops=c_arr,
                  loss=loss, ratio=m_arr)
