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
id, which the bootstrap resamples as one unit. `derived_points` hands them to the loss laws
(fit/loss_laws.py) and their backtests; `compare` fits L(N, D) with and without them on all sizes
but the largest and scores both on the largest size's final points.
Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit import backtest, curve_fit
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.grouping import cluster_log

# Fractions of each run at which an annealed-equivalent point is derived. Below a quarter of the
# run the curve law is fitted on few points (it skips warmup and the first 10%) and tiny proxies
# are still in their fastest, least law-like phase.
FRACTIONS = (0.25, 0.5, 0.75)

# Weight of a derived point relative to a run's measured final loss: it is a prediction of the
# curve law (leave-one-curve-out errors of ~1-4% on CPU proxies), not a measurement.
CURVE_WEIGHT = 0.5

# By default curve points are dropped when they raise the held-out largest size's mean |relative
# error| by more than this (absolute): below it the two fits differ by less than the spread of
# refits on a few held-out runs, and the extra points are kept.
DROP_MARGIN = 0.0025

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


def derived_points(points, done, kind: str) -> dict[str, backtest.DerivedPoints]:
    """The curve rows of `points` as backtest.DerivedPoints owned by their run's row of `done`, for
    `kind` (the accounting of done["params"]) and, when done carries params_alt, the other one."""
    curve = points[points["source"] == "curve"]
    row_of = {run: i for i, run in enumerate(done["run"])}
    owner = curve["run"].map(row_of).to_numpy(dtype=int)
    tokens, flops, loss, weight = (curve[k].to_numpy(dtype=float) for k in ("tokens", "flops", "loss", "weight"))
    out = {kind: backtest.DerivedPoints(curve["params"].to_numpy(dtype=float), tokens, flops, loss, weight, owner)}
    if "params_alt" in done.columns:
        other = "nonembed" if kind == "total" else "total"
        alt = done["params_alt"].to_numpy(dtype=float)[owner]
        out[other] = backtest.DerivedPoints(alt, tokens, flops, loss, weight, owner)
    return out


def compare(done, derived: backtest.DerivedPoints, options: FitOptions) -> dict:
    """Hold out the largest size: L(N, D) on final points alone vs final + curve points, scored on
    the held-out size's final losses (backtest.py)."""
    n, d, c, loss = (done[k].to_numpy(dtype=float) for k in ("params", "tokens", "flops", "loss"))
    out = {}
    for name, extra in (("final", None), ("final+curve", derived)):
        info = backtest.backtest(n, d, c, loss, options, laws=("chinchilla",), holdouts=("largest_size",),
                                 extra=extra)["largest_size"]
        out.setdefault("heldout_params", info.get("heldout_params"))
        out.setdefault("n_test", info["n_test"])
        if "reason" in info:
            return out | {"reason": info["reason"], "scores": {}}
        score = info["scores"]["chinchilla"]
        out.setdefault("scores", {})[name] = {k: score[k] for k in ("status", "mean_abs_rel_error", "rmse_log")
                                              if k in score} | {"n_train": info["n_train"] + info.get("n_train_derived", 0)}
    return out


def decide(done, derived: backtest.DerivedPoints, options: FitOptions) -> dict:
    """Whether the loss laws use the curve points: {"backtest": compare(...), "used", "decision"}.

    Forced by options.curve_points True; otherwise by the largest-size comparison: points derived by
    a curve law that fits the curves poorly bias L(N, D) (measured: a byte-level CPU sweep, 0.21%
    held-out error on final points alone, 2.42% with curve points), so they are dropped when they
    make the held-out size's error worse by more than DROP_MARGIN. Without a comparison (too few
    sizes) they are used.
    """
    result = compare(done, derived, options)
    scores = result.get("scores", {})
    errors = {k: v.get("mean_abs_rel_error") for k, v in scores.items()}
    if options.curve_points:
        return {"backtest": result, "used": True, "decision": "forced on (--curve-points)"}
    if errors.get("final") is None or errors.get("final+curve") is None:
        why = result.get("reason", "no comparison")
        return {"backtest": result, "used": True, "decision": f"used; not compared ({why})"}
    with_curve, final_only = errors["final+curve"], errors["final"]
    if with_curve <= final_only + DROP_MARGIN:
        return {"backtest": result, "used": True,
                "decision": f"used: held-out largest size {with_curve:.2%} with them vs {final_only:.2%} without"}
    return {"backtest": result, "used": False,
            "decision": f"held-out largest size {with_curve:.2%} with them vs {final_only:.2%} without "
                        "(--curve-points forces them)"}
