"""Parametric loss laws fitted to final losses: Chinchilla approach 3 and the compute-only law.

- `fit_chinchilla`: L(N, D) = E + A/N^alpha + B/D^beta by Huber on log L from a 4^5 grid of
  starts with L-BFGS, then a bootstrap over runs (Hoffmann et al. 2022; Besiroglu et al. 2024).
  Derived: compute-optimal exponents a = beta/(alpha+beta) (N_opt ∝ C^a), b = alpha/(alpha+beta).
- `fit_compute_only`: L(C) = E + A C^-alpha per group of runs sharing M = D/N (Gadre et al. 2024,
  over-training: at fixed M the reducible loss is a power law in compute).

Both return JSON-ready dicts (the entries of fit.json's "laws"), including the bootstrap samples
that `scaling_cli.predict` turns into intervals at any target. Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import laws, robust
from scaling_cli.fit.bootstrap import FitOptions, cluster_weights, percentile_interval
from scaling_cli.fit.grouping import DEFAULT_REL_TOL, cluster_log, group_centers


# Compute-only groups (runs sharing M = D/N): at most this many are fitted, each needing >= 5 runs
# at >= 4 distinct compute values spanning >= 10x, so the power law in C is actually constrained.
MAX_RATIO_GROUPS = 8
MIN_COMPUTE_SPAN = 10.0


def not_enough(law: str, reason: str) -> dict:
    """The entry of a law that could not be fitted; every reader checks `status` first."""
    return {"law": law, "status": "not enough data", "reason": reason}


def _grid(x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    if size == 4:
        return robust.lse_grid(x, y)
    return robust.lse_grid(x, y, exponents=tuple(np.linspace(0.1, 1.0, size)),
                           term_fractions=tuple(np.geomspace(0.05, 0.9, size)),
                           const_fractions=tuple(np.linspace(0.2, 0.95, size)))


def screened_starts(x: np.ndarray, y: np.ndarray, size: int, keep: int) -> np.ndarray:
    """The `keep` grid points with the lowest initial objective (cheap refits, e.g. held-out)."""
    grid = _grid(x, y, size)
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.array([robust.lse_objective(t, x, y)[0] for t in grid])
    values[~np.isfinite(values)] = np.inf
    return grid[np.argsort(values)[:keep]]


def _bootstrap_thetas(x, y, fit: robust.LseFit, groups, options: FitOptions, salt: int,
                      point_weights: np.ndarray | None = None) -> np.ndarray:
    """Refit each resample from the best full-data optimum and the next distinct optima."""
    if options.n_boot == 0:
        return np.empty((0, x.shape[1] * 2 + 1))
    weights = cluster_weights(groups, options.n_boot, options.rng(salt))
    if point_weights is not None:
        weights = weights * point_weights[None, :]
    return robust.refit_many(fit.optima[: options.boot_starts], x, y, weights)


def _summary(names, point: np.ndarray, samples: np.ndarray, level: float) -> tuple[dict, dict]:
    params = {n: float(v) for n, v in zip(names, point)}
    if samples.shape[0] == 0 or not np.isfinite(samples).any():
        return params, {n: [None, None] for n in names}
    lo, hi = percentile_interval(samples, level)
    return params, {n: [float(a), float(b)] for n, a, b in zip(names, lo, hi)}


def _residuals(y: np.ndarray, pred_log: np.ndarray) -> dict:
    r = y - pred_log
    rel = np.expm1(-r)  # (pred - obs)/obs in loss units
    return {"rmse_log": float(np.sqrt(np.mean(r * r))),
            "rmse": float(np.sqrt(np.mean((np.exp(pred_log) - np.exp(y)) ** 2))),
            "mean_abs_rel_error": float(np.mean(np.abs(rel)))}


def chinchilla_theta_to_params(theta: np.ndarray) -> np.ndarray:
    """(a, b, alpha, beta, e) in LSE order -> (E, A, B, alpha, beta); works on rows of samples."""
    t = np.atleast_2d(theta)
    return np.stack([np.exp(t[:, 4]), np.exp(t[:, 0]), np.exp(t[:, 1]), t[:, 2], t[:, 3]], axis=1)


def fit_chinchilla(params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, options: FitOptions | None = None,
                   groups: ArrayLike | None = None, starts: np.ndarray | None = None,
                   weights: ArrayLike | None = None) -> dict:
    """Chinchilla approach 3 with Epoch's recipe; `groups` labels runs for the bootstrap.

    `starts` overrides the grid (the held-out refit passes a screened subset). `weights` weight
    each point's Huber loss (curve-derived points count less than measured ones; fit/curve_points.py).
    """
    options = options or FitOptions()
    n_arr, d_arr, l_arr = (np.asarray(v, dtype=float) for v in (params, tokens, loss))
    law = laws.LAWS["chinchilla"]
    if len(l_arr) < law.n_params:
        return not_enough("chinchilla", f"{len(l_arr)} points for {law.n_params} parameters")
    if len(np.unique(n_arr)) < 2 or len(np.unique(d_arr)) < 2:
        return not_enough("chinchilla", "params and tokens must each take at least 2 distinct values")
    x = np.column_stack([np.log(n_arr), np.log(d_arr)])
    y = np.log(l_arr)
    grid = _grid(x, y, options.grid_size) if starts is None else starts
    w = None if weights is None else np.asarray(weights, dtype=float)
    fit = robust.fit_lse(x, y, grid, weights=w)
    point = chinchilla_theta_to_params(fit.theta)[0]
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    boot = _bootstrap_thetas(x, y, fit, groups, options, salt=1, point_weights=w)
    samples = chinchilla_theta_to_params(boot) if len(boot) else np.empty((0, 5))
    p, intervals = _summary(law.param_names, point, samples, options.level)
    entry = {
        "law": "chinchilla", "status": "ok", "form": law.form, "reference": law.reference,
        "inputs": list(law.inputs), "param_names": list(law.param_names),
        "params": p, "intervals": intervals, "samples": samples.tolist(),
        "n_points": int(len(y)), "n_groups": int(len(np.unique(groups))),
        "optimizer": {"method": "Huber(log L): batched BFGS from every start, best polished by L-BFGS-B",
                      "huber_delta": robust.HUBER_DELTA,
                      "n_starts": fit.n_starts, "n_failed": fit.n_failed, "objective": fit.objective,
                      "n_boot": int(options.n_boot),
                      "n_boot_failed": int(np.isnan(samples).any(axis=1).sum()) if len(samples) else 0},
        "residuals": _residuals(y, robust.lse_predict(fit.theta, x)),
        "reference_params": dict(laws.EPOCH_CHINCHILLA),
    }
    entry["derived"] = chinchilla_derived(point, samples, options.level)
    return entry


def chinchilla_derived(point: np.ndarray, samples: np.ndarray, level: float) -> dict:
    """Compute-optimal exponents and the constant G, with bootstrap intervals."""
    def derive(p):
        p = np.atleast_2d(p)
        E, A, B, alpha, beta = p.T
        with np.errstate(all="ignore"):
            g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
        return np.stack([beta / (alpha + beta), alpha / (alpha + beta), g], axis=1)

    names = ("n_opt_exponent", "d_opt_exponent", "G")
    vals, intervals = _summary(names, derive(point)[0], derive(samples) if len(samples) else np.empty((0, 3)), level)
    vals["formula"] = "N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = C/(6 N_opt), G = (alpha A/(beta B))^(1/(alpha+beta))"
    return {"values": vals, "intervals": intervals}


def fit_compute_only(flops: ArrayLike, tokens: ArrayLike, params: ArrayLike, loss: ArrayLike,
                     options: FitOptions | None = None, groups: ArrayLike | None = None,
                     rel_tol: float = DEFAULT_REL_TOL) -> dict:
    """L(C) = E + A C^-alpha per group of M = D/N (Gadre et al. 2024); groups with < 4 points skipped."""
    options = options or FitOptions()
    c_arr, d_arr, n_arr, l_arr = (np.asarray(v, dtype=float) for v in (flops, tokens, params, loss))
    run_groups = np.arange(len(l_arr)) if groups is None else np.asarray(groups)
    ratio = d_arr / n_arr
    labels = cluster_log(ratio, rel_tol)
    centers = group_centers(ratio, labels)
    law = laws.LAWS["compute_only"]
    fits, skipped = [], []
    # Largest groups first; at most MAX_RATIO_GROUPS are fitted (Gadre et al. use 8 values of M).
    for g, m_center in sorted(centers.items(), key=lambda kv: -int((labels == kv[0]).sum())):
        sel = labels == g
        c_sel = c_arr[sel]
        if (sel.sum() < law.n_params + 2 or len(np.unique(cluster_log(c_sel))) < law.n_params + 1
                or c_sel.max() < MIN_COMPUTE_SPAN * c_sel.min() or len(fits) >= MAX_RATIO_GROUPS):
            skipped.append({"M": m_center, "n_points": int(sel.sum())})
            continue
        x = np.log(c_arr[sel])[:, None]
        y = np.log(l_arr[sel])
        fit = robust.fit_lse(x, y, _grid(x, y, options.grid_size))
        to_params = lambda t: np.stack([np.exp(np.atleast_2d(t)[:, 2]), np.exp(np.atleast_2d(t)[:, 0]),
                                        np.atleast_2d(t)[:, 1]], axis=1)
        boot = _bootstrap_thetas(x, y, fit, run_groups[sel], options, salt=100 + g)
        samples = to_params(boot) if len(boot) else np.empty((0, 3))
        p, intervals = _summary(law.param_names, to_params(fit.theta)[0], samples, options.level)
        fits.append({"M": m_center, "M_range": [float(ratio[sel].min()), float(ratio[sel].max())],
                     "n_points": int(sel.sum()), "params": p, "intervals": intervals,
                     "samples": samples.tolist(), "residuals": _residuals(y, robust.lse_predict(fit.theta, x)),
                     "flops_range": [float(c_arr[sel].min()), float(c_arr[sel].max())]})
    if not fits:
        return not_enough("compute_only", f"no group of runs sharing M = D/N (within {rel_tol:.0%}) has "
                          f">= {law.n_params + 2} runs at >= {law.n_params + 1} compute values spanning "
                          f">= {MIN_COMPUTE_SPAN:g}x")
    return {"law": "compute_only", "status": "ok", "form": law.form, "reference": law.reference,
            "inputs": list(law.inputs), "param_names": list(law.param_names), "group_rel_tol": rel_tol,
            "groups": fits, "skipped_groups": skipped}


def compute_only_group(entry: dict, params: float, tokens: float) -> dict | None:
    """The fitted M-group of a compute_only entry that matches D/N, or None (no extrapolation in M)."""
    from scaling_cli.fit.grouping import nearest_group

    centers = {i: g["M"] for i, g in enumerate(entry["groups"])}
    i = nearest_group(tokens / params, centers, entry.get("group_rel_tol", DEFAULT_REL_TOL))
    return None if i is None else entry["groups"][i]


def entry_loss(entry: dict, params: ArrayLike, tokens: ArrayLike, flops: ArrayLike,
               use_samples: bool = False) -> np.ndarray | None:
    """Loss predicted by a fitted loss-law entry ('chinchilla' or 'compute_only').

    Point predictions have the shape of the inputs; with use_samples, one row per bootstrap sample
    (shape (n_boot, n)). compute_only needs every target's M = D/N to match one fitted group; None
    otherwise.
    """
    params, tokens, flops = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (params, tokens, flops))
    if entry.get("status") != "ok":
        return None
    if entry["law"] == "chinchilla":
        if use_samples:
            s = np.asarray(entry["samples"], dtype=float)
            if s.size == 0:
                return None
            return laws.chinchilla_loss((params[None, :], tokens[None, :]), *(s[:, i:i + 1] for i in range(5)))
        p = entry["params"]
        return laws.chinchilla_loss((params, tokens), p["E"], p["A"], p["B"], p["alpha"], p["beta"])
    out = []
    for n, d, c in zip(params, tokens, flops):
        group = compute_only_group(entry, n, d)
        if group is None:
            return None
        if use_samples:
            s = np.asarray(group["samples"], dtype=float)
            if s.size == 0:
                return None
            out.append(laws.compute_loss(c, s[:, 0], s[:, 1], s[:, 2]))
        else:
            p = group["params"]
            out.append(laws.compute_loss(c, p["E"], p["A"], p["alpha"]))
    return np.stack(out, axis=-1)


def entry_rmse_log(entry: dict, params: float, tokens: float) -> float | None:
    """Residual scatter (RMSE of log loss) of the fit used at this target, for prediction intervals."""
    if entry.get("status") != "ok":
        return None
    if entry["law"] == "chinchilla":
        return entry["residuals"]["rmse_log"]
    group = compute_only_group(entry, params, tokens)
    return None if group is None else group["residuals"]["rmse_log"]
