"""Annealed-equivalent (N, D, L) points from whole training curves, for the loss laws.

Intermediate checkpoints carry information about D at fixed N (Choshen et al. 2024, "A
Hitchhiker's Guide to Scaling Law Estimation": fitting to them improves accuracy), but the loss
at step s of a cosine or WSD run is not the final loss of a run of s steps: that run would have
annealed by then. So the curve is not read off directly. Instead, per model size (and peak LR),
the schedule-aware curve law of Tissue et al. (L = L0 + A*S1^-alpha - C*S2, fit/curve_fit.py) is
fitted to every curve of the group, and for each run and each fraction f in FRACTIONS it predicts
the final loss of the same schedule compressed to s = f*T steps (warmup and decay scaled with it;
for cosine, linear and WSD-by-fraction that is exactly the run the sweep would train at s steps).

The laws fit the validation loss of finished runs, the curve law the train loss, so each derived
point is scaled by its run's ratio (final validation loss) / (curve law's final train loss): the
run's own full-length point is reproduced exactly, and the shorter ones keep its train-to-
validation ratio. A derived point whose (N, D) cell already holds a real run (e.g. a WSD decay
branch, every one of which is a real annealed run) is dropped: real beats derived.

`build_points` returns one row per point: run, params, tokens, flops, loss, weight, source
("final": a finished run's own final validation loss, weight 1; "curve": derived, weight
CURVE_WEIGHT), the exact (N, D, L) arrays any loss law consumes. Points of one run share its run
id, which the bootstrap resamples as one unit. `backtest` fits L(N, D) with and without the
curve points on all sizes but the largest and scores both on the largest size's final points.
Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit import curve_fit, parametric
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.grouping import cluster_log

# Fractions of each run at which an annealed-equivalent point is derived. Below a quarter of the
# run the curve law is fitted on few points (it skips warmup and the first 10%) and tiny proxies
# are still in their fastest, least law-like phase.
FRACTIONS = (0.25, 0.5, 0.75)

# Weight of a derived point relative to a run's measured final loss: it is a prediction of the
# curve law (leave-one-curve-out errors of ~1-4% on CPU proxies), not a measurement.
CURVE_WEIGHT = 0.5

# A derived point within this relative distance in D of a real run of the same size is dropped.
DUPLICATE_REL_TOL = 0.15


def compressed_schedule(lr: np.ndarray, warmup: int, steps: int) -> tuple[np.ndarray, int]:
    """The per-step LR of the same schedule shape over `steps` steps, and its warmup."""
    total = len(lr)
    positions = np.arange(1, steps + 1) * total / steps
    return np.interp(positions, np.arange(1, total + 1), lr), max(1, int(round(warmup * steps / total)))


def _tissue_at(entry: dict, lr: np.ndarray, warmup: int) -> float:
    return float(curve_fit.predict_curve(entry, lr, np.array([len(lr)]), warmup)[0])


def _group_curves(done, curves) -> dict:
    """{(size label, peak-LR label): [(row of done, Curve), ...]} for runs with a usable curve."""
    if curves is None or len(curves) == 0 or "lr" not in curves.columns:
        return {}
    info = done.set_index("run")
    built = []
    for run, rows in curves.groupby("run", sort=False):
        if run not in info.index:
            continue
        c = curve_fit.prepare_curve(str(run), rows["step"], rows["lr"], rows["loss"], float(info.loc[run, "params"]))
        if c is not None:
            built.append((info.loc[run], c))
    if not built:
        return {}
    size = cluster_log([c.params for _, c in built])
    peak = cluster_log([c.lr.max() for _, c in built])
    groups: dict = {}
    for item, s, p in zip(built, size, peak):
        groups.setdefault((int(s), int(p)), []).append(item)
    return groups


def build_points(done, curves, fractions=FRACTIONS, weight: float = CURVE_WEIGHT):
    """Final points of `done` (one row per run: run, params, tokens, flops, loss) plus the curve points.

    `curves` has run, step, lr, loss (train) per logged step. Returns (points frame, info dict)
    where info counts what was derived, dropped and why.
    """
    import pandas as pd

    final = done[["run", "params", "tokens", "flops", "loss"]].assign(weight=1.0, source="final")
    groups = _group_curves(done, curves)
    rows, info = [], {"n_groups": len(groups), "n_runs_with_curves": 0, "n_duplicates_dropped": 0, "n_failed_groups": 0}
    size_label = dict(zip(done["run"], cluster_log(done["params"])))
    real = {}  # size label -> tokens of real runs, to drop derived duplicates
    for run, label in size_label.items():
        real.setdefault(label, []).append(float(done.loc[done["run"] == run, "tokens"].iloc[0]))
    for members in groups.values():
        entry = curve_fit.fit_tissue([c for _, c in members], FitOptions(n_boot=0))
        if entry.get("status") != "ok":
            info["n_failed_groups"] += 1
            continue
        for row, c in members:
            total = len(c.lr)
            own = _tissue_at(entry, c.lr, c.warmup)
            if not (np.isfinite(own) and own > 0):
                continue
            ratio = float(row["loss"]) / own
            info["n_runs_with_curves"] += 1
            for f in fractions:
                steps = int(round(f * total))
                if steps <= max(2 * c.warmup, curve_fit.SKIP_FRACTION * total) or steps >= total:
                    continue
                tokens = float(row["tokens"]) * steps / total
                if any(abs(tokens / t - 1) < DUPLICATE_REL_TOL for t in real[size_label[row.name]]):
                    info["n_duplicates_dropped"] += 1
                    continue
                lr_s, warm_s = compressed_schedule(c.lr, c.warmup, steps)
                loss = ratio * _tissue_at(entry, lr_s, warm_s)
                if np.isfinite(loss) and loss > 0:
                    rows.append({"run": row.name, "params": float(row["params"]), "tokens": tokens,
                                 "flops": float(row["flops"]) * steps / total, "loss": loss, "weight": weight,
                                 "source": "curve"})
    points = pd.concat([final, pd.DataFrame(rows, columns=final.columns)], ignore_index=True) if rows else final.copy()
    points = points.astype({k: float for k in ("params", "tokens", "flops", "loss", "weight")}).reset_index(drop=True)
    info |= {"n_final": int(len(final)), "n_curve": int(len(rows)), "fractions": list(fractions), "curve_weight": weight}
    return points, info


def fit_weighted_chinchilla(points, options: FitOptions, quick: bool = False) -> dict:
    """L(N, D) on a points frame, each point weighted, each run one bootstrap unit."""
    n, d, loss, w = (points[k].to_numpy(dtype=float) for k in ("params", "tokens", "loss", "weight"))
    starts = None
    if quick:  # the backtest's refits: the best grid starts only, no bootstrap (as fit/selection.py)
        x = np.column_stack([np.log(n), np.log(d)])
        starts = parametric.screened_starts(x, np.log(loss), options.grid_size, options.holdout_starts)
        options = FitOptions(**{**options.as_dict(), "n_boot": 0})
    return parametric.fit_chinchilla(n, d, loss, options, groups=points["run"].to_numpy(), starts=starts, weights=w)


def backtest(points, options: FitOptions) -> dict:
    """Hold out the largest size: L(N, D) on final points alone vs final + curve points, scored on
    the held-out size's final points (mean |relative error| and RMSE of log loss)."""
    labels = cluster_log(points["params"])
    test = (labels == labels.max()) & (points["source"] == "final").to_numpy()
    train = labels < labels.max()
    out = {"heldout_params": float(points["params"][test].median()) if test.any() else None,
           "n_test": int(test.sum()), "scores": {}}
    if len(np.unique(labels[train])) < 2 or not test.any():
        return out | {"reason": "needs final points of at least 3 model sizes"}
    observed = points["loss"].to_numpy()[test]
    for name, sel in (("final", train & (points["source"] == "final").to_numpy()), ("final+curve", train)):
        entry = fit_weighted_chinchilla(points[sel], options, quick=True)
        if entry.get("status") != "ok":
            out["scores"][name] = {"status": entry.get("status"), "reason": entry.get("reason")}
            continue
        pred = parametric.entry_loss(entry, points["params"].to_numpy()[test], points["tokens"].to_numpy()[test],
                                     points["flops"].to_numpy()[test])
        r = np.log(pred) - np.log(observed)
        out["scores"][name] = {"status": "ok", "n_train": int(sel.sum()),
                               "mean_abs_rel_error": float(np.mean(np.abs(np.expm1(r)))),
                               "rmse_log": float(np.sqrt(np.mean(r * r))), "params": entry["params"]}
    return out
