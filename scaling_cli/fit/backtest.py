"""Backtests: hide the runs a law would have to extrapolate to, refit, and measure the miss.

Two held-out sets, each scored separately for every loss law:

- largest_size: every run of the largest model size (sizes grouped within 10%);
- largest_compute: the runs of the top compute buckets (FLOPs grouped within 10%).

Either takes as many top groups as it needs to hold out >= max(2, 10%) of the runs, never more
than a third (a sweep of 4-8 sizes holds out exactly its largest size; a scattered IsoFLOP design,
where every size is its own group, its few largest).

Each law is refitted on the rest exactly as `fit` fits it (same grid, screened to the best
`holdout_starts` starts; the fixed-E members re-run their E profile inside the training runs) and
scored on the held-out runs: mean |relative error| of the loss, RMSE of log loss, the signed bias
(mean relative error; > 0: the law predicts too high), the worst miss, and the share of held-out
runs it could predict at all (compute_only abstains at an unfitted D/N). With intervals on
(`scaling-cli backtest`, not `fit`), the refit also bootstraps and the held-out runs are checked
against its prediction intervals (share inside: the interval coverage).

Derived points (fit/curve_points.py: annealed-equivalent points read off each run's curve) join
the training side only: each belongs to the run it was derived from and is held out with it, so a
held-out run never leaks into its own refit; the held-out runs are scored on their final losses.

Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import beta_n, family, parametric
from scaling_cli.fit.bootstrap import FitOptions, finite_interval, scatter_draws
from scaling_cli.fit.entries import not_enough
from scaling_cli.fit.fitset import FitSet
from scaling_cli.fit.grouping import cluster_log, top_groups

LOSS_LAWS = family.MEMBERS + (beta_n.NAME, "compute_only")
HOLDOUTS = ("largest_size", "largest_compute")
# A third, longer hold-out that calibrates intervals (calibration.py) but does not select laws.
TWO_SIZES = "largest_two_sizes"
LABELS = {"largest_size": "largest model size", "largest_compute": "largest compute",
          TWO_SIZES: "two largest model sizes"}
# Sizes the two-sizes hold-out needs, so its refits still train on three.
TWO_SIZES_MIN = 5
MIN_SIZES = 3
# Share of the runs a hold-out aims for (at least 2 runs), and its ceiling.
HOLDOUT_SHARE, HOLDOUT_MAX_SHARE = 0.10, 1 / 3
# Residual draws per bootstrap sample for the prediction intervals of held-out runs.
PI_DRAWS = 20


@dataclass(frozen=True)
class DerivedPoints:
    """Extra (N, D, C, L) points for the L(N, D) laws, each weighted and owned by one final run
    (`owner`: its index in the final arrays), with which the bootstrap and the hold-outs move it."""

    params: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    weight: np.ndarray
    owner: np.ndarray

    def __len__(self) -> int:
        return len(self.loss)


def training_set(n, d, c, loss, keep: np.ndarray, extra: DerivedPoints | None):
    """(n, d, c, loss, groups, weights) of the kept final runs plus the derived points they own;
    groups label each point's run (bootstrap unit), weights are None when there is nothing derived."""
    idx = np.flatnonzero(keep)
    if extra is None or len(extra) == 0:
        return n[idx], d[idx], c[idx], loss[idx], idx, None
    mine = keep[extra.owner]
    cat = lambda a, b: np.concatenate([a[idx], b[mine]])  # noqa: E731
    weights = np.concatenate([np.ones(len(idx)), extra.weight[mine]])
    return (cat(n, extra.params), cat(d, extra.tokens), cat(c, extra.flops), cat(loss, extra.loss),
            np.concatenate([idx, extra.owner[mine]]), weights)


def set_weights(train: tuple, fit_set) -> np.ndarray | None:
    """Point weights of a training set (training_set's output): the derived points' own weights
    times the fit set's weighting of every point by its compute (None when both are uniform)."""
    own = train[5]
    extra = None if fit_set is None else fit_set.weights(train[2])
    if extra is None:
        return own
    return extra if own is None else own * extra


def largest_size_mask(params: ArrayLike) -> np.ndarray:
    """True for the runs of the largest model size (more sizes when it has < max(2, 10%) of the
    runs, as in a scattered IsoFLOP design)."""
    return top_groups(params, HOLDOUT_SHARE, HOLDOUT_MAX_SHARE)


