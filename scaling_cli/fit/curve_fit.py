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
solved exactly at every evaluation (Golub & Pereyra 1973). Intervals come from a moving-block
bootstrap of the residuals within each curve (refit on fitted values plus resampled blocks):
per-step noise is serially correlated, which the asymptotic Gauss-Newton intervals (kept as
"intervals_asymptotic") ignore, so those are optimistic. The bootstrap samples also give the
intervals of predicted curves. The leave-one-curve-out error (fit on the other schedules,
predict this one's final loss) remains the honest check of a cross-schedule prediction.
Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import curve_laws
from scaling_cli.fit.bootstrap import FitOptions, percentile_interval

# Fraction of the run skipped at the start of every curve (see the module docstring).
SKIP_FRACTION = 0.10

# Fitted points per curve after chunk-averaging.
MAX_POINTS = 128

# Search range of the Tissue exponent alpha (grid, then a bounded refinement within 1.2x of the best).
TISSUE_ALPHA_RANGE = (0.02, 3.0)

# Bootstrap resamples of the curve laws, at most (fewer when --n-boot asks for fewer).
TISSUE_MAX_BOOT = 200
MPL_MAX_BOOT = 100

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
    """Asymptotic intervals point +- z * sqrt(diag(s^2 (J^T J)^-1)), kept beside the bootstrap for comparison."""
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


# --- block bootstrap -----------------------------------------------------------------------------

def block_length(resid: np.ndarray) -> int:
    """Moving-block length for one curve's residuals: n^(1/3) (Kuensch 1989), lengthened to six
    correlation lengths -1/ln(rho) when the lag-1 autocorrelation rho says the noise is slower
    (the idea of Politis & White 2004's automatic choice, in its simplest form); at most n/3."""
    n = len(resid)
    rho = _lag1(resid)
    corr_len = -1.0 / np.log(rho) if 0 < rho < 1 else 0.0
    return int(np.clip(np.ceil(max(n ** (1 / 3), 6 * corr_len)), 2, max(2, n // 3)))


def block_residuals(resid: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One moving-block resample of each curve's residuals, concatenated in curve order.

    Residuals of one curve are serially correlated (data order, slow drifts of the optimiser), so
    they are resampled in contiguous blocks, each curve from its own residuals so that a noisy
    curve stays noisy.
    """
    out = []
    for r in resid:
        n, b = len(r), block_length(r)
        starts = rng.integers(0, n - b + 1, size=int(np.ceil(n / b)))
        out.append(np.concatenate([r[s:s + b] for s in starts])[:n])
    return np.concatenate(out)


def _lag1(r: np.ndarray) -> float:
    r = r - r.mean()
    denom = float(r @ r)
    return float(r[1:] @ r[:-1]) / denom if denom > 0 and len(r) > 2 else 0.0


def inflated_pieces(resid: np.ndarray, curves: list[Curve], n_params: int) -> list[np.ndarray]:
    """Each curve's residuals, scaled up for what the fit absorbed: sqrt(n_eff / (n_eff - p)).

    A fit of p parameters soaks up part of the noise, and with serially correlated noise the
    number of independent points is n_eff = n (1 - rho) / (1 + rho), not n, so residuals
    understate the noise by more than the usual sqrt((n - p)/n). The factor is capped at 3.
    """
    pieces = _split(resid, curves)
    n_eff = sum(len(r) * (1 - max(_lag1(r), 0.0)) / (1 + max(_lag1(r), 0.0)) for r in pieces)
    factor = float(np.sqrt(n_eff / (n_eff - n_params))) if n_eff > n_params + 1 else 3.0
    return [r * min(factor, 3.0) for r in pieces]


def _boot_summary(point: np.ndarray, samples: np.ndarray, names: list[str], level: float, n_requested: int) -> dict:
    ok = np.isfinite(samples).all(axis=1) if len(samples) else np.zeros(0, bool)
    good = samples[ok]
    if len(good) < 2:
        return {"intervals": {n: [None, None] for n in names}, "samples": [], "n_boot": int(n_requested), "n_boot_failed": int((~ok).sum())}
    lo, hi = percentile_interval(good, level)
    return {"intervals": {n: [float(a), float(b)] for n, a, b in zip(names, lo, hi)}, "samples": good.tolist(),
            "n_boot": int(n_requested), "n_boot_failed": int((~ok).sum())}


def _split(values: np.ndarray, curves: list[Curve]) -> list[np.ndarray]:
    return np.split(values, np.cumsum([len(c.loss) for c in curves])[:-1])


# --- Tissue et al. ------------------------------------------------------------------------------

def _tissue_areas(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 at every fitted point of every curve, concatenated."""
    pairs = [tuple(a[c.steps - 1] for a in curve_laws.tissue_features(c.lr, c.warmup)) for c in curves]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def _tissue_solve(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L0, A, alpha, C) and residuals: alpha by a grid then a bounded 1-D search, the rest by least squares."""
    from scipy.optimize import minimize_scalar

    log_s1 = np.log(s1)

    def project(alpha):
        design = np.column_stack([np.ones_like(s1), np.exp(-alpha * log_s1), -s2])
        lin, *_ = np.linalg.lstsq(design, y, rcond=None)
        return lin, y - design @ lin

    sse = lambda a: float(np.sum(project(a)[1] ** 2))
    best = grid[int(np.argmin([sse(a) for a in grid]))]
    alpha = float(minimize_scalar(sse, bounds=(best / 1.2, best * 1.2), method="bounded").x)
    (L0, A, C), resid = project(alpha)
    return np.array([L0, A, alpha, C]), resid


def fit_tissue(curves: list[Curve], options: FitOptions | None = None) -> dict:
    """L = L0 + A S1^-alpha - C S2 on all curves jointly (shared parameters), block-bootstrap intervals."""
    options = options or FitOptions()
    y = np.concatenate([c.loss for c in curves])
    s1, s2 = _tissue_areas(curves)
    point, resid = _tissue_solve(y, s1, s2, np.geomspace(*TISSUE_ALPHA_RANGE, 40))
    L0, A, alpha, C = point
    names = ["L0", "A", "alpha", "C"]
    jac = np.column_stack([np.ones_like(s1), s1 ** (-alpha), -A * s1 ** (-alpha) * np.log(s1), -s2])
    at_bounds = ["alpha"] if not TISSUE_ALPHA_RANGE[0] * 1.05 < alpha < TISSUE_ALPHA_RANGE[1] / 1.05 else []
    entry = {"law": "tissue", "status": "ok", "form": "L(s) = L0 + A*S1^-alpha - C*S2", "at_bounds": at_bounds,
             "reference": "Tissue et al. 2024", "lambda": curve_laws.TISSUE_LAMBDA,
             "params": dict(zip(names, map(float, point))),
             "intervals_asymptotic": dict(zip(names, _gn_intervals(jac, resid, point, options.level))),
             "rmse": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(y)), "n_curves": len(curves)}
    n_boot = min(options.n_boot, TISSUE_MAX_BOOT)
    fitted, pieces = y - resid, inflated_pieces(resid, curves, 4)
    rng = options.rng(salt=300)
    # A resample's alpha is near the point estimate: a local grid keeps each refit to ~1 ms.
    local = np.geomspace(alpha / 2, alpha * 2, 12)
    samples = np.array([_tissue_solve(fitted + block_residuals(pieces, rng), s1, s2, local)[0] for _ in range(n_boot)])
    return entry | _boot_summary(point, samples.reshape(-1, 4), names, options.level, n_boot) | {
        "interval_method": f"moving-block bootstrap of residuals within curves ({n_boot} resamples)" if n_boot
        else "none (n_boot = 0)"}


# --- multi-power law --------------------------------------------------------------------------

def _mpl_columns(feats: list[curve_laws.MplFeatures], alpha, log_c, beta, gamma):
    area = np.concatenate([f.area for f in feats])
    decay = np.concatenate([curve_laws.mpl_decay_term(f, np.exp(log_c), beta, gamma) for f in feats])
    return area, decay


MPL_LOWER, MPL_UPPER = [0.01, np.log(1e-4), 0.01, 0.0], [3.0, np.log(1e4), 5.0, 2.0]


def _mpl_design(feats, phi) -> np.ndarray:
    """Columns of the linear parameters (L0, A, B) at nonlinear phi = (alpha, log C, beta, gamma)."""
    alpha, log_c, beta, gamma = phi
    area, decay = _mpl_columns(feats, alpha, log_c, beta, gamma)
    return np.column_stack([np.ones_like(area), area ** (-alpha), -decay])


def _mpl_solve(y: np.ndarray, feats, starts, max_nfev: int = 200):
    """Best least-squares optimum of (alpha, log C, beta, gamma) from `starts`, the linear part projected."""
    from scipy.optimize import least_squares

    def project(phi):
        design = _mpl_design(feats, phi)
        lin, *_ = np.linalg.lstsq(design, y, rcond=None)
        return lin, y - design @ lin

    best = None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for start in starts:
            try:
                res = least_squares(lambda p: project(p)[1], start, bounds=(MPL_LOWER, MPL_UPPER),
                                    x_scale=[0.1, 1.0, 0.1, 0.1], max_nfev=max_nfev)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
                best = res
        if best is None:
            return None, None
        alpha, log_c, beta, gamma = best.x
        (L0, A, B), resid = project(best.x)
    return np.array([L0, A, alpha, B, np.exp(log_c), beta, gamma]), resid


def fit_multi_power(curves: list[Curve], options: FitOptions | None = None, alpha0: float = 0.5) -> dict:
    """Luo et al.'s multi-power law on all curves jointly, nonlinear (alpha, log C, beta, gamma)."""
    options = options or FitOptions()
    feats = [curve_laws.mpl_features(c.lr, c.steps, c.warmup) for c in curves]
    y = np.concatenate([c.loss for c in curves])
    point, resid = _mpl_solve(y, feats, [[alpha0, log_c, beta, gamma] for log_c, beta, gamma in MPL_STARTS])
    if point is None:
        return {"law": "multi_power", "status": "failed", "reason": "least squares did not converge"}
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
    phi = np.array([point[2], np.log(point[4]), point[5], point[6]])
    span = np.array(MPL_UPPER) - np.array(MPL_LOWER)
    at_bounds = [n for n, v, lo, w in zip(("alpha", "C", "beta", "gamma"), phi, MPL_LOWER, span)
                 if v - lo < 1e-3 * w or lo + w - v < 1e-3 * w]
    entry = {"law": "multi_power", "status": "ok", "form": "L(t) = L0 + A*(S1+S_W)^-alpha - LD(t)", "at_bounds": at_bounds,
             "reference": "Luo et al. 2025", "params": dict(zip(names, map(float, point))),
             "intervals_asymptotic": dict(zip(names, _gn_intervals(jac, resid, point, options.level))),
             "rmse": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(y)), "n_curves": len(curves)}
    n_boot = min(options.n_boot, MPL_MAX_BOOT)
    samples = _projected_boot(point, y, resid, feats, curves, n_boot, options.rng(salt=301))
    return entry | _boot_summary(point, samples, names, options.level, n_boot) | {
        "interval_method": f"moving-block bootstrap of residuals within curves ({n_boot} resamples), each refitted "
                           "by one Gauss-Newton step in (alpha, log C, beta, gamma) and an exact solve of (L0, A, B)"
        if n_boot else "none (n_boot = 0)"}


def _projected_boot(point: np.ndarray, y: np.ndarray, resid: np.ndarray, feats, curves: list[Curve], n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Multi-power resamples y* = y_hat + e*, each refitted cheaply by variable projection.

    A full nonlinear refit costs ~0.1 s per resample. Instead the nonlinear parameters take one
    Gauss-Newton step on the projected residual (Golub & Pereyra's Jacobian, by central
    differences), clipped to the fit's bounds, and the linear ones are then solved exactly on y*:
    every sample fits its own resample as well as a linear model can, so poorly identified
    directions show up as spread in the predictions instead of as absurd curves.
    """
    if n_boot == 0:
        return np.empty((0, 7))
    phi = np.array([point[2], np.log(point[4]), point[5], point[6]])
    lower, upper = np.array(MPL_LOWER), np.array(MPL_UPPER)

    def projected(phi_, target):
        design = _mpl_design(feats, phi_)
        lin, *_ = np.linalg.lstsq(design, target, rcond=None)
        return lin, target - design @ lin

    fitted = y - resid
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        jac = np.empty((len(y), 4))
        for j in range(4):
            h = 1e-5 * max(abs(phi[j]), 1e-2)
            up, dn = phi.copy(), phi.copy()
            up[j], dn[j] = min(phi[j] + h, upper[j]), max(phi[j] - h, lower[j])
            jac[:, j] = (projected(up, y)[1] - projected(dn, y)[1]) / (up[j] - dn[j])
        q, _ = np.linalg.qr(_mpl_design(feats, phi))
        pinv = np.linalg.pinv(jac)
        pieces = inflated_pieces(resid, curves, 7)
        rows = []
        for _ in range(n_boot):
            e = block_residuals(pieces, rng)
            r_star = e - q @ (q.T @ e)  # the resample's residual at the point estimate
            phi_star = np.clip(phi - pinv @ r_star, lower, upper)
            lin, _ = projected(phi_star, fitted + e)
            rows.append([lin[0], lin[1], phi_star[0], lin[2], np.exp(phi_star[1]), phi_star[2], phi_star[3]])
    return np.array(rows, dtype=float)


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


def predict_curve_samples(entry: dict, lr: ArrayLike, steps: ArrayLike | None = None,
                          warmup: int | None = None) -> np.ndarray:
    """predict_curve under every bootstrap sample of the entry: shape (n_samples, n_steps); (0, n) without samples."""
    lr = np.asarray(lr, dtype=float)
    steps = np.array([len(lr)]) if steps is None else np.atleast_1d(np.asarray(steps, dtype=int))
    samples = np.asarray(entry.get("samples") or [], dtype=float)
    if samples.size == 0:
        return np.empty((0, len(steps)))
    warmup = curve_laws.detect_warmup(lr) if warmup is None else int(warmup)
    if entry["law"] == "tissue":
        s1, s2 = curve_laws.tissue_features(lr, warmup, entry.get("lambda", curve_laws.TISSUE_LAMBDA))
        s1, s2 = s1[steps - 1], s2[steps - 1]
        L0, A, alpha, C = (samples[:, i:i + 1] for i in range(4))
        return L0 + A * s1[None, :] ** (-alpha) - C * s2[None, :]
    f = curve_laws.mpl_features(lr, steps, warmup)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.stack([curve_laws.multi_power_loss(f, *theta) for theta in samples])


FITTERS = {"tissue": fit_tissue, "multi_power": fit_multi_power}


def fit_group(curves: list[Curve], options: FitOptions | None = None) -> dict:
    """Both curve laws on one model size, with leave-one-curve-out final-loss errors."""
    options = options or FitOptions()
    out = {"params": curves[0].params, "runs": [c.run_id for c in curves],
           "run_schedules": {c.run_id: c.schedule for c in curves},
           "schedules": sorted({c.schedule for c in curves}),
           "run_steps": {c.run_id: int(len(c.lr)) for c in curves}, "laws": {}}
    quick = replace(options, n_boot=0)  # the held-out refits need point estimates only
    for name, fitter in FITTERS.items():
        entry = fitter(curves, options)
        if entry.get("status") == "ok" and len(curves) >= 2:
            errors = []
            for i, held in enumerate(curves):
                sub = fitter(curves[:i] + curves[i + 1:], quick)
                if sub.get("status") == "ok":
                    pred = float(predict_curve(sub, held.lr, held.steps[-1:], held.warmup)[0])
                    errors.append({"run_id": held.run_id, "schedule": held.schedule, "observed": held.final_loss,
                                   "predicted": pred, "rel_error": (pred - held.final_loss) / held.final_loss})
            entry["leave_one_curve_out"] = errors
            if errors:
                entry["heldout_mean_abs_rel_error"] = float(np.mean([abs(e["rel_error"]) for e in errors]))
        out["laws"][name] = entry
    return out
