"""Synthetic runs drawn from known laws plus noise: ground truth for tests and for trying the CLI.

    from scaling_cli.fit.synthetic import isoflop_runs
    isoflop_runs(seed=0).to_csv("synthetic.csv", index=False)
    # scaling-cli fit synthetic.csv

Every generator is deterministic given `seed`, returns a pandas DataFrame in the columns
`scaling-cli fit` reads (params, tokens, flops, loss, ...), and draws multiplicative noise
exp(N(0, noise^2)) on the loss, the noise model the Huber-on-log fit assumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

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


# --- benchmark grids with the pathologies of real sweeps -------------------------------------


@dataclass(frozen=True)
class GridSpec:
    """A synthetic sweep in the shape of a published design, drawn from a known Chinchilla-form law
    (`truth` = E, A, B, alpha, beta) with what real sweeps add to it:

    - run scatter: log L gets N(0, run_noise^2) per run and N(0, size_noise^2) shared by a size;
    - under-trained short runs: log L + u * (d_u / D) (warmup and schedule still dominate a short run);
    - a capacity deficit of the smallest models: log L + s * (n_s / N) (e.g. embeddings counted as
      capacity they do not give);
    - a sub-power-law regime at small N: the N term times (1 + (n_b / N)^kappa)^(-rho), flatter than
      the power law below n_b;
    - missing cells: each cell dropped with probability `missing`, never one of the largest size.

    Each seed draws the strength of every pathology uniformly in 0..2x its nominal value, so a
    benchmark over seeds sees clean grids and bad ones. The truth at a target is the clean law:
    the pathologies vanish at large N and D, which is what makes them out-of-regime points.
    """

    name: str
    truth: tuple[float, float, float, float, float]
    cells: tuple[tuple[float, float], ...]          # (N, M = D/N)
    run_noise: float = 0.005
    size_noise: float = 0.003
    undertrained: tuple[float, float] = (0.0, 1.0)  # (u, d_u)
    small_n: tuple[float, float] = (0.0, 1.0)       # (s, n_s)
    bend: tuple[float, float, float] = (1.0, 1.0, 0.0)  # (n_b, kappa, rho)
    missing: float = 0.12
    targets: tuple[tuple[float, float], ...] = ()   # named (N, M) targets of the design
    note: str = ""


def _grid_cells(sizes, multipliers, keep=lambda n, m: True) -> tuple[tuple[float, float], ...]:
    return tuple((float(n), float(m)) for n in sizes for m in multipliers if keep(n, m))


def _isoflop_cells(truth, budgets, per_budget: int, span: float) -> tuple[tuple[float, float], ...]:
    cells = []
    for c in budgets:
        n_opt, _ = laws.chinchilla_optimum(c, *truth)
        for n in np.geomspace(n_opt / span, n_opt * span, per_budget):
            cells.append((float(n), float(c / (laws.FLOPS_PER_PARAM_TOKEN * n * n))))
    return tuple(cells)


_EPOCH = tuple(laws.EPOCH_CHINCHILLA.values())
_HOFFMANN = tuple(laws.HOFFMANN_CHINCHILLA.values())
_GADRE_LIKE = laws.overtrain_to_chinchilla(1.8, 420.0 * 6**0.17, 1260.0 * 6**0.17, 0.17)
_GADRE_SIZES = (11e6, 22e6, 41e6, 79e6, 154e6, 411e6)
_GADRE_MS = (5, 10, 20, 40, 80, 160, 320, 640)

BENCHMARK_GRIDS: dict[str, GridSpec] = {g.name: g for g in (
    GridSpec("chinchilla", _EPOCH, _isoflop_cells(_EPOCH, np.geomspace(6e18, 3e21, 9), 8, 6.0),
             run_noise=0.006, size_noise=0.0, undertrained=(0.02, 3e9),
             targets=((70e9, 20), (280e9, 20), (1e12, 20)),
             note="Epoch's refit of Chinchilla as the truth; IsoFLOP design 6e18-3e21 FLOPs, 8 sizes per budget "
                  "over 6x either side of N_opt; mildly under-trained short runs"),
    GridSpec("hoffmann", _HOFFMANN, _isoflop_cells(_HOFFMANN, np.geomspace(6e18, 3e21, 9), 8, 6.0),
             run_noise=0.006, size_noise=0.0, undertrained=(0.02, 3e9),
             targets=((70e9, 20), (280e9, 20), (1e12, 20)),
             note="Hoffmann et al.'s published constants (alpha = 0.34, beta = 0.28: far from alpha = beta) as the "
                  "truth on the same IsoFLOP design: a control for laws and fit sets that assume tied exponents"),
    GridSpec("overtrain", tuple(map(float, _GADRE_LIKE)),
             _grid_cells(_GADRE_SIZES, _GADRE_MS, lambda n, m: not (n >= 154e6 and m > 160) and not (n >= 411e6 and m > 80)),
             undertrained=(0.05, 1e8), small_n=(0.03, 2e7),
             targets=tuple((1.4e9, m) for m in (20, 40, 80, 160, 320, 640)) + ((6.9e9, 20),),
             note="an over-training design in the shape of Gadre et al. 2024 (11M-411M x 5-640 tokens/param, "
                  "fewer multipliers at the largest sizes), alpha = beta = 0.34, E = 1.8; under-trained short "
                  "runs and a capacity deficit at the smallest sizes; targets 1.4B at 20-640 and 6.9B at 20"),
    GridSpec("porian", (2.3, 210.0, 300.0, 0.32, 0.30),
             _grid_cells(np.geomspace(5e6, 9e8, 7), (5, 10, 20, 40, 80)),
             run_noise=0.006, size_noise=0.004, undertrained=(0.03, 1e8), bend=(3e7, 1.0, 0.15),
             targets=((5e9, 20), (1e10, 20), (1e10, 80)),
             note="a Porian et al. 2024-like range (5M-900M, 7 sizes x 5 multipliers), parameters ours; a "
                  "flatter-than-power-law regime below 30M and under-trained short runs"),
    GridSpec("clean", tuple(map(float, _GADRE_LIKE)),
             _grid_cells(_GADRE_SIZES, _GADRE_MS, lambda n, m: not (n >= 154e6 and m > 160) and not (n >= 411e6 and m > 80)),
             targets=tuple((1.4e9, m) for m in (20, 640)) + ((6.9e9, 20),),
             note="the over-training design without pathologies: a control where every run is in the regime"),
)}


def grid_truth(spec: GridSpec, params: ArrayLike, tokens: ArrayLike) -> np.ndarray:
    """The clean law of a benchmark grid at (N, D)."""
    return laws.chinchilla_loss((np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)), *spec.truth)


def pathological_runs(spec: GridSpec, seed: int = 0):
    """One draw of a benchmark grid (see GridSpec): a runs table for `scaling-cli fit`."""
    rng = np.random.default_rng(seed)
    k_under, k_small, k_bend = rng.uniform(0.0, 2.0, 3)
    n = np.array([c[0] for c in spec.cells])
    d = n * np.array([c[1] for c in spec.cells])
    keep = (rng.random(len(n)) >= spec.missing) | np.isclose(n, n.max())
    n, d = n[keep], d[keep]
    E, A, B, alpha, beta = spec.truth
    n_b, kappa, rho = spec.bend
    n_term = A / n**alpha * (1.0 + (n_b / n) ** kappa) ** (-rho * k_bend)
    clean = E + n_term + B / d**beta
    excess = k_under * spec.undertrained[0] * spec.undertrained[1] / d + k_small * spec.small_n[0] * spec.small_n[1] / n
    sizes, inverse = np.unique(n, return_inverse=True)
    offsets = rng.normal(0.0, spec.size_noise, len(sizes))[inverse]
    loss = clean * np.exp(excess + offsets + rng.normal(0.0, spec.run_noise, len(n)))
    return _frame(run_id=[f"{spec.name}{i}" for i in range(len(n))], params=n, tokens=d,
                  flops=laws.FLOPS_PER_PARAM_TOKEN * n * d, loss=loss)
