"""Chinchilla approaches 1 and 2: compute-optimal N and D without a parametric loss law.

- Approach 1 (Hoffmann et al. 2022, section 3.1): the lower envelope of loss against FLOPs over
  all training curves; at each FLOP value the run on the envelope gives N_opt(C) and D_opt(C),
  and power laws N_opt = k C^a, D_opt = k' C^b are fitted to the envelope. With only final
  points per run (a plain table) the envelope is the Pareto front of (FLOPs, loss) over runs.
- Approach 2 (section 3.2): runs are bucketed by compute (IsoFLOP profiles); a parabola of loss
  in log N per bucket locates that budget's minimum; the minima give the power laws.

Both bootstrap over runs for intervals on the exponents, and return "not enough data" with a
reason instead of failing when the runs lack the needed structure. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit.bootstrap import FitOptions, percentile_interval, resample_indices
from scaling_cli.fit.grouping import DEFAULT_REL_TOL, cluster_log
from scaling_cli.fit.parametric import not_enough

# FLOP values at which approach 1 reads the envelope (Hoffmann et al. use 1,500 over their range;
# 200 log-spaced points resolve the winner changes of a proxy sweep).
ENVELOPE_GRID = 200

# Fewest distinct sizes an IsoFLOP bucket needs for a parabola with one residual degree of freedom
# would be 4; 3 determine the parabola exactly, which is the least that locates a minimum.
MIN_SIZES_PER_BUCKET = 3


def _loglog_fit(c: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(coef, exponent) of v = coef * c^exponent by least squares in log space."""
    slope, intercept = np.polyfit(np.log(c), np.log(v), 1)
    return float(np.exp(intercept)), float(slope)


def _power_entry(coefs: np.ndarray, exps: np.ndarray, point: tuple[float, float], level: float) -> dict:
    entry = {"coef": point[0], "exponent": point[1], "coef_interval": [None, None], "exponent_interval": [None, None]}
    ok = np.isfinite(exps)
    if ok.sum() >= 2:
        lo, hi = percentile_interval(np.column_stack([coefs[ok], exps[ok]]), level)
        entry["coef_interval"] = [float(lo[0]), float(hi[0])]
        entry["exponent_interval"] = [float(lo[1]), float(hi[1])]
    return entry


# --- approach 1 ---------------------------------------------------------------------------------

def _envelope_matrix(run, flops, loss, tokens, grid):
    """Per run, loss and tokens interpolated (in log FLOPs) on the grid; inf outside a run's range."""
    labels = np.unique(run)
    lmat = np.full((len(labels), len(grid)), np.inf)
    dmat = np.full((len(labels), len(grid)), np.nan)
    lg = np.log(grid)
    for i, r in enumerate(labels):
        sel = run == r
        order = np.argsort(flops[sel])
        lc, ll, ld = np.log(flops[sel][order]), loss[sel][order], np.log(tokens[sel][order])
        inside = (lg >= lc[0]) & (lg <= lc[-1])
        lmat[i, inside] = np.interp(lg[inside], lc, ll)
        dmat[i, inside] = np.exp(np.interp(lg[inside], lc, ld))
    return labels, lmat, dmat


def approach1(run: ArrayLike, flops: ArrayLike, loss: ArrayLike, params: ArrayLike, tokens: ArrayLike,
              options: FitOptions | None = None) -> dict:
    """Envelope of loss vs FLOPs -> N_opt, D_opt power laws in C. Inputs: one entry per point."""
    options = options or FitOptions()
    run, flops, loss, params, tokens = (np.asarray(v) for v in (run, flops, loss, params, tokens))
    flops, loss, params, tokens = (v.astype(float) for v in (flops, loss, params, tokens))
    labels = np.unique(run)
    final_only = len(labels) == len(run)
    size_of = {r: float(params[run == r][0]) for r in labels}
    if final_only:
        source = "final points (Pareto front of FLOPs vs loss over runs)"
    else:
        source = "training curves"
        c_final = np.array([flops[run == r].max() for r in labels])
        grid = np.geomspace(c_final.min(), c_final.max(), ENVELOPE_GRID) if c_final.max() > c_final.min() else None
        if grid is None:
            return not_enough("approach1", "every run ends at the same FLOPs; the envelope needs a range")
        _, lmat_all, dmat_all = _envelope_matrix(run, flops, loss, tokens, grid)

    def envelope(rows: np.ndarray):
        """(C, N_opt, D_opt, L) on the envelope of the given runs (row indices into labels)."""
        if final_only:
            pts = rows[np.lexsort((loss[rows], flops[rows]))]  # by FLOPs, ties by loss
            best = np.minimum.accumulate(loss[pts])
            front = pts[np.concatenate([[True], loss[pts][1:] < best[:-1]])]
            return flops[front], params[front], tokens[front], loss[front]
        lm, dm = lmat_all[rows], dmat_all[rows]
        win = np.argmin(lm, axis=0)
        ok = np.isfinite(lm[win, np.arange(len(grid))])
        chosen = rows[win[ok]]
        return (grid[ok], np.array([size_of[labels[i]] for i in chosen]), dm[win[ok], np.flatnonzero(ok)],
                lm[win[ok], np.flatnonzero(ok)])

    def fit(rows):
        c, n, d, _ = envelope(rows)
        if len(np.unique(n)) < 3:
            return None
        return (*_loglog_fit(c, n), *_loglog_fit(c, d))

    all_rows = np.arange(len(run)) if final_only else np.arange(len(labels))
    c, n, d, l_env = envelope(all_rows)
    if len(np.unique(n)) < 3:
        return not_enough("approach1", f"the loss envelope passes through {len(np.unique(n))} model size(s); "
                          "it needs at least 3 (runs of several sizes covering overlapping compute)")
    point = fit(all_rows)
    boots = np.full((options.n_boot, 4), np.nan)
    for i, idx in enumerate(resample_indices(len(all_rows), options.n_boot, options.rng(11))):
        res = fit(np.unique(all_rows[idx]))
        if res is not None:
            boots[i] = res
    return {"law": "approach1", "status": "ok", "source": source,
            "form": "N_opt = k C^a, D_opt = k' C^b on the min-loss envelope", "reference": "Hoffmann et al. 2022, approach 1",
            "n_runs": int(len(labels)), "n_sizes_on_envelope": int(len(np.unique(n))),
            "n_opt": _power_entry(boots[:, 0], boots[:, 1], point[:2], options.level),
            "d_opt": _power_entry(boots[:, 2], boots[:, 3], point[2:], options.level),
            "envelope": {"flops": c.tolist(), "params": n.tolist(), "tokens": d.tolist(), "loss": l_env.tolist()}}


