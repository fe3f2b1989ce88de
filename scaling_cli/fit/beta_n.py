"""Chinchilla with a data exponent that depends on model size: the `chinchilla_beta_n` loss law.

    L(N, D) = E + A/N^alpha + B (D/D_ref)^(-beta(N)),   beta(N) = beta (N/N_ref)^gamma

(laws.beta_n_loss). Farseer (Li et al. 2025) measured on ~1,000 runs that the data term's exponent
and coefficient both move with N, and that modelling it cut Chinchilla's extrapolation error
several-fold; a proxy sweep of 20-60 runs cannot pin both down, so here only the exponent moves
(one parameter, gamma, beyond Chinchilla's five; gamma = 0 is Chinchilla). N_ref and D_ref are
the geometric means of the fitted runs, which keeps B and gamma from trading off against each
other. The law is a candidate like any other: `fit` backtests it beside the L(N, D) family and
selects it only when it predicts the held-out runs better (fit/selection.py). It has no closed-form
compute-optimal allocation, so allocation questions go to the best member of the family.

Fitting: Huber (delta = robust.HUBER_DELTA) on log L, as for the family, in the log-sum-exp form
log L = LSE(e, a - alpha x1, b - beta exp(gamma x1) x2) with x1, x2 the centred log N, log D,
minimised by scipy L-BFGS-B with the analytic gradient from a few starts seeded by the Chinchilla
point fit (gamma = 0, +-0.05). Intervals: the family's resampling scheme (intervals.resample,
bayes_size by default) and its small-cluster widening, every resample refitted from the point
estimate. Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import family, intervals, laws, robust
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.entries import not_enough, residual_stats, summarize
from scaling_cli.fit.grouping import cluster_log

NAME = "chinchilla_beta_n"
# An exponent that moves with N needs D varied at several sizes: at least this many runs of 4 sizes.
MIN_POINTS, MIN_SIZES = 12, 4
GAMMA_BOUNDS = (-1.0, 1.0)
GAMMA_STARTS = (0.0, -0.05, 0.05)
_BOUNDS = [(None, None), (None, None), robust.EXPONENT_BOUNDS, (None, None), robust.EXPONENT_BOUNDS, GAMMA_BOUNDS]


def _log_terms(theta: np.ndarray, x1: np.ndarray, x2: np.ndarray):
    e, a, alpha, b, beta, gamma = theta
    slope = beta * np.exp(gamma * x1)
    terms = np.stack([np.full_like(x1, e), a - alpha * x1, b - slope * x2])
    top = terms.max(axis=0)
    log_l = top + np.log(np.exp(terms - top).sum(axis=0))
    return log_l, terms, slope


def _objective(theta, x1, x2, y, w):
    """Weighted mean Huber loss of the log residual (scaled by 1/delta^2, as robust.py) and its gradient."""
    delta = robust.HUBER_DELTA
    log_l, terms, slope = _log_terms(theta, x1, x2)
    r = log_l - y
    s = np.exp(terms - log_l)  # softmax weights of the three terms
    psi = np.clip(r, -delta, delta) * w
    jac = np.stack([s[0], s[1], -s[1] * x1, s[2], -s[2] * x2 * np.exp(theta[5] * x1), -s[2] * slope * x1 * x2])
    scale = delta * delta * w.sum()
    return float((robust.huber(r, delta) * w).sum() / scale), jac @ psi / scale


def _minimise(theta0: np.ndarray, x1, x2, y, w) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    try:
        with np.errstate(all="ignore"):
            res = minimize(_objective, theta0, args=(x1, x2, y, w), jac=True, method="L-BFGS-B", bounds=_BOUNDS,
                           options={"maxiter": 500, "gtol": 1e-9, "ftol": 1e-13})
    except (FloatingPointError, ValueError):
        return np.full(6, np.nan), np.inf
    ok = np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    return (res.x, float(res.fun)) if ok else (np.full(6, np.nan), np.inf)


def _starts(chin: np.ndarray, c1: float, c2: float) -> list[np.ndarray]:
    E, A, B, alpha, beta = chin
    a, b = np.log(A) - alpha * c1, np.log(B) - beta * c2  # the Chinchilla terms in centred coordinates
    return [np.array([np.log(E), a, alpha, b, beta, g]) for g in GAMMA_STARTS]


def theta_to_params(theta: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """theta rows (e, a, alpha, b, beta, gamma) -> rows in laws.LAWS[NAME].param_names order."""
    t = np.atleast_2d(theta)
    A = np.exp(t[:, 1] + t[:, 2] * c1)
    return np.stack([np.exp(t[:, 0]), A, t[:, 2], np.exp(t[:, 3]), t[:, 4], t[:, 5],
                     np.full(len(t), np.exp(c1)), np.full(len(t), np.exp(c2))], axis=1)


def fit(params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, options: FitOptions | None = None,
        intervals_: bool = True, groups: ArrayLike | None = None, weights: ArrayLike | None = None,
        chinchilla_start: np.ndarray | None = None) -> dict:
    """The fit.json entry of chinchilla_beta_n ("ok", or "not enough data" with the reason).

    `chinchilla_start`: the (E, A, B, alpha, beta) of a Chinchilla fit to the same points (fitted
    here, without intervals, when not given); `groups`/`weights` as in family.fit_member."""
    options = options or FitOptions()
    law = laws.LAWS[NAME]
    n, d, l = (np.asarray(v, dtype=float) for v in (params, tokens, loss))
    sizes = cluster_log(n)
    if len(l) < MIN_POINTS or len(np.unique(sizes)) < MIN_SIZES:
        return not_enough(NAME, f"{len(l)} points of {len(np.unique(sizes))} sizes; an N-dependent data exponent "
                                f"needs >= {MIN_POINTS} points of >= {MIN_SIZES} sizes")
    w = np.ones(len(l)) if weights is None else np.asarray(weights, dtype=float)
    if chinchilla_start is None:
        x = np.column_stack([np.log(n), np.log(d)])
        starts = family.screened_starts("chinchilla", x, np.log(l), options.grid_size, options.holdout_starts)
        chin = family.fit_member("chinchilla", n, d, l, options, starts=starts, intervals_=False, weights=weights)
        if chin.get("status") != "ok":
            return not_enough(NAME, f"the Chinchilla fit that seeds it failed: {chin.get('reason')}")
        chinchilla_start = family.entry_chinchilla(chin)
    c1, c2 = float(np.mean(np.log(n))), float(np.mean(np.log(d)))
    x1, x2, y = np.log(n) - c1, np.log(d) - c2, np.log(l)
    fits = [_minimise(s, x1, x2, y, w) for s in _starts(np.asarray(chinchilla_start, dtype=float), c1, c2)]
    theta, objective = min(fits, key=lambda f: f[1])
    if not np.isfinite(objective):
        return not_enough(NAME, "every start of the fit failed")
    point = theta_to_params(theta, c1, c2)[0]
    samples = np.empty((0, law.n_params))
    widening = 1.0
    n_failed = 0
    if intervals_ and options.n_boot > 0:
        units = np.arange(len(y)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
        fitted = _log_terms(theta, x1, x2)[0]
        rw, ys = intervals.resample(intervals.DEFAULT_METHOD, y, fitted, sizes, law.n_free, options.n_boot,
                                    options.rng(70), units=units)
        rows = []
        for b in range(options.n_boot):
            wb = w * (1.0 if rw is None else rw[b])
            rows.append(_minimise(theta, x1, x2, y if ys is None else ys[b], wb)[0])
        boot = np.array(rows)
        n_failed = int(np.isnan(boot).any(axis=1).sum())
        samples = theta_to_params(boot, c1, c2)
        widening = intervals.widening(NAME, len(np.unique(sizes)), intervals.DEFAULT_METHOD, options.level)
    p, iv = summarize(law.param_names, point, intervals.stretch_values(samples, point, widening), options.level)
    return {
        "law": NAME, "status": "ok", "form": law.form, "reference": law.reference,
        "inputs": list(law.inputs), "param_names": list(law.param_names), "fixed": list(law.fixed),
        "params": p, "intervals": iv, "samples": samples.tolist(),
        "n_points": int(len(y)), "n_groups": int(len(np.unique(sizes))),
        "optimizer": {"method": "Huber(log L): L-BFGS-B from the Chinchilla fit with gamma in "
                                f"{', '.join(f'{g:g}' for g in GAMMA_STARTS)}",
                      "huber_delta": robust.HUBER_DELTA, "objective": objective,
                      "n_boot": int(options.n_boot if intervals_ else 0), "n_boot_failed": n_failed,
                      "interval_method": intervals.DEFAULT_METHOD if len(samples) else None,
                      "interval_widening": widening},
        "residuals": residual_stats(y, _log_terms(theta, x1, x2)[0]),
        "data_exponent": {"at_smallest_N": float(point[4] * (n.min() / point[6]) ** point[5]),
                          "at_largest_N": float(point[4] * (n.max() / point[6]) ** point[5])},
    }


def entry_loss(entry: dict, params: np.ndarray, tokens: np.ndarray, use_samples: bool = False) -> np.ndarray | None:
    """Loss of a fitted entry at (N, D): the point (shape of the inputs) or one row per sample."""
    law = laws.LAWS[NAME]
    if not use_samples:
        return law.func((params, tokens), *(entry["params"][k] for k in law.param_names))
    s = np.asarray(entry.get("samples", []), dtype=float)
    if s.size == 0:
        return None
    raw = law.func((params[None, :], tokens[None, :]), *(s[:, i:i + 1] for i in range(law.n_params)))
    point = entry_loss(entry, params, tokens)
    return intervals.stretch_values(raw, point, family.entry_widening(entry))


def optimal_ratio(params: dict, flops: float) -> float:
    """Compute-optimal D/N at `flops` (numerically: the law has no closed form), on a grid of N
    over eight decades either side of sqrt(C/120), refined once; NaN when the optimum is at an edge."""
    law = laws.LAWS[NAME]
    theta = [params[k] for k in law.param_names]
    k = laws.FLOPS_PER_PARAM_TOKEN
    center = np.log(np.sqrt(flops / (k * 20.0)))
    grid = center + np.linspace(-8, 8, 801) * np.log(10)
    for _ in range(2):
        n = np.exp(grid)
        with np.errstate(all="ignore"):
            loss = law.func((n, flops / (k * n)), *theta)
        i = int(np.nanargmin(loss)) if np.isfinite(loss).any() else 0
        if i in (0, len(grid) - 1):
            return float("nan")
        grid = np.linspace(grid[i - 1], grid[i + 1], 201)
    n_opt = float(np.exp(grid[100]))
    return flops / (k * n_opt) / n_opt
