"""Fit the schedule-aware curve laws (Tissue et al.; multi-power) to whole training curves.

Each curve is one run's logged (step, lr, train loss). The LR is rebuilt at every step by linear
interpolation between logged steps (exact when every step is logged), because S1, S2 and the
multi-power sums run over all steps.

Documented fitting rule for the points used: steps during warmup are excluded (neither law models
a rising LR) and so are the first 10% of steps (loss there falls faster than any power of the LR
area on tiny proxies); the rest is cut into at most 128 consecutive chunks whose mean loss and
middle step are the fitted points, which averages per-step noise without biasing a smooth curve.

Both laws are linear in some parameters (Tissue: L0, A, C; multi-power: L0, A, B), so they are
fitted by variable projection: least squares over the nonlinear exponents with the linear ones
solved exactly at every evaluation (Golub & Pereyra 1973). Intervals are asymptotic (Gauss-Newton
covariance of all parameters); per-step noise is correlated, so they are optimistic, and the
leave-one-curve-out error (fit on the other schedules, predict this one's final loss) is the
honest check. Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import curve_laws
from scaling_cli.fit.bootstrap import FitOptions

# Fraction of the run skipped at the start of every curve (see the module docstring).
SKIP_FRACTION = 0.10

# Fitted points per curve after chunk-averaging.
MAX_POINTS = 128

# Starting values of the multi-power law's nonlinear parameters (log C, beta, gamma): the defaults
# of Luo et al.'s reference code (C = 0.25, beta = 0.15, gamma = 0.1) and two wider alternatives.
MPL_STARTS = ((np.log(0.25), 0.15, 0.10), (np.log(2.0), 0.5, 0.5), (np.log(20.0), 0.3, 0.3))


@dataclass
class Curve:
    """One run's schedule and the chunk-averaged loss points used for fitting."""

    run_id: str
    lr: np.ndarray       # LR at steps 1..T
    warmup: int
    steps: np.ndarray    # fitted points' steps (1-based)
    loss: np.ndarray     # fitted points' mean train loss
    params: float = float("nan")
    schedule: str = ""

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])