# --- approach 2 ---------------------------------------------------------------------------------

def _bucket_minimum(logn: np.ndarray, loss: np.ndarray) -> tuple[float, float, np.ndarray] | str:
    """(log N_opt, L_min, parabola coefs) of one IsoFLOP profile, or the reason there is none."""
    if len(np.unique(logn)) < MIN_SIZES_PER_BUCKET:
        return f"{len(np.unique(logn))} distinct sizes (needs {MIN_SIZES_PER_BUCKET})"
    coefs = np.polyfit(logn, loss, 2)
    if coefs[0] <= 0:
        return "loss is not convex in log N (no minimum)"
    x_star = -coefs[1] / (2 * coefs[0])
    if not logn.min() <= x_star <= logn.max():
        return "the minimum lies outside the sampled sizes"
    return float(x_star), float(np.polyval(coefs, x_star)), coefs


def approach2(flops: ArrayLike, params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, options: FitOptions | None = None,
              rel_tol: float = DEFAULT_REL_TOL) -> dict:
    """IsoFLOP parabolas per compute bucket -> N_opt, D_opt power laws (one entry per run)."""
    options = options or FitOptions()
    flops, params, tokens, loss = (np.asarray(v, dtype=float) for v in (flops, params, tokens, loss))
    labels = cluster_log(flops, rel_tol)
    buckets, skipped = [], []
    for b in np.unique(labels[labels >= 0]):
        sel = np.flatnonzero(labels == b)
        c_b = float(np.exp(np.mean(np.log(flops[sel]))))
        res = _bucket_minimum(np.log(params[sel]), loss[sel])
        if isinstance(res, str):
            skipped.append({"flops": c_b, "n_runs": int(len(sel)), "reason": res})
            continue
        x_star, l_min, coefs = res
        # D_opt from this bucket's own FLOPs-per-(N*D) factor, so that FLOPs counting attention
        # (not exactly 6ND) still give D_opt = C / (factor * N_opt).
        factor = float(np.median(flops[sel] / (params[sel] * tokens[sel])))
        buckets.append({"flops": c_b, "n_runs": int(len(sel)), "params_opt": float(np.exp(x_star)),
                        "tokens_opt": c_b / (factor * float(np.exp(x_star))), "loss_min": l_min,
                        "parabola": coefs.tolist(), "rows": sel, "flops_per_param_token": factor})
    if len(buckets) < 2:
        return not_enough("approach2", f"{len(buckets)} compute bucket(s) with an interior minimum; need >= 2 "
                          "(IsoFLOP design: several sizes at each of several FLOP budgets)") | {"skipped_buckets": skipped}
    c = np.array([b["flops"] for b in buckets])
    n_opt = np.array([b["params_opt"] for b in buckets])
    d_opt = np.array([b["tokens_opt"] for b in buckets])
    point = (*_loglog_fit(c, n_opt), *_loglog_fit(c, d_opt))
    rng = options.rng(12)
    boots = np.full((options.n_boot, 4), np.nan)
    for i in range(options.n_boot):
        cs, ns, ds = [], [], []
        for b in buckets:  # resample runs within each bucket (stratified by budget)
            rows = b["rows"][rng.integers(0, len(b["rows"]), len(b["rows"]))]
            res = _bucket_minimum(np.log(params[rows]), loss[rows])
            if not isinstance(res, str):
                cs.append(b["flops"])
                ns.append(np.exp(res[0]))
                ds.append(b["flops"] / (b["flops_per_param_token"] * np.exp(res[0])))
        if len(cs) >= 2 and len(set(cs)) >= 2:
            boots[i] = (*_loglog_fit(np.array(cs), np.array(ns)), *_loglog_fit(np.array(cs), np.array(ds)))
    for b in buckets:  # keep the profile itself (for plots), not indices into this call's arrays
        rows = b.pop("rows")
        b["points"] = {"params": params[rows].tolist(), "loss": loss[rows].tolist()}
    return {"law": "approach2", "status": "ok", "form": "per-budget parabola of L in log N; N_opt = k C^a, D_opt = k' C^b",
            "reference": "Hoffmann et al. 2022, approach 2 (IsoFLOP)", "bucket_rel_tol": rel_tol,
            "n_buckets": len(buckets), "buckets": buckets, "skipped_buckets": skipped,
            "n_opt": _power_entry(boots[:, 0], boots[:, 1], point[:2], options.level),
            "d_opt": _power_entry(boots[:, 2], boots[:, 3], point[2:], options.level)}