def holdout_mask(holdout: str, params: ArrayLike, flops: ArrayLike) -> np.ndarray:
    """The held-out runs of a hold-out (HOLDOUTS, or TWO_SIZES: every run of the two largest sizes)."""
    if holdout == "largest_size":
        return largest_size_mask(params)
    if holdout == "largest_compute":
        return largest_compute_mask(flops)
    if holdout == TWO_SIZES:
        labels = cluster_log(params)
        return labels >= labels.max() - 1
    raise ValueError(f"unknown hold-out {holdout!r}")


def subset_derived(extra: DerivedPoints | None, keep: np.ndarray) -> DerivedPoints | None:
    """The derived points of the kept final runs, their owners renumbered to positions among them."""
    if extra is None or len(extra) == 0:
        return extra
    position = np.cumsum(keep) - 1
    mine = keep[extra.owner]
    return DerivedPoints(extra.params[mine], extra.tokens[mine], extra.flops[mine], extra.loss[mine],
                         extra.weight[mine], position[extra.owner[mine]])


def largest_compute_mask(flops: ArrayLike) -> np.ndarray:
    """True for the runs of the top compute buckets."""
    return top_groups(flops, HOLDOUT_SHARE, HOLDOUT_MAX_SHARE)


def refit(name: str, n, d, c, loss, options: FitOptions, intervals: bool = False,
          groups: np.ndarray | None = None, weights: np.ndarray | None = None,
          chinchilla: dict | None = None) -> dict:
    """`name` fitted to these points as `fit` would, without (or with) its bootstrap. `chinchilla`:
    the Chinchilla refit of the same points, which seeds chinchilla_beta_n (refitted when absent)."""
    if name == "compute_only":
        quick = options if intervals else FitOptions(**{**options.as_dict(), "n_boot": 0})
        return parametric.fit_compute_only(c, d, n, loss, quick)
    law_free = family.laws.LAWS[name].n_free
    if name == beta_n.NAME:
        start = family.entry_chinchilla(chinchilla) if chinchilla and chinchilla.get("status") == "ok" else None
        return beta_n.fit(n, d, loss, options, intervals_=intervals, groups=groups, weights=weights,
                          chinchilla_start=start)
    if len(loss) < law_free + 1:
        return not_enough(name, f"{len(loss)} training points for {law_free} free parameters")
    x, y = np.column_stack([np.log(n), np.log(d)]), np.log(loss)
    starts = family.screened_starts(name, x, y, options.grid_size, options.holdout_starts)
    return family.fit_member(name, n, d, loss, options, starts=starts, intervals_=intervals, groups=groups,
                             weights=weights)


def _prediction_interval(entry: dict, n, d, c, level: float, rng: np.random.Generator) -> np.ndarray:
    """(n_test, 2) prediction intervals (bootstrap samples x residual scatter); NaN where none."""
    out = np.full((len(n), 2), np.nan)
    with np.errstate(all="ignore"):
        samples = parametric.entry_loss(entry, n, d, c, use_samples=True)
    if samples is None:
        return out
    for j in range(len(n)):
        s = samples[:, j]
        s = s[np.isfinite(s)]
        sigma = parametric.entry_rmse_log(entry, n[j], d[j]) or 0.0
        if len(s) >= 2:
            out[j] = finite_interval(scatter_draws(s, sigma, PI_DRAWS, rng), level)
    return out


def score(entry: dict, n, d, c, observed, level: float, rng: np.random.Generator | None = None) -> dict:
    """Held-out errors of a refitted law (and interval coverage when it has bootstrap samples)."""
    if entry.get("status") != "ok":
        return {"status": entry.get("status"), "reason": entry.get("reason")}
    pred = np.array([np.nan if (p := parametric.entry_loss(entry, n[i], d[i], c[i])) is None else float(np.ravel(p)[0])
                     for i in range(len(n))])
    ok = np.isfinite(pred)
    out = {"status": "ok", "coverage": float(ok.mean()), "predicted": pred.tolist()}
    if ok.any():
        rel = pred[ok] / observed[ok] - 1.0
        r = np.log(pred[ok]) - np.log(observed[ok])
        out |= {"mean_abs_rel_error": float(np.mean(np.abs(rel))), "rmse_log": float(np.sqrt(np.mean(r * r))),
                "mean_rel_error": float(np.mean(rel)), "max_abs_rel_error": float(np.max(np.abs(rel)))}
    if rng is not None and (entry.get("samples") or entry.get("groups")):
        pi = _prediction_interval(entry, n, d, c, level, rng)
        has = np.isfinite(pi).all(axis=1)
        if has.any():
            inside = (pi[has, 0] <= observed[has]) & (observed[has] <= pi[has, 1])
            out |= {"interval_coverage": float(inside.mean()), "interval_level": level,
                    "intervals": pi.tolist()}
    return out


