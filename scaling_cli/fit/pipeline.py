"""Run every law on one prepared input and assemble the fit report (the content of fit.json).

    from scaling_cli.fit.table import load_input, ColumnSpec
    from scaling_cli.fit.pipeline import fit_all
    report = fit_all(load_input("runs.csv", ColumnSpec()))

Order: the loss laws on final losses (fit/loss_laws.py: the L(N, D) family, the compute-only law,
their reliability flags, backtests on the largest size and compute, the selection); Chinchilla
approaches 1 and 2; LR and batch-size optima; schedule-aware curve laws per model size; then downstream metrics (fit/downstream.py: BLEU(D_p), CE(D_p), Err(L)), each with a
support verdict, under the report's "downstream" key. Each law degrades to {"status": "not enough data", "reason": ...}
instead of failing. No I/O here: artifact.py writes the report, plots.py draws it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling_cli import __version__
from scaling_cli.fit import FIT_SCHEMA, approaches, curve_fit, curve_points, downstream, hyperparams, loss_laws, parametric
from scaling_cli.fit import sensitivity
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.grouping import cluster_log
from scaling_cli.fit.table import Prepared

# Curves fitted jointly per model size at most (distinct schedules first): each extra curve adds a
# leave-one-out refit, and 6 already spans constant / cosine / WSD variants.
MAX_CURVES_PER_GROUP = 6

# Two runs are in the same (N, D) cell when both differ by less than this.
CELL_REL_TOL = 1e-3


def _ranges(runs) -> dict:
    return {k: [float(runs[k].min()), float(runs[k].max())] for k in ("params", "tokens", "flops") if k in runs}


def _approach1_points(prepared: Prepared, done):
    """Points for the envelope: validation evals, else smoothed train curves, else final points."""
    params_of = dict(zip(done["run"], done["params"]))
    for frame, label, smooth in ((prepared.evals, "validation evals", False), (prepared.curves, "train curves", True)):
        if frame is None or len(frame) == 0 or not {"flops", "tokens", "loss"} <= set(frame.columns):
            continue
        f = frame[frame["run"].isin(params_of) & np.isfinite(frame["loss"]) & (frame["flops"] > 0)].copy()
        if f.empty or f.groupby("run").size().max() < 2:
            continue
        f = f.sort_values(["run", "step"])
        if smooth:  # per-step train loss is noisy; a centred rolling median keeps the envelope honest
            f["loss"] = f.groupby("run")["loss"].transform(lambda s: s.rolling(9, center=True, min_periods=1).median())
        f["params"] = f["run"].map(params_of)
        return f["run"].to_numpy(), f["flops"].to_numpy(), f["loss"].to_numpy(), f["params"].to_numpy(), f["tokens"].to_numpy(), label
    return (done["run"].to_numpy(), done["flops"].to_numpy(), done["loss"].to_numpy(), done["params"].to_numpy(),
            done["tokens"].to_numpy(), "final points")


def fit_curves(prepared: Prepared, done, options: FitOptions) -> dict:
    """Curve laws per (model size, peak LR) group that has usable training curves."""
    curves = prepared.curves
    if options.curve_groups <= 0:
        return {"law": "curves", "status": "skipped", "reason": "curve fits disabled (--curve-groups 0)"}
    if curves is None or len(curves) == 0 or "lr" not in curves.columns:
        return {"law": "curves", "status": "not enough data", "reason": "no per-step curves with an lr column"}
    info = done.set_index("run")
    built = []
    for run, rows in curves.groupby("run", sort=False):
        if run not in info.index:
            continue
        sched = str(info.loc[run, "schedule"]) if "schedule" in info.columns else ""
        c = curve_fit.prepare_curve(str(run), rows["step"], rows["lr"], rows["loss"], float(info.loc[run, "params"]), sched)
        if c is not None:
            built.append(c)
    if not built:
        return {"law": "curves", "status": "not enough data", "reason": "no curve has >= 8 logged points after warmup"}
    size = cluster_log([c.params for c in built])
    peak = cluster_log([c.lr.max() for c in built])
    keys = sorted(set(zip(size, peak)))
    members = {k: [c for c, s, p in zip(built, size, peak) if (s, p) == k] for k in keys}
    # Most distinct schedules first (those test cross-schedule prediction), then larger models.
    order = sorted(keys, key=lambda k: (-len({c.schedule for c in members[k]}), -members[k][0].params))
    groups = []
    for k in order[: options.curve_groups]:
        firsts = list({c.schedule: c for c in reversed(members[k])}.values())  # one curve per schedule
        rest = [c for c in members[k] if all(c is not f for f in firsts)]
        chosen = (firsts + rest)[:MAX_CURVES_PER_GROUP]
        batch = info.loc[chosen[0].run_id, "batch_size"] if "batch_size" in info.columns else None
        groups.append(curve_fit.fit_group(chosen, options) | {
            "peak_lr": float(chosen[0].lr.max()),
            "batch_size": float(batch) if batch is not None and np.isfinite(batch) else None})
    return {"law": "curves", "status": "ok", "groups": groups, "n_groups_available": len(keys),
            "rule": f"points after warmup and the first {curve_fit.SKIP_FRACTION:.0%} of steps, "
                    f"chunk-averaged to <= {curve_fit.MAX_POINTS} per curve"}


def best_per_cell(done):
    """One run per (N, D) cell for the loss laws: seeds averaged, then the best setting.

    Loss laws describe well-tuned runs (Hoffmann et al. fit runs at their tuned settings); the
    off-optimal members of an LR or batch sweep would pull L(N, D) upward. Runs that differ only in
    seed (same LR, batch size, schedule, warmup) are averaged first so the minimum does not pick a
    lucky seed; then the best setting of the cell is kept. Returns (frame, n_dropped).
    """
    # Cells are exact settings (0.1%: realised token counts may differ by rounding), so a
    # design of scattered (N, D) keeps every run.
    keys = [cluster_log(done["params"], CELL_REL_TOL), cluster_log(done["tokens"], CELL_REL_TOL)]
    hp = [c for c in ("lr", "batch_size") if c in done.columns and done[c].nunique() > 1]
    other = [c for c in ("schedule", "warmup") if c in done.columns and done[c].nunique() > 1]
    frame = done.assign(_n=keys[0], _d=keys[1], **{f"_{c}": np.round(np.log(done[c]), 6) for c in hp},
                        **{f"_{c}": done[c].astype(str) for c in other})
    cell, setting = ["_n", "_d"], ["_n", "_d", *(f"_{c}" for c in hp + other)]
    if not frame.duplicated(cell).any():
        return done, 0
    mean_loss = frame.groupby(setting, dropna=False)["loss"].transform("mean")  # NaN lr is a setting too
    frame = frame.assign(loss=mean_loss).drop_duplicates(setting)
    best = frame.loc[frame.groupby(cell)["loss"].idxmin()]
    return best.drop(columns=[c for c in best.columns if c.startswith("_")]).reset_index(drop=True), len(done) - len(best)


@dataclass
class LossLawInputs:
    """What the loss laws are fitted on: one final point per (N, D) cell, the derived curve points
    per accounting, and the accounting in use (after --params-kind auto chose one)."""

    prepared: Prepared
    all_done: pd.DataFrame
    done: pd.DataFrame
    kind: str
    derived: dict | None
    curve_info: dict | None
    by_kind: dict | None


def loss_law_inputs(prepared: Prepared, options: FitOptions) -> LossLawInputs:
    """Finished runs, one per cell (best_per_cell), plus annealed-equivalent points from whole curves
    (fit/curve_points.py) in both accountings, so `--params-kind auto` and every backtest see the
    points the laws are fitted on; `fit` and `backtest` both start here."""
    runs = prepared.runs
    all_done = runs[~runs["diverged"] & np.isfinite(runs["loss"])].reset_index(drop=True)
    done, n_merged = best_per_cell(all_done)
    prepared.meta["n_points_loss_laws"] = int(len(done))
    if n_merged:
        prepared.meta["notes"].append(
            f"loss laws use one run per (N, D) cell ({len(done)} of {len(all_done)}): seeds averaged, "
            "then the best LR / batch size / schedule; the LR and batch-size fits use every run")
    kind = "nonembed" if prepared.meta.get("params_kind") == "nonembed" else "total"
    derived, curve_info = None, None
    if options.curve_points is not False:
        points, curve_info = curve_points.build_points(done, prepared.curves)
        derived = curve_points.derived_points(points, done, kind) if curve_info["n_curve"] else None
        if derived:
            # decided in the accounting given; `--params-kind auto` resolves after, with these points
            curve_info |= curve_points.decide(done, derived[kind], options) | {"params_kind": kind}
            if not curve_info["used"]:
                derived = None
                prepared.meta["notes"].append(f"curve points not used: {curve_info['decision']}")
    by_kind = None
    if prepared.meta.get("params_kind") == "auto":
        prepared, done, by_kind = loss_laws.resolve_auto_kind(prepared, done, options, derived)
        runs = prepared.runs
        all_done = runs[~runs["diverged"] & np.isfinite(runs["loss"])].reset_index(drop=True)
        kind = prepared.meta["params_kind"]
    return LossLawInputs(prepared, all_done, done, kind, derived, curve_info, by_kind)


def one_blas_thread():
    """A context in which BLAS/OpenMP pools run one thread. The fits are thousands of tiny (5x5,
    40-point) problems, where a multi-threaded BLAS spends its time waking threads: measured on a
    2-core box, one chinchilla_beta_n fit with 100 resamples took 25 s with the default pools and
    5 s with one thread."""
    import scipy.optimize  # noqa: F401  (loads scipy's own BLAS: limits apply to the pools loaded now)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def fit_all(prepared: Prepared, options: FitOptions | None = None) -> dict:
    """Fit every law to a prepared input; returns the JSON-ready report."""
    with one_blas_thread():
        return _fit_all(prepared, options or FitOptions())


def _fit_all(prepared: Prepared, options: FitOptions) -> dict:
    inputs = loss_law_inputs(prepared, options)
    prepared, all_done, done, kind = inputs.prepared, inputs.all_done, inputs.done, inputs.kind
    derived, curve_info, by_kind = inputs.derived, inputs.curve_info, inputs.by_kind
    runs = prepared.runs
    n, d, c, loss = (done[k].to_numpy(dtype=float) for k in ("params", "tokens", "flops", "loss"))
    # Loss laws (fit/loss_laws.py): the L(N, D) family and compute_only, reliability flags,
    # backtests on the largest size and the largest compute, selection by backtest.
    block = loss_laws.fit_loss_laws(done, options, prepared.meta.get("params_kind", "total"), by_kind, derived)
    entries: dict[str, dict] = dict(block["entries"])
    if curve_info and "backtest" in curve_info:
        entries["curve_points"] = {"law": "curve_points", "status": "ok", **curve_info,
                                   "rule": f"Tissue law per size and peak lr; final loss of the run's schedule compressed "
                                           f"to {', '.join(f'{f:g}' for f in curve_info['fractions'])} of its steps, scaled "
                                           f"by the run's validation/train ratio; weight {curve_info['curve_weight']:g}; "
                                           "when used, used by every L(N, D) law and its backtests"}
    *points, source = _approach1_points(prepared, all_done if prepared.evals is not None or prepared.curves is not None else done)
    entries["approach1"] = approaches.approach1(*points, options=options) | {"points": source}
    entries["approach2"] = approaches.approach2(c, n, d, loss, options)
    for name in ("lr", "batch_size"):
        if name not in runs.columns or runs[name].nunique() < 3:
            entries[f"{name}_opt"] = parametric.not_enough(f"{name}_opt", f"column {name!r} is absent or takes < 3 values")
            continue
        entries[f"{name}_opt"] = hyperparams.fit_optimal(
            name, runs["params"], runs["tokens"], runs["flops"], runs[name], runs["loss"], runs["diverged"], options,
            parametrization=runs["parametrization"] if "parametrization" in runs.columns else None)
    entries["curves"] = fit_curves(prepared, all_done, options)
    comparison = {}
    if entries["chinchilla"]["status"] == "ok":
        comparison["approach3"] = entries["chinchilla"]["derived"]["values"]["n_opt_exponent"]
    for a in ("approach1", "approach2"):
        if entries[a]["status"] == "ok":
            comparison[a] = entries[a]["n_opt"]["exponent"]
    # Downstream metrics use every finished run (not one per cell): Err(L) maps each run's own loss
    # to its own accuracy, and BLEU(D_p) is fitted within model sizes.
    downstream_report = downstream.fit_downstream(all_done, prepared.meta.get("metrics", {}), options)
    return {
        "schema": FIT_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "scaling_cli_version": __version__,
        "data": prepared.meta | {"n_runs": int(len(runs)), "ranges": _ranges(done)},
        "loss_law_runs": done["run"].tolist(),
        "options": options.as_dict(),
        "level": options.level,
        "laws": entries,
        "n_opt_exponent_by_approach": comparison,
        "holdout": block["holdout"],
        "backtests": block["backtests"],
        "params_kinds": block["params_kinds"],
        "diagnostics": block["diagnostics"],
        "selection": block["selection"],
        "fit_set": block["fit_set"],
        "calibration_fold": block["calibration_fold"],
        "downstream": downstream_report,
        # LR sensitivity per size (Wortsman et al.) and best LR per width (μP transfer): fit/sensitivity.py
        "stability": sensitivity.report(runs, prepared.evals),
    }
