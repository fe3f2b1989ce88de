"""Parametric loss laws fitted to final losses: Chinchilla approach 3 and the compute-only law.

- `fit_chinchilla`: L(N, D) = E + A/N^alpha + B/D^beta by Huber on log L from a 4^5 grid of
  starts with L-BFGS, then a bootstrap (Hoffmann et al. 2022; Besiroglu et al. 2024). It and its
  constrained siblings (the over-training law, fixed E) live in family.py; this module keeps the
  entry point and evaluates any loss-law entry (`entry_loss`).
  Derived: compute-optimal exponents a = beta/(alpha+beta) (N_opt ∝ C^a), b = alpha/(alpha+beta).
- `fit_compute_only`: L(C) = E + A C^-alpha per group of runs sharing M = D/N (Gadre et al. 2024,
  over-training: at fixed M the reducible loss is a power law in compute).

Both return JSON-ready dicts (the entries of fit.json's "laws"), including the bootstrap samples
that `scaling_cli.predict` turns into intervals at any target. Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import beta_n, family, intervals, laws, robust
from scaling_cli.fit.bootstrap import FitOptions, cluster_weights
from scaling_cli.fit.entries import not_enough, residual_stats, summarize
from scaling_cli.fit.grouping import DEFAULT_REL_TOL, cluster_log, group_centers

__all__ = ["not_enough", "fit_chinchilla", "fit_compute_only", "entry_loss", "entry_rmse_log"]


# Compute-only groups (runs sharing M = D/N): at most this many are fitted, each needing >= 5 runs
# at >= 4 distinct compute values spanning >= 10x, so the power law in C is actually constrained.
MAX_RATIO_GROUPS = 8
MIN_COMPUTE_SPAN = 10.0


def fit_chinchilla(params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, options: FitOptions | None = None,
                   groups: ArrayLike | None = None, starts: np.ndarray | None = None,
                   weights: ArrayLike | None = None) -> dict:
    """Chinchilla approach 3 with Epoch's recipe (family.fit_member("chinchilla")).

    `groups` labels points the bootstrap moves together; `starts` overrides the grid (backtests
    pass a screened subset); `weights` weight each point's Huber loss.
    """
    return family.fit_member("chinchilla", params, tokens, loss, options, starts=starts, groups=groups, weights=weights)


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
        fit = robust.fit_lse(x, y, family.grid(x, y, options.grid_size))
        to_params = lambda t: np.stack([np.exp(np.atleast_2d(t)[:, 2]), np.exp(np.atleast_2d(t)[:, 0]),
                                        np.atleast_2d(t)[:, 1]], axis=1)
        boot = (robust.refit_many(fit.optima[: options.boot_starts], x, y,
                                  cluster_weights(run_groups[sel], options.n_boot, options.rng(100 + g)))
                if options.n_boot else np.empty((0, 3)))
        samples = to_params(boot) if len(boot) else np.empty((0, 3))
        p, intervals = summarize(law.param_names, to_params(fit.theta)[0], samples, options.level)
        fits.append({"M": m_center, "M_range": [float(ratio[sel].min()), float(ratio[sel].max())],
                     "n_points": int(sel.sum()), "params": p, "intervals": intervals,
                     "samples": samples.tolist(), "residuals": residual_stats(y, robust.lse_predict(fit.theta, x)),
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
    """Loss predicted by a fitted loss-law entry (a member of the L(N, D) family or 'compute_only').

    Point predictions have the shape of the inputs; with use_samples, one row per bootstrap sample
    (shape (n_boot, n)). compute_only needs every target's M = D/N to match one fitted group; None
    otherwise. The family members answer in their Chinchilla form (family.entry_chinchilla).
    """
    params, tokens, flops = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (params, tokens, flops))
    if entry.get("status") != "ok":
        return None
    if entry["law"] in family.MEMBERS:
        chin = family.entry_chinchilla(entry, use_samples)
        if chin is None:
            return None
        if use_samples:  # widened around the point prediction (intervals.stretch_values)
            raw = laws.chinchilla_loss((params[None, :], tokens[None, :]), *(chin[:, i:i + 1] for i in range(5)))
            point = laws.chinchilla_loss((params, tokens), *family.entry_chinchilla(entry))
            return intervals.stretch_values(raw, point, family.entry_widening(entry))
        return laws.chinchilla_loss((params, tokens), *chin)
    if entry["law"] == beta_n.NAME:
        return beta_n.entry_loss(entry, params, tokens, use_samples)
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
    if entry["law"] in family.MEMBERS or entry["law"] == beta_n.NAME:
        return entry["residuals"]["rmse_log"]
    group = compute_only_group(entry, params, tokens)
    return None if group is None else group["residuals"]["rmse_log"]
