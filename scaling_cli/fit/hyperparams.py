"""Optimal learning rate and batch size: a parabola per (N, D) cell, then power laws of the optima.

Per cell of runs sharing N and D (within 10%), loss is profiled over the hyperparameter (for
each LR value the best loss over batch sizes, and vice versa), a parabola of loss in log(eta)
(log B) is fitted to the minimum and its two neighbours on each side, and its vertex is the
cell's optimum. The interval on the vertex comes from the delta method on the parabola's
coefficient covariance (DeepSeek 2024 and Li et al. 2025 fit such near-optimal bands), or, with
exactly three points and no residual degree of freedom, from half the grid spacing.

Cells are split by parametrization (standard / μP), which moves the optimum with width or not.

Diverged runs (status 'diverged', or no finite loss) count as "loss above the range": they are
never the minimum, they bound the window, and a vertex beyond the last finite value is accepted
only up to the diverged value. Optima at the edge of the sweep are reported and not used.

Power laws of the optima, in log space by weighted least squares with a bootstrap over cells:
  lr:          eta_opt = a N^b D^c (Step Law form)     and  eta_opt = a C^b (DeepSeek form)
  batch_size:  B_opt = d D^e (Step Law form)            and  B_opt = d C^e   (DeepSeek form)
Pure numpy; no I/O.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import laws
from scaling_cli.fit.bootstrap import FitOptions, percentile_interval
from scaling_cli.fit.grouping import DEFAULT_REL_TOL, cluster_log
from scaling_cli.fit.parametric import not_enough

# Points on each side of the minimum used for the parabola: the minimum +-2 (5 points) keeps the
# fit local where loss vs log(eta) is close to quadratic (Li et al. 2025 and Wortsman et al. 2023
# show the basin is flat near the optimum and steepens far from it).
WINDOW_HALF_WIDTH = 2

# Floor on an optimum's log-space standard deviation in the power-law weights (5%): a parabola
# through nearly collinear points can claim absurd precision.
MIN_LOG_SD = 0.05

FORMS = {
    "lr": {"step_law": ("params", "tokens"), "compute": ("flops",)},
    "batch_size": {"step_law": ("tokens",), "compute": ("flops",)},
}


def cell_optimum(hp: np.ndarray, loss: np.ndarray, level: float) -> dict:
    """Optimum of one cell from (hyperparameter value, profiled loss); loss inf for diverged."""
    order = np.argsort(hp)
    hp, loss = hp[order], loss[order]
    x = np.log(hp)
    finite = np.isfinite(loss)
    if finite.sum() < 3:
        return {"status": "skipped", "reason": f"{int(finite.sum())} finite values (needs 3)"}
    i = int(np.argmin(np.where(finite, loss, np.inf)))
    if i == 0:
        return {"status": "edge", "reason": "best value is the smallest swept; optimum may lie below"}
    if i == len(hp) - 1:
        return {"status": "edge", "reason": "best value is the largest swept; optimum may lie above"}
    lo, hi = max(0, i - WINDOW_HALF_WIDTH), min(len(hp), i + WINDOW_HALF_WIDTH + 1)
    win = np.arange(lo, hi)
    pts = win[finite[win]]
    if len(pts) < 3:
        return {"status": "skipped", "reason": "fewer than 3 finite values around the minimum"}
    xs, ys = x[pts], loss[pts]
    if len(pts) > 3:  # at least one residual degree of freedom: covariance scaled by chi^2/dof
        coefs, cov = np.polyfit(xs, ys, 2, cov=True)
    else:
        coefs, cov = np.polyfit(xs, ys, 2), None
    if coefs[0] <= 0:
        return {"status": "skipped", "reason": "loss is not convex around the minimum"}
    x_star = -coefs[1] / (2 * coefs[0])
    if not x[win[0]] <= x_star <= x[win[-1]]:
        return {"status": "edge", "reason": "parabola vertex outside the swept window"}
    if cov is not None:
        grad = np.array([coefs[1] / (2 * coefs[0] ** 2), -1.0 / (2 * coefs[0]), 0.0])
        sd = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    else:
        sd = float(np.mean(np.diff(xs))) / 2.0 / NormalDist().inv_cdf(0.5 + level / 2)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return {"status": "ok", "opt": float(np.exp(x_star)), "log_sd": sd,
            "interval": [float(np.exp(x_star - z * sd)), float(np.exp(x_star + z * sd))],
            "loss_min": float(np.polyval(coefs, x_star)), "parabola": coefs.tolist(),
            "n_values": int(len(hp)), "n_diverged": int((~finite).sum())}


def _wls(design: np.ndarray, target: np.ndarray, sd: np.ndarray) -> np.ndarray:
    w = 1.0 / np.maximum(sd, MIN_LOG_SD)
    coef, *_ = np.linalg.lstsq(design * w[:, None], target * w, rcond=None)
    return coef


def _fit_form(cols: list[np.ndarray], opt: np.ndarray, sd: np.ndarray, options: FitOptions, salt: int) -> dict | None:
    """log opt = c0 + sum_j e_j log col_j; None when the design cannot identify the exponents."""
    design = np.column_stack([np.ones(len(opt))] + [np.log(c) for c in cols])
    p = design.shape[1]
    if len(opt) < p + 1 or np.linalg.matrix_rank(design) < p:
        return None
    target = np.log(opt)
    point = _wls(design, target, sd)
    rng = options.rng(salt)
    samples = np.full((options.n_boot, p), np.nan)
    for b in range(options.n_boot):
        idx = rng.integers(0, len(opt), len(opt))
        if np.linalg.matrix_rank(design[idx]) < p:
            continue
        jitter = rng.normal(0.0, sd[idx])  # each optimum is itself uncertain
        samples[b] = _wls(design[idx], target[idx] + jitter, sd[idx])
    to_nat = lambda t: np.column_stack([np.exp(t[:, 0]), t[:, 1:]])
    samples = to_nat(samples)
    nat = to_nat(point[None, :])[0]
    entry = {"coef": float(nat[0]), "exponents": [float(v) for v in nat[1:]], "samples": samples.tolist(),
             "rmse_log": float(np.sqrt(np.mean((design @ point - target) ** 2)))}
    if np.isfinite(samples).all(axis=1).sum() >= 2:
        lo, hi = percentile_interval(samples, options.level)
        entry["coef_interval"] = [float(lo[0]), float(hi[0])]
        entry["exponent_intervals"] = [[float(a), float(b)] for a, b in zip(lo[1:], hi[1:])]
    return entry


def _cell_optima(params, tokens, flops, hp, loss, diverged, level: float, rel_tol: float) -> tuple[list, list]:
    """(cells with an interior optimum, skipped cells) for runs of one parametrization."""
    usable = np.isfinite(hp) & (hp > 0) & np.isfinite(params) & np.isfinite(tokens)
    n_lab, d_lab = cluster_log(np.where(usable, params, np.nan), rel_tol), cluster_log(np.where(usable, tokens, np.nan), rel_tol)
    cells, skipped = [], []
    for key in sorted({(a, b) for a, b in zip(n_lab, d_lab) if a >= 0 and b >= 0}):
        sel = np.flatnonzero((n_lab == key[0]) & (d_lab == key[1]))
        values = np.unique(np.round(np.log(hp[sel]), 6))
        if len(values) < 3:
            continue  # this hyperparameter was not swept in this cell
        prof_loss = []
        for v in values:  # profile: best finite loss over the other hyperparameter
            at = sel[np.isclose(np.log(hp[sel]), v, atol=1e-6)]
            fin = loss[at][~diverged[at]]
            prof_loss.append(float(fin.min()) if len(fin) else np.inf)
        res = cell_optimum(np.exp(values), np.array(prof_loss), level)
        info = {"params": float(np.exp(np.mean(np.log(params[sel])))), "tokens": float(np.exp(np.mean(np.log(tokens[sel])))),
                "flops": float(np.exp(np.mean(np.log(flops[sel])))), "n_runs": int(len(sel)),
                "values": np.exp(values).tolist(), "profile_loss": [v if np.isfinite(v) else None for v in prof_loss]}
        (cells if res["status"] == "ok" else skipped).append(info | res)
    return cells, skipped


def _power_laws(name: str, cells: list, options: FitOptions) -> tuple[dict, str | None]:
    """Both power-law forms of the cell optima, and the preferred one (Step Law form first)."""
    col = {k: np.array([c[k] for c in cells]) for k in ("params", "tokens", "flops", "opt", "log_sd")}
    forms = {}
    for i, (form, inputs) in enumerate(FORMS[name].items()):
        fitted = _fit_form([col[k] for k in inputs], col["opt"], col["log_sd"], options, salt=20 + i)
        forms[form] = ({"status": "ok", "inputs": list(inputs)} | fitted) if fitted else {
            "status": "not enough data", "inputs": list(inputs),
            "reason": f"{len(cells)} cell optima do not vary enough in {', '.join(inputs)} to identify the exponents"}
    return forms, next((f for f in ("step_law", "compute") if forms[f]["status"] == "ok"), None)


def fit_optimal(name: str, params: ArrayLike, tokens: ArrayLike, flops: ArrayLike, hp: ArrayLike, loss: ArrayLike,
                diverged: ArrayLike, options: FitOptions | None = None, rel_tol: float = DEFAULT_REL_TOL,
                parametrization: ArrayLike | None = None) -> dict:
    """Optima of hyperparameter `name` ('lr' or 'batch_size') per (N, D) cell and their power laws.

    One entry per run. Runs at the same value of `hp` but different values of the other
    hyperparameter (or seed) are profiled out: the value's loss is their best finite loss.
    `diverged` marks runs whose loss counts as above the range.

    `parametrization` (one label per run, e.g. 'standard' / 'mup') splits cells: under μP the best
    LR stays put across width while under the standard parametrization it moves (Yang et al.), so a
    cell mixing both would take the optimum of whichever happens to be lower. Each parametrization
    gets its own cells and power laws (under "by_parametrization"); the top-level forms, which
    predict uses, are the standard parametrization's when it has a fit, else those of the one with
    the most cell optima. Missing labels count as 'standard'.
    """
    options = options or FitOptions()
    params, tokens, flops, hp, loss = (np.asarray(v, dtype=float) for v in (params, tokens, flops, hp, loss))
    diverged = np.asarray(diverged, dtype=bool) | ~np.isfinite(loss)
    labels = np.full(len(hp), "standard", dtype=object) if parametrization is None else np.array(
        ["standard" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in parametrization], dtype=object)
    per: dict[str, dict] = {}
    for label in sorted(set(labels)):
        m = labels == label
        cells, skipped = _cell_optima(params[m], tokens[m], flops[m], hp[m], loss[m], diverged[m], options.level, rel_tol)
        for c in cells + skipped:
            c["parametrization"] = label
        forms, preferred = _power_laws(name, cells, options) if cells else ({}, None)
        per[label] = {"cells": cells, "skipped_cells": skipped, "forms": forms, "preferred": preferred}
    all_cells = [c for p in per.values() for c in p["cells"]]
    all_skipped = [c for p in per.values() for c in p["skipped_cells"]]
    if not all_cells:
        why = "no (N, D) cell sweeps it over >= 3 values with an interior minimum"
        return not_enough(f"{name}_opt", f"{name}: {why}") | {"skipped_cells": all_skipped}
    with_cells = [k for k in per if per[k]["cells"]]
    chosen = "standard" if per.get("standard", {}).get("preferred") else max(
        with_cells, key=lambda k: (per[k]["preferred"] is not None, len(per[k]["cells"])))
    reference = {"step_law": laws.STEP_LAW[name], "deepseek": laws.DEEPSEEK[name]}
    entry = {"law": f"{name}_opt", "status": "ok", "hyperparameter": name, "cells": all_cells,
             "skipped_cells": all_skipped, "forms": per[chosen]["forms"], "preferred": per[chosen]["preferred"],
             "parametrization": chosen, "reference": reference,
             "form": "eta_opt = a N^b D^c | a C^b" if name == "lr" else "B_opt = d D^e | d C^e"}
    if len(per) > 1:
        entry["by_parametrization"] = {k: {"forms": v["forms"], "preferred": v["preferred"], "n_cells": len(v["cells"])}
                                       for k, v in per.items()}
    return entry


def predict_optimum(entry: dict, params: float, tokens: float, flops: float, level: float) -> dict | None:
    """Point and interval of the preferred power law of a fit_optimal entry at (N, D, C)."""
    if entry.get("status") != "ok" or entry.get("preferred") is None:
        return None
    form = entry["forms"][entry["preferred"]]
    values = {"params": params, "tokens": tokens, "flops": flops}
    logs = np.log([values[k] for k in form["inputs"]])
    point = float(form["coef"] * np.exp(np.dot(form["exponents"], logs)))
    samples = np.asarray(form["samples"], dtype=float)
    out = {"value": point, "form": entry["preferred"], "interval": [None, None]}
    if samples.size and np.isfinite(samples).all(axis=1).sum() >= 2:
        vals = samples[:, 0] * np.exp(samples[:, 1:] @ logs)
        lo, hi = percentile_interval(vals[np.isfinite(vals)], level)
        out["interval"] = [float(lo), float(hi)]
    return out