def backtest(params: ArrayLike, tokens: ArrayLike, flops: ArrayLike, loss: ArrayLike, options: FitOptions | None = None,
             laws: tuple[str, ...] = LOSS_LAWS, intervals: bool = False,
             holdouts: tuple[str, ...] = HOLDOUTS, extra: DerivedPoints | None = None,
             fit_set: FitSet | None = None) -> dict:
    """{holdout: {what was held out, extrapolation factor, scores per law}} for both hold-outs.

    `extra`: derived points the L(N, D) laws also train on (compute_only uses final losses only).
    `fit_set` (fitset.FitSet): its rule picks, among each hold-out's training runs, the ones the
    laws are refitted on, and its weighting weights them, as `fit` does with all runs."""
    options = options or FitOptions()
    n, d, c, obs = (np.asarray(v, dtype=float) for v in (params, tokens, flops, loss))
    out = {}
    for holdout in holdouts:
        test = holdout_mask(holdout, n, c)
        info = {"heldout": LABELS[holdout], "n_test": int(test.sum()), "n_train": int((~test).sum()),
                "heldout_params": float(np.exp(np.mean(np.log(n[test])))) if test.any() else None,
                "heldout_flops": [float(c[test].min()), float(c[test].max())] if test.any() else None,
                "runs": {"params": n[test].tolist(), "tokens": d[test].tolist(), "flops": c[test].tolist(),
                         "loss": obs[test].tolist()},
                "scores": {}}
        need = TWO_SIZES_MIN if holdout == TWO_SIZES else MIN_SIZES
        if len(np.unique(cluster_log(n[~test]))) < need - 1 - (holdout == TWO_SIZES) or len(np.unique(cluster_log(n))) < need:
            info["reason"] = f"needs runs of at least {need} model sizes"
            out[holdout] = info
            continue
        info["extrapolation_factor"] = float(c[test].max() / c[~test].max())
        info["train_max_flops"] = float(c[~test].max())
        info["runs"]["distance"] = (c[test] / c[~test].max()).tolist()
        keep = ~test
        if fit_set is not None:
            keep = keep.copy()
            keep[keep] = fit_set.mask(n[keep], d[keep], c[keep])
            info["fit_set"] = fit_set.name
            info["n_train"] = int(keep.sum())
            if len(np.unique(cluster_log(n[keep]))) < need - 1 - (holdout == TWO_SIZES):
                info["reason"] = f"fit set {fit_set.name} leaves fewer than {need - 1 - (holdout == TWO_SIZES)} sizes to train on"
                out[holdout] = info
                continue
        train = training_set(n, d, c, obs, keep, extra)
        weights = set_weights(train, fit_set)
        if extra is not None and len(extra):
            info["n_train_derived"] = int(len(train[3]) - keep.sum())
        fitted: dict[str, dict] = {}
        for i, name in enumerate(laws):
            if name == "compute_only":
                entry = refit(name, n[keep], d[keep], c[keep], obs[keep], options, intervals)
            else:
                entry = refit(name, *train[:4], options, intervals, groups=train[4], weights=weights,
                              chinchilla=fitted.get("chinchilla"))
            fitted[name] = entry
            rng = options.rng(900 + i) if intervals else None
            info["scores"][name] = score(entry, n[test], d[test], c[test], obs[test], options.level, rng)
        out[holdout] = info
    return out


def combined_error(backtests: dict, law: str, min_coverage: float = 0.8) -> float | None:
    """Mean over the hold-outs of the law's mean |relative error| (None when no hold-out scored it).

    Both hold-outs count equally: a law is chosen for extrapolating in model size and in compute,
    the two directions `predict` goes. A hold-out where the law predicts < min_coverage of the
    runs does not count; one scored by no law at all (too few sizes) is skipped.
    """
    errs = []
    for info in backtests.values():
        s = info.get("scores", {}).get(law, {})
        if s.get("status") == "ok" and s.get("coverage", 0) >= min_coverage and "mean_abs_rel_error" in s:
            errs.append(s["mean_abs_rel_error"])
        elif info.get("scores"):
            return None  # scored for others but not for this law: not comparable
    return float(np.mean(errs)) if errs else None