def prepare_curve(run_id: str, step: ArrayLike, lr: ArrayLike, loss: ArrayLike, params: float = float("nan"), schedule: str = "",
                  skip_fraction: float = SKIP_FRACTION, max_points: int = MAX_POINTS) -> Curve | None:
    """Build a Curve from logged rows; None when fewer than 8 usable rows remain."""
    step, lr, loss = (np.asarray(v, dtype=float) for v in (step, lr, loss))
    ok = np.isfinite(step) & np.isfinite(lr) & np.isfinite(loss)
    step, lr, loss = step[ok], lr[ok], loss[ok]
    order = np.argsort(step)
    step, lr, loss = step[order], lr[order], loss[order]
    if len(step) < 8 or lr.max() <= 0:
        return None
    if step[0] < 1:  # 0-based logs: step s is the (s+1)-th optimizer step
        step = step - step[0] + 1
    total = int(round(step[-1]))
    per_step = np.interp(np.arange(1, total + 1), step, lr)
    warmup = curve_laws.detect_warmup(per_step)
    keep = step > max(warmup, skip_fraction * total)
    if keep.sum() < 8:
        return None
    chunks = np.array_split(np.flatnonzero(keep), min(max_points, int(keep.sum())))
    steps = np.array([int(round(step[c[len(c) // 2]])) for c in chunks])
    means = np.array([loss[c].mean() for c in chunks])
    return Curve(run_id, per_step, warmup, steps, means, float(params), schedule)


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def _gn_intervals(jac: np.ndarray, resid: np.ndarray, point: np.ndarray, level: float) -> list[list[float | None]]:
    """Asymptotic intervals point +- z * sqrt(diag(s^2 (J^T J)^-1))."""
    n, p = jac.shape
    if n <= p:
        return [[None, None]] * p
    s2 = float(resid @ resid) / (n - p)
    try:
        cov = s2 * np.linalg.pinv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return [[None, None]] * p
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    z = _z(level)
    return [[float(v - z * s), float(v + z * s)] for v, s in zip(point, sd)]


# --- Tissue et al. ------------------------------------------------------------------------------

def _tissue_areas(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 at every fitted point of every curve, concatenated."""
    pairs = [tuple(a[c.steps - 1] for a in curve_laws.tissue_features(c.lr, c.warmup)) for c in curves]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def fit_tissue(curves: list[Curve], options: FitOptions | None = None) -> dict:
    """L = L0 + A S1^-alpha - C S2 on all curves jointly (shared parameters)."""
    from scipy.optimize import minimize_scalar

    options = options or FitOptions()
    y = np.concatenate([c.loss for c in curves])
    s1, s2 = _tissue_areas(curves)

    def project(alpha):
        design = np.column_stack([np.ones_like(s1), s1 ** (-alpha), -s2])
        lin, *_ = np.linalg.lstsq(design, y, rcond=None)
        return lin, y - design @ lin

    sse = lambda a: float(np.sum(project(a)[1] ** 2))
    grid = np.geomspace(0.02, 3.0, 40)
    best = grid[int(np.argmin([sse(a) for a in grid]))]
    res = minimize_scalar(sse, bounds=(best / 1.2, best * 1.2), method="bounded")
    alpha = float(res.x)
    (L0, A, C), resid = project(alpha)
    point = np.array([L0, A, alpha, C])
    jac = np.column_stack([np.ones_like(s1), s1 ** (-alpha), -A * s1 ** (-alpha) * np.log(s1), -s2])
    names = ["L0", "A", "alpha", "C"]
    return {"law": "tissue", "status": "ok", "form": "L(s) = L0 + A*S1^-alpha - C*S2",
            "reference": "Tissue et al. 2024", "lambda": curve_laws.TISSUE_LAMBDA,
            "params": dict(zip(names, map(float, point))),
            "intervals": dict(zip(names, _gn_intervals(jac, resid, point, options.level))),
            "rmse": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(y)), "n_curves": len(curves)}


# --- multi-power law --------------------------------------------------------------------------

def _mpl_columns(feats: list[curve_laws.MplFeatures], alpha, log_c, beta, gamma):
    area = np.concatenate([f.area for f in feats])
    decay = np.concatenate([curve_laws.mpl_decay_term(f, np.exp(log_c), beta, gamma) for f in feats])
    return area, decay


def fit_multi_power(curves: list[Curve], options: FitOptions | None = None, alpha0: float = 0.5) -> dict:
    """Luo et al.'s multi-power law on all curves jointly, nonlinear (alpha, log C, beta, gamma)."""
    from scipy.optimize import least_squares

    options = options or FitOptions()
    feats = [curve_laws.mpl_features(c.lr, c.steps, c.warmup) for c in curves]
    y = np.concatenate([c.loss for c in curves])

    def project(phi):
        alpha, log_c, beta, gamma = phi
        area, decay = _mpl_columns(feats, alpha, log_c, beta, gamma)
        design = np.column_stack([np.ones_like(area), area ** (-alpha), -decay])
        lin, *_ = np.linalg.lstsq(design, y, rcond=None)
        return lin, y - design @ lin

    lower, upper = [0.01, np.log(1e-4), 0.01, 0.0], [3.0, np.log(1e4), 5.0, 2.0]
    best = None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for log_c, beta, gamma in MPL_STARTS:
            try:
                res = least_squares(lambda p: project(p)[1], [alpha0, log_c, beta, gamma], bounds=(lower, upper),
                                    x_scale=[0.1, 1.0, 0.1, 0.1], max_nfev=200)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
                best = res
    if best is None:
        return {"law": "multi_power", "status": "failed", "reason": "least squares did not converge"}
    alpha, log_c, beta, gamma = best.x
    (L0, A, B), resid = project(best.x)
    point = np.array([L0, A, alpha, B, np.exp(log_c), beta, gamma])
    names = ["L0", "A", "alpha", "B", "C", "beta", "gamma"]

    def full(theta):
        return np.concatenate([curve_laws.multi_power_loss(f, *theta) for f in feats])

    jac = np.empty((len(y), 7))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for j in range(7):  # central differences of the full 7-parameter model for the covariance
            h = 1e-6 * max(abs(point[j]), 1e-3)
            up, dn = point.copy(), point.copy()
            up[j] += h
            dn[j] -= h
            jac[:, j] = (full(up) - full(dn)) / (2 * h)
    return {"law": "multi_power", "status": "ok", "form": "L(t) = L0 + A*(S1+S_W)^-alpha - LD(t)",
            "reference": "Luo et al. 2025", "params": dict(zip(names, map(float, point))),
            "intervals": dict(zip(names, _gn_intervals(jac, resid, point, options.level))),
            "rmse": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(y)), "n_curves": len(curves)}


# --- prediction and the per-size driver --------------------------------------------------------

def predict_curve(entry: dict, lr: ArrayLike, steps: ArrayLike | None = None, warmup: int | None = None) -> np.ndarray:
    """Loss at `steps` (1-based; default: the last step) of schedule `lr` under a fitted curve law."""
    lr = np.asarray(lr, dtype=float)
    steps = np.array([len(lr)]) if steps is None else np.atleast_1d(np.asarray(steps, dtype=int))
    warmup = curve_laws.detect_warmup(lr) if warmup is None else int(warmup)
    p = entry["params"]
    if entry["law"] == "tissue":
        s1, s2 = curve_laws.tissue_features(lr, warmup, entry.get("lambda", curve_laws.TISSUE_LAMBDA))
        return curve_laws.tissue_loss((s1[steps - 1], s2[steps - 1]), p["L0"], p["A"], p["alpha"], p["C"])
    f = curve_laws.mpl_features(lr, steps, warmup)
    return curve_laws.multi_power_loss(f, *(p[k] for k in ("L0", "A", "alpha", "B", "C", "beta", "gamma")))


FITTERS = {"tissue": fit_tissue, "multi_power": fit_multi_power}


def fit_group(curves: list[Curve], options: FitOptions | None = None) -> dict:
    """Both curve laws on one model size, with leave-one-curve-out final-loss errors."""
    options = options or FitOptions()
    out = {"params": curves[0].params, "runs": [c.run_id for c in curves],
           "run_schedules": {c.run_id: c.schedule for c in curves},
           "schedules": sorted({c.schedule for c in curves}), "laws": {}}
    for name, fitter in FITTERS.items():
        entry = fitter(curves, options)
        if entry.get("status") == "ok" and len(curves) >= 2:
            errors = []
            for i, held in enumerate(curves):
                sub = fitter(curves[:i] + curves[i + 1:], options)
                if sub.get("status") == "ok":
                    pred = float(predict_curve(sub, held.lr, held.steps[-1:], held.warmup)[0])
                    errors.append({"run_id": held.run_id, "schedule": held.schedule, "observed": held.final_loss,
                                   "predicted": pred, "rel_error": (pred - held.final_loss) / held.final_loss})
            entry["leave_one_curve_out"] = errors
            if errors:
                entry["heldout_mean_abs_rel_error"] = float(np.mean([abs(e["rel_error"]) for e in errors]))
        out["laws"][name] = entry
    return out
