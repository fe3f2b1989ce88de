"""Downstream laws: BLEU and translation cross-entropy against pretraining data, top-1 error
against loss, and the two-stage prediction compute -> loss -> metric. Pure numpy/scipy; no I/O.

Laws (registered in scaling_cli.fit.laws.LAWS when this module is imported):

- bleu_tokens     BLEU(D_p) = (log(A * D_p^alpha))^beta          Isik et al. 2024, eq. 2
- downstream_ce   L(D_p) = E + A / D_p^alpha                      Isik et al. 2024, eq. 1
- error_of_loss   Err(L) = eps - k * exp(-gamma * L)              Gadre et al. 2024, eq. 4

Isik et al. fit BLEU and CE against pretraining tokens D_p at a fixed model size, so the D_p laws
are fitted per model-size group (runs whose parameter counts agree within 10%). Gadre et al. map
the loss of any model to its top-1 error, so Err(L) is fitted on every run; with the loss law of
the fit (stage 1, compute -> loss) it predicts accuracy at any target (stage 2, loss -> metric).
Intervals: percentile intervals of bootstrap refits over runs; the two-stage interval composes
every stage-1 loss sample with every stage-2 parameter sample (the stages are fitted to different
data, so their draws are independent). Every fitted law is checked for degenerate fits
(downstream_reliability.py: `reliable`, `reasons`); `predict` withholds what a flagged law says.

When the data do not support a law, no law is fitted and the metric says why (`support`):

1. at least MIN_POINTS runs with the metric, at MIN_DISTINCT distinct values of the driver
   (loss for accuracy/error, D_p for BLEU/chrF/CE);
2. a monotone trend in the expected direction: Spearman rho between progress (lower loss, more
   D_p) and goodness (higher accuracy/BLEU, lower error/CE) of at least SPEARMAN_MIN;
3. improvement over chance: the best value beats the chance level (accuracy: the mean of 1/len
   (choices), from the `<task>_chance` column or --chance; BLEU: 0; chrF and CE: the worst observed
   value) by at least the metric's threshold (accuracy: max(ACC_MIN_GAIN, SE_MULT binomial standard
   errors at chance with the task's `<task>_n` items));
4. no late reversal (Isik et al.'s misaligned case): at the most-progressed point (lowest loss,
   largest D_p) the metric is not below its best by more than max(threshold, DROP_FRACTION x its
   observed range).
"""

from __future__ import annotations

import math
import re

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import downstream_reliability, laws, robust
from scaling_cli.fit.bootstrap import FitOptions, cluster_weights, finite_interval, percentile_interval
from scaling_cli.fit.grouping import DEFAULT_REL_TOL, cluster_log, group_centers, nearest_group

# --- the support rule (module docstring) ------------------------------------------------------

MIN_POINTS = 4            # runs with a finite metric (3 parameters per law, plus one)
MIN_DISTINCT = 3          # distinct driver values: a curve needs 3 to be more than a line
SPEARMAN_MIN = 0.6        # a monotone trend: rho >= 0.6 (p ~ 0.1 one-sided at n = 6)
ACC_MIN_GAIN = 0.02       # accuracy/error: 2 points over chance at least
SE_MULT = 2.0             # ... and 2 binomial standard errors at chance (100 items, 4 choices: 8.7 points)
BLEU_MIN_GAIN = 1.0       # BLEU: 1 point over 0 (sacrebleu scale 0-100)
CHRF_MIN_GAIN = 2.0       # chrF: 2 points over the worst run (chance chrF is not 0: shared characters)
CE_MIN_REL_GAIN = 0.01    # cross-entropy: falls by 1% over the range
DROP_FRACTION = 0.25      # late reversal: a fall of a quarter of the observed range

SUPPORT_RULE = (f"a law is fitted only with >= {MIN_POINTS} runs at >= {MIN_DISTINCT} distinct driver values, "
                f"Spearman rho >= {SPEARMAN_MIN} in the expected direction, a best value above chance by the "
                f"metric's threshold (accuracy: max({ACC_MIN_GAIN}, {SE_MULT:g} binomial SE); BLEU: {BLEU_MIN_GAIN}; "
                f"chrF: {CHRF_MIN_GAIN} over the worst run; CE: {CE_MIN_REL_GAIN:.0%}), and no fall at the "
                f"most-progressed point larger than max(threshold, {DROP_FRACTION} x range)")

# Column suffix -> kind. Kinds: 'acc' (fraction correct, higher is better; acc_norm too), 'err'
# (top-1 error), 'bleu', 'chrf' (0-100), 'ce' (cross-entropy of the gold answer or reference).
KIND_SUFFIXES = (("acc_norm", "acc"), ("acc", "acc"), ("err", "err"), ("bleu", "bleu"), ("chrf", "chrf"), ("ce", "ce"))
KINDS = ("acc", "err", "bleu", "chrf", "ce")

# Laws per kind and their driver: accuracy and error go through loss, the others through D_p.
LAW_OF_KIND = {"acc": "error_of_loss", "err": "error_of_loss", "bleu": "bleu_tokens", "chrf": "bleu_tokens",
               "ce": "downstream_ce"}


# --- law forms ----------------------------------------------------------------------------------

def bleu_tokens(d: ArrayLike, A, alpha, beta) -> np.ndarray:
    """BLEU(D_p) = (log(A * D_p^alpha))^beta, 0 where the log is not positive (Isik et al. 2024)."""
    arg = np.log(A) + alpha * np.log(np.asarray(d, dtype=float))
    with np.errstate(invalid="ignore"):
        value = np.where(arg > 0, np.abs(arg) ** beta, 0.0)
    return np.where(np.isnan(arg + beta), np.nan, value)  # a failed bootstrap row stays NaN, not 0


def downstream_ce(d: ArrayLike, E, A, alpha) -> np.ndarray:
    """Downstream cross-entropy L(D_p) = E + A / D_p^alpha (Isik et al. 2024)."""
    return E + A * np.asarray(d, dtype=float) ** (-alpha)


def error_of_loss(loss: ArrayLike, eps, k, gamma) -> np.ndarray:
    """Top-1 error Err(L) = eps - k * exp(-gamma * L) (Gadre et al. 2024)."""
    return eps - k * np.exp(-gamma * np.asarray(loss, dtype=float))


def metric_of_error(kind: str, err: ArrayLike) -> np.ndarray:
    """Accuracy (1 - Err) or error itself, clipped to [0, 1]: the exponential form is unbounded,
    and an extrapolation to low loss can cross 0 error."""
    err = np.asarray(err, dtype=float)
    return np.clip(1.0 - err if kind == "acc" else err, 0.0, 1.0)


for _law in (
    laws.Law("bleu_tokens", bleu_tokens, ("A", "alpha", "beta"), ("tokens",),
             "BLEU = (log(A * D_p^alpha))^beta", "Isik et al. 2024, scaling laws for downstream task performance"),
    laws.Law("downstream_ce", downstream_ce, ("E", "A", "alpha"), ("tokens",),
             "L_down = E + A / D_p^alpha", "Isik et al. 2024, scaling laws for downstream task performance"),
    laws.Law("error_of_loss", error_of_loss, ("eps", "k", "gamma"), ("loss",),
             "Err = eps - k * exp(-gamma * L)", "Gadre et al. 2024, over-training and downstream error"),
):
    laws.LAWS.setdefault(_law.name, _law)


# --- columns ------------------------------------------------------------------------------------

def kind_of(column: str) -> str | None:
    """The metric kind a column name implies ('next_verse_acc' -> 'acc'), or None."""
    name = column.lower()
    for suffix, kind in KIND_SUFFIXES:
        if name == suffix or name.endswith("_" + suffix):
            return kind
    return None


def detect_metric_columns(columns, exclude=()) -> dict[str, str]:
    """Auto-detected metric columns -> kind: names ending in _acc, _acc_norm, _err, _bleu, _chrf, _ce."""
    out = {}
    for col in columns:
        col = str(col)
        if col in exclude:
            continue
        kind = kind_of(col)
        if kind is not None:
            out[col] = kind
    return out


def parse_metric_spec(spec: str, columns) -> tuple[str, str]:
    """'COL' or 'COL:KIND' -> (column, kind); ValueError with the fix when it cannot be resolved."""
    col, _, kind = spec.partition(":")
    if col not in set(map(str, columns)):
        raise ValueError(f"--metric-col {spec!r}: no column {col!r}; available: {', '.join(map(str, columns))}")
    if kind:
        if kind not in KINDS:
            raise ValueError(f"--metric-col {spec!r}: kind must be one of {', '.join(KINDS)}")
        return col, kind
    kind = kind_of(col) or next((k for k in ("bleu", "chrf", "acc", "err") if k in col.lower()), None)
    if kind is None:
        raise ValueError(f"--metric-col {spec!r}: cannot tell the metric kind from the name; write "
                         f"{col}:KIND with KIND one of {', '.join(KINDS)}")
    return col, kind


def task_of(column: str) -> str:
    """'next_verse_acc_norm' -> 'next_verse' (the prefix before the metric suffix)."""
    for suffix, _ in KIND_SUFFIXES:
        m = re.fullmatch(rf"(.*)_{suffix}", column, flags=re.IGNORECASE)
        if m:
            return m.group(1)
    return column


# --- the support rule ---------------------------------------------------------------------------

def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rho = spearmanr(x, y).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def gain_threshold(kind: str, chance: float | None, n_items: float | None) -> float:
    """How far the best value must beat chance (see the module docstring)."""
    if kind in ("acc", "err"):
        se = 0.0
        if chance is not None and n_items and n_items > 0:
            p = chance if kind == "acc" else 1.0 - chance
            se = math.sqrt(max(p * (1 - p), 0.0) / n_items)
        return max(ACC_MIN_GAIN, SE_MULT * se)
    if kind == "bleu":
        return BLEU_MIN_GAIN
    if kind == "chrf":
        return CHRF_MIN_GAIN
    return 0.0


def support(progress: ArrayLike, value: ArrayLike, kind: str, chance: float | None = None,
            n_items: float | None = None) -> dict:
    """Whether (progress, value) supports a law; `progress` grows as training helps (-loss, log D_p).

    Returns {"supported": bool, "reason": str, "checks": {...}} (the rule is in the module doc).
    """
    x, y = np.asarray(progress, dtype=float), np.asarray(value, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    higher_better = kind in ("acc", "bleu", "chrf")
    good = y if higher_better else -y
    checks: dict = {"n_points": int(len(y)), "n_distinct": int(len(np.unique(np.round(x, 9))))}
    if checks["n_points"] < MIN_POINTS or checks["n_distinct"] < MIN_DISTINCT:
        return {"supported": False, "status": "not enough data", "checks": checks,
                "reason": f"{checks['n_points']} runs at {checks['n_distinct']} distinct values; a law needs "
                          f">= {MIN_POINTS} runs at >= {MIN_DISTINCT} values"}
    rho = _spearman(x, good)
    checks["spearman"] = rho
    threshold = gain_threshold(kind, chance, n_items)
    if kind == "acc":
        baseline = chance if chance is not None else float(y.min())
        gain = float(y.max()) - baseline
    elif kind == "err":
        baseline = (1.0 - chance) if chance is not None else float(y.max())
        gain = baseline - float(y.min())
    elif kind == "bleu":
        baseline, gain = 0.0, float(y.max())
    elif kind == "chrf":
        baseline, gain = float(y.min()), float(np.ptp(y))
    else:  # ce: relative fall over the range
        baseline = float(y.max())
        gain = float(np.ptp(y)) / abs(baseline) if baseline else 0.0
        threshold = CE_MIN_REL_GAIN
    checks |= {"baseline": baseline, "baseline_is_chance": chance is not None or kind == "bleu",
               "gain": gain, "gain_threshold": threshold}
    end = x >= x.max() - 1e-12
    drop = float(good.max() - good[end].mean())
    drop_tol = max(threshold * (abs(baseline) if kind == "ce" else 1.0), DROP_FRACTION * float(np.ptp(good)))
    checks |= {"drop_at_end": drop, "drop_tolerance": drop_tol}
    reasons = []
    if gain < threshold:
        what = "chance" if checks["baseline_is_chance"] else "the worst run"
        reasons.append(f"flat: best improvement over {what} {gain:.3g} < {threshold:.3g}")
    if rho < SPEARMAN_MIN:
        reasons.append(f"no monotone trend: Spearman rho {rho:.2f} < {SPEARMAN_MIN} in the expected direction")
    if drop > drop_tol:
        reasons.append(f"non-monotone: falls by {drop:.3g} (> {drop_tol:.3g}) at the most-trained point")
    if reasons:
        return {"supported": False, "status": "not supported", "checks": checks, "reason": "; ".join(reasons)}
    return {"supported": True, "status": "ok", "checks": checks, "reason": "monotone and above chance"}


# --- fitting ------------------------------------------------------------------------------------

def _summary(names, point, samples: np.ndarray, level: float) -> tuple[dict, dict]:
    params = {n: float(v) for n, v in zip(names, point)}
    if samples.size == 0 or np.isfinite(samples).all(axis=1).sum() < 2:
        return params, {n: [None, None] for n in names}
    good = samples[np.isfinite(samples).all(axis=1)]
    lo, hi = percentile_interval(good, level)
    return params, {n: [float(a), float(b)] for n, a, b in zip(names, lo, hi)}


def _residuals(y: np.ndarray, pred: np.ndarray) -> dict:
    r = pred - y
    return {"rmse": float(np.sqrt(np.mean(r * r))), "mean_abs_error": float(np.mean(np.abs(r)))}


def _report(law, point: np.ndarray, samples: np.ndarray, options: FitOptions, residuals: dict, n_points: int,
            **data_range) -> dict:
    """A fitted law's entry in fit.json: point estimate, bootstrap intervals and samples, fit quality,
    and what the reliability check reads (observed ranges, the optimiser's box, bootstrap counts)."""
    params, intervals = _summary(law.param_names, point, samples, options.level)
    return {"law": law.name, "form": law.form, "reference": law.reference, "inputs": list(law.inputs),
            "param_names": list(law.param_names), "params": params, "intervals": intervals,
            "samples": samples.tolist(), "residuals": residuals, "n_points": int(n_points), **data_range}


def _boot_counts(boot: np.ndarray, too_few: np.ndarray) -> dict:
    """How many refits ran and failed; resamples of too few runs are not refits (the reliability
    check counts failures among the others)."""
    failed = ~np.isfinite(boot).all(axis=1) & ~too_few
    return {"n_boot": int(len(boot)), "n_boot_too_few_runs": int(too_few.sum()), "n_boot_failed": int(failed.sum())}


def _bootstrap_lm(fun, theta: np.ndarray, n: int, lo: np.ndarray, hi: np.ndarray, options: FitOptions,
                  seed: int) -> tuple[np.ndarray, dict]:
    """Refits from `theta` on `options.n_boot` resamples of the n runs (rows of parameters) and their
    counts; NaN rows for resamples of fewer than MIN_DISTINCT runs, which fit anything."""
    weights = cluster_weights(np.arange(n), options.n_boot, options.rng(seed))
    boot, _ = _multi_fit(fun, theta, n, weights, lo, hi)
    too_few = (weights > 0).sum(axis=1) < MIN_DISTINCT
    boot[too_few] = np.nan
    return boot, _boot_counts(boot, too_few)


def _lm(fun, theta0: np.ndarray, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray,
        iters: int = 200, tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt for many small problems at once (one per row of theta0 / weights).

    fun(theta (B, p)) -> residuals (B, n), Jacobian (B, n, p); weights (B, n) are bootstrap
    multiplicities (or ones). Parameters are clipped to [lo, hi] after each step. Vectorised over
    rows because 200 bootstrap refits through scipy cost seconds in call overhead alone, for
    3-parameter problems. Returns (theta (B, p), weighted sum of squares (B,), inf on failure).
    """
    theta = np.clip(np.array(theta0, dtype=float), lo, hi)
    b, p = theta.shape
    with np.errstate(all="ignore"):
        r, jac = fun(theta)
        cost = np.einsum("bn,bn->b", weights, r * r)
        lam = np.full(b, 1e-3)
        active = np.isfinite(cost)
        cost[~active] = np.inf
        eye = np.eye(p)
        for _ in range(iters):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            w, ri, ji = weights[idx], r[idx], jac[idx]
            jtw = ji.transpose(0, 2, 1) * w[:, None, :]
            jtj = jtw @ ji
            grad = np.einsum("bpn,bn->bp", jtw, ri)
            damp = lam[idx, None, None] * (eye * np.maximum(np.einsum("bii->bi", jtj), 1e-12)[:, :, None])
            try:
                step = np.linalg.solve(jtj + damp, -grad[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = -grad * 1e-3
            cand = np.clip(theta[idx] + step, lo, hi)
            rc, jc = fun(cand)
            cc = np.einsum("bn,bn->b", w, rc * rc)
            better = np.isfinite(cc) & (cc <= cost[idx])
            gain = np.where(better, (cost[idx] - cc) / np.maximum(cost[idx], 1e-300), 0.0)
            upd = idx[better]
            theta[upd], r[upd], jac[upd], cost[upd] = cand[better], rc[better], jc[better], cc[better]
            lam[idx] = np.where(better, lam[idx] * 0.3, lam[idx] * 10.0)
            converged = (better & (gain < tol)) | (lam[idx] > 1e10) | (np.abs(step).max(axis=1) < 1e-12)
            active[idx[converged]] = False
    return theta, cost


def _best_of(theta: np.ndarray, cost: np.ndarray, problems: int, starts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per problem, the start with the lowest cost: rows are laid out problem-major."""
    theta = theta.reshape(problems, starts, -1)
    cost = cost.reshape(problems, starts)
    best = np.argmin(np.where(np.isfinite(cost), cost, np.inf), axis=1)
    out = theta[np.arange(problems), best].copy()
    out_cost = cost[np.arange(problems), best]
    out[~np.isfinite(out_cost)] = np.nan
    return out, out_cost


def _multi_fit(fun_of, starts: np.ndarray, n: int, weights: np.ndarray | None, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Fit every weight row (default: one row of ones) from every start; best start per row."""
    weights = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=float)
    problems, k = weights.shape[0], len(starts)
    theta0 = np.tile(starts, (problems, 1))
    w = np.repeat(weights, k, axis=0)
    theta, cost = _lm(fun_of, theta0, w, np.asarray(lo, float), np.asarray(hi, float))
    return _best_of(theta, cost, problems, k)


# Err(L): theta = (eps, log k', log gamma) with k' = k exp(-gamma Lc), Lc the mean loss, so the
# amplitude is O(error) instead of exp(gamma L) (which spans e^100 for gamma = 20, L = 5).
_GAMMA_GRID = np.geomspace(0.05, 20.0, 24)
_ERR_LO = np.array([-np.inf, -30.0, math.log(1e-3)])
_ERR_HI = np.array([np.inf, 5.0, math.log(50.0)])


def _error_model(z: np.ndarray, err: np.ndarray):
    def fun(t):
        amp, gamma = np.exp(t[:, 1:2]), np.exp(t[:, 2:3])
        e = amp * np.exp(-gamma * z[None, :])
        r = t[:, 0:1] - e - err[None, :]
        jac = np.stack([np.ones_like(r), -e, e * gamma * z[None, :]], axis=2)
        return r, jac
    return fun


def _error_starts(z: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Profile starts: for fixed gamma the law is linear in (eps, k'); the 4 best gammas."""
    starts, costs = [], []
    for g in _GAMMA_GRID:
        design = np.column_stack([np.ones_like(z), -np.exp(-g * z)])
        coef, *_ = np.linalg.lstsq(design, err, rcond=None)
        if coef[1] > 0:
            starts.append([coef[0], math.log(coef[1]), math.log(g)])
            costs.append(float(np.sum((design @ coef - err) ** 2)))
    if not starts:
        return np.array([[float(err.max()), math.log(max(float(np.ptp(err)), 1e-3)), 0.0]])
    return np.array(starts)[np.argsort(costs)[:4]]


def fit_error_of_loss(loss: ArrayLike, err: ArrayLike, options: FitOptions | None = None, salt: int = 0) -> dict:
    """Err(L) = eps - k exp(-gamma L) by least squares, bootstrap over runs; params eps, k, gamma."""
    options = options or FitOptions()
    loss, err = (np.asarray(v, dtype=float) for v in (loss, err))
    law = laws.LAWS["error_of_loss"]
    lc = float(np.mean(loss))
    z = loss - lc
    fun = _error_model(z, err)
    theta, cost = _multi_fit(fun, _error_starts(z, err), len(z), None, _ERR_LO, _ERR_HI)
    if not np.isfinite(cost[0]):
        raise FloatingPointError("every start failed")
    to_nat = lambda t: np.column_stack([t[:, 0], np.exp(t[:, 1] + np.exp(t[:, 2]) * lc), np.exp(t[:, 2])])
    samples, boot = np.empty((0, 3)), {}
    if options.n_boot:
        samples, boot = _bootstrap_lm(fun, theta, len(z), _ERR_LO, _ERR_HI, options, 5000 + salt)
        samples = to_nat(samples)
    point = to_nat(theta)[0]
    # The optimiser's box in natural units: gamma, and the amplitude at the mean loss it optimises.
    bounds = {"gamma": np.exp([_ERR_LO[2], _ERR_HI[2]]).tolist(), "k_at_mean_loss": np.exp([_ERR_LO[1], _ERR_HI[1]]).tolist()}
    return _report(law, point, samples, options, _residuals(err, error_of_loss(loss, *point)), len(loss),
                   loss_range=[float(loss.min()), float(loss.max())], value_range=[float(err.min()), float(err.max())],
                   loss_center=lc, bounds=bounds, bootstrap=boot)


# BLEU(D_p): theta = (a = log A, alpha, beta); for fixed beta, BLEU^(1/beta) = a + alpha log D_p is
# a line, which gives one start per beta.
_BETA_STARTS = (0.5, 1.0, 1.5, 2.0, 3.0)
_BLEU_LO = np.array([-np.inf, 1e-6, 0.05])
_BLEU_HI = np.array([np.inf, 10.0, 10.0])


def _bleu_model(x: np.ndarray, y: np.ndarray):
    def fun(t):
        arg = t[:, 0:1] + t[:, 1:2] * x[None, :]
        pos = arg > 0
        safe = np.where(pos, arg, 1.0)
        f = np.where(pos, safe ** t[:, 2:3], 0.0)
        d_arg = np.where(pos, t[:, 2:3] * safe ** (t[:, 2:3] - 1.0), 0.0)
        jac = np.stack([d_arg, d_arg * x[None, :], np.where(pos, f * np.log(safe), 0.0)], axis=2)
        return f - y[None, :], jac
    return fun


def _bleu_starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    starts = []
    for beta in _BETA_STARTS:
        coef = np.polyfit(x, np.maximum(y, 0.0) ** (1.0 / beta), 1)
        if coef[0] > 0:
            starts.append([coef[1], coef[0], beta])
    return np.array(starts) if starts else np.array([[1.0 - 0.1 * float(x.min()), 0.1, 1.0]])


def fit_bleu_tokens(tokens: ArrayLike, bleu: ArrayLike, options: FitOptions | None = None, salt: int = 0) -> dict:
    """BLEU(D_p) = (log(A D_p^alpha))^beta by least squares on BLEU, bootstrap over runs."""
    options = options or FitOptions()
    d, y = (np.asarray(v, dtype=float) for v in (tokens, bleu))
    x = np.log(d)
    law = laws.LAWS["bleu_tokens"]
    fun = _bleu_model(x, y)
    theta, cost = _multi_fit(fun, _bleu_starts(x, y), len(x), None, _BLEU_LO, _BLEU_HI)
    if not np.isfinite(cost[0]):
        raise FloatingPointError("every start failed")
    with np.errstate(over="ignore"):
        to_nat = lambda t: np.column_stack([np.exp(t[:, 0]), t[:, 1], t[:, 2]])
    samples, counts = np.empty((0, 3)), {}
    if options.n_boot:
        boot, counts = _bootstrap_lm(fun, theta, len(x), _BLEU_LO, _BLEU_HI, options, 6000 + salt)
        with np.errstate(over="ignore"):
            samples = to_nat(boot)
    point = to_nat(theta)[0]
    bounds = {n: [float(_BLEU_LO[i]), float(_BLEU_HI[i])] for i, n in ((1, "alpha"), (2, "beta"))}
    return _report(law, point, samples, options, _residuals(y, bleu_tokens(d, *point)), len(y),
                   tokens_range=[float(d.min()), float(d.max())], value_range=[float(y.min()), float(y.max())],
                   bounds=bounds, bootstrap=counts)


def fit_downstream_ce(tokens: ArrayLike, ce: ArrayLike, options: FitOptions | None = None, salt: int = 0) -> dict:
    """L(D_p) = E + A/D_p^alpha with the loss-law machinery: Huber on log L, grid of starts,
    bootstrap refits (scaling_cli.fit.robust)."""
    options = options or FitOptions()
    d, y = (np.asarray(v, dtype=float) for v in (tokens, ce))
    if not (y > 0).all():
        raise ValueError("cross-entropy values must be > 0 (the law is fitted on log L)")
    law = laws.LAWS["downstream_ce"]
    x = np.log(d)[:, None]
    fit = robust.fit_lse(x, np.log(y), robust.lse_grid(x, np.log(y)))
    to_params = lambda t: np.stack([np.exp(np.atleast_2d(t)[:, 2]), np.exp(np.atleast_2d(t)[:, 0]),
                                    np.atleast_2d(t)[:, 1]], axis=1)
    samples, counts = np.empty((0, 3)), {}
    if options.n_boot:
        weights = cluster_weights(np.arange(len(y)), options.n_boot, options.rng(7000 + salt))
        samples = to_params(robust.refit_many(fit.optima[: options.boot_starts], x, np.log(y), weights))
        counts = _boot_counts(samples, np.zeros(len(samples), dtype=bool))  # the Huber fit takes any resample
    point = to_params(fit.theta)[0]
    return _report(law, point, samples, options, _residuals(y, downstream_ce(d, *point)), len(y),
                   tokens_range=[float(d.min()), float(d.max())], value_range=[float(y.min()), float(y.max())],
                   bounds={"alpha": list(robust.EXPONENT_BOUNDS)}, bootstrap=counts)


_FITTERS = {"error_of_loss": fit_error_of_loss, "bleu_tokens": fit_bleu_tokens, "downstream_ce": fit_downstream_ce}


def fit_metric(column: str, kind: str, runs, options: FitOptions, chance: float | None = None,
               n_items: float | None = None, salt: int = 0) -> dict:
    """One metric column of a runs frame (canonical columns params, tokens, flops, loss): the
    support verdict and, where supported, its law (per model-size group for the D_p laws)."""
    law = LAW_OF_KIND[kind]
    base = {"column": column, "kind": kind, "law": law, "form": laws.LAWS[law].form,
            "reference": laws.LAWS[law].reference, "chance": chance, "n_items": n_items}
    y_all = np.asarray(runs[column], dtype=float)
    if kind in ("acc", "err"):
        loss = np.asarray(runs["loss"], dtype=float)
        ok = np.isfinite(loss) & np.isfinite(y_all)
        loss, y = loss[ok], y_all[ok]
        verdict = support(-loss, y, kind, chance, n_items)
        entry = base | {"driver": "loss", "status": verdict["status"], "reason": verdict["reason"],
                        "support": verdict, "points": {"loss": loss.tolist(), "value": y.tolist(),
                                                       "flops": np.asarray(runs["flops"], float)[ok].tolist()}}
        if not verdict["supported"]:
            return entry
        err = y if kind == "err" else 1.0 - y
        try:
            fitted = fit_error_of_loss(loss, err, options, salt)
        except (FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:
            return entry | {"status": "failed", "reason": f"fit failed: {exc}"}
        entry |= fitted | {"fits": "error = 1 - accuracy" if kind == "acc" else "error"}
        entry["reliable"], entry["reasons"] = downstream_reliability.assess(entry)
        return entry
    params = np.asarray(runs["params"], dtype=float)
    tokens = np.asarray(runs["tokens"], dtype=float)
    ok = np.isfinite(y_all) & np.isfinite(tokens) & np.isfinite(params)
    labels = cluster_log(np.where(ok, params, np.nan), DEFAULT_REL_TOL)
    centers = group_centers(params, labels)
    groups, skipped = [], []
    for g, center in sorted(centers.items(), key=lambda kv: -int((labels == kv[0]).sum())):
        sel = labels == g
        d, y = tokens[sel], y_all[sel]
        verdict = support(np.log(d), y, kind, chance, n_items)
        item = {"model_params": center, "status": verdict["status"], "reason": verdict["reason"], "support": verdict,
                "points": {"tokens": d.tolist(), "value": y.tolist(),
                           "flops": np.asarray(runs["flops"], float)[sel].tolist(),
                           "loss": np.asarray(runs["loss"], float)[sel].tolist()}}
        if verdict["supported"]:
            try:
                item |= _FITTERS[law](d, y, options, salt + g)
                item["reliable"], item["reasons"] = downstream_reliability.assess(item)
            except (FloatingPointError, ValueError, np.linalg.LinAlgError) as err:
                item |= {"status": "failed", "reason": f"fit failed: {err}"}
            groups.append(item)
        else:
            skipped.append(item)
    entry = base | {"driver": "tokens", "groups": groups, "skipped_groups": skipped,
                    "group_rel_tol": DEFAULT_REL_TOL}
    fitted = [g for g in groups if g["status"] == "ok"]
    if fitted:
        return entry | {"status": "ok", "reason": f"fitted at {len(fitted)} model size(s)",
                        "reliable": all(g["reliable"] for g in fitted)}
    statuses = [g["status"] for g in skipped + groups]
    status = "not supported" if "not supported" in statuses else "not enough data"
    every = skipped + groups
    why = f"N≈{every[0]['model_params']:.3g}: {every[0]['reason']}" if every else "no runs with the metric"
    if len(every) > 1:
        why += f" (and {len(every) - 1} other model size(s))"
    return entry | {"status": status,
                    "reason": f"{laws.LAWS[law].form} is fitted at fixed model size (Isik et al.); {why}"}


def fit_downstream(runs, metrics: dict[str, dict], options: FitOptions | None = None) -> dict:
    """Every metric column: `metrics` maps column -> {"kind", "chance", "n_items"} (table.py)."""
    options = options or FitOptions()
    if not metrics:
        return {"status": "skipped", "reason": "no metric columns (columns ending in _acc, _acc_norm, _err, "
                                               "_bleu, _chrf, _ce, or --metric-col)", "metrics": {}}
    out = {}
    for i, (col, info) in enumerate(metrics.items()):
        out[col] = fit_metric(col, info["kind"], runs, options, info.get("chance"), info.get("n_items"), salt=10 * i)
    return {"status": "ok", "rule": SUPPORT_RULE, "metrics": out}


# --- prediction ---------------------------------------------------------------------------------

def _samples(entry: dict) -> np.ndarray:
    s = np.asarray(entry.get("samples", []), dtype=float)
    return s[np.isfinite(s).all(axis=1)] if s.ndim == 2 and len(s) else np.empty((0, 3))


def _withheld(law, fitted: dict, where: str = "") -> dict:
    """No value for a law flagged unreliable (downstream_reliability.py): a number from a degenerate
    fit is a claim the fit cannot back."""
    return {"status": "unreliable", "value": None, "interval": [None, None], "law": law.name, "form": law.form,
            "reason": f"{law.form}{where} is flagged unreliable: " + "; ".join(fitted.get("reasons", []))}


def predict_metric(entry: dict, params: float, tokens: float, loss: float | None,
                   loss_samples: np.ndarray | None, level: float) -> dict:
    """A metric at the target with its interval; {"status": ..., "reason": ...} when it cannot,
    status "unreliable" (value withheld) when the law that would answer is flagged unreliable."""
    kind = entry["kind"]
    if entry.get("status") != "ok":
        return {"status": entry.get("status"), "reason": entry.get("reason"), "value": None, "interval": [None, None]}
    law = laws.LAWS[entry["law"]]
    if entry["driver"] == "loss":
        if loss is None:
            return {"status": "no loss", "reason": "the fit has no loss law for stage 1", "value": None,
                    "interval": [None, None]}
        if not entry.get("reliable", True):
            return _withheld(law, entry)
        to_metric = lambda e: metric_of_error(kind, e)
        p = entry["params"]
        value = float(to_metric(error_of_loss(loss, p["eps"], p["k"], p["gamma"])))
        s2 = _samples(entry)
        interval = [None, None]
        if len(s2):
            l1 = np.asarray(loss_samples if loss_samples is not None and np.isfinite(loss_samples).sum() >= 2
                            else [loss], dtype=float)
            l1 = l1[np.isfinite(l1)]
            with np.errstate(all="ignore"):
                draws = to_metric(error_of_loss(l1[:, None], s2[None, :, 0], s2[None, :, 1], s2[None, :, 2]))
            interval = finite_interval(draws, level)
        return {"status": "ok", "value": value, "interval": interval, "law": law.name, "form": law.form,
                "stages": "compute -> loss (fit's loss law) -> " + ("accuracy = 1 - Err(L)" if kind == "acc" else "Err(L)"),
                "loss": loss, "extrapolation": loss < entry["loss_range"][0]}
    centers = {i: g["model_params"] for i, g in enumerate(entry["groups"]) if g.get("status") == "ok"}
    i = nearest_group(params, centers, entry.get("group_rel_tol", DEFAULT_REL_TOL))
    if i is None:
        sizes = ", ".join(f"{c:.3g}" for c in centers.values())
        return {"status": "no matching size", "value": None, "interval": [None, None],
                "reason": f"{law.form} is fitted per model size (N = {sizes}); none matches N = {params:.3g}"}
    g = entry["groups"][i]
    if not g.get("reliable", True):
        return _withheld(law, g, f" at N≈{g['model_params']:.3g}") | {"model_params": g["model_params"]}
    p = g["params"]
    value = float(law.func(tokens, *(p[n] for n in law.param_names)))
    s = _samples(g)
    interval = [None, None]
    if len(s):
        with np.errstate(all="ignore"):
            interval = finite_interval(law.func(tokens, s[:, 0], s[:, 1], s[:, 2]), level)
    return {"status": "ok", "value": value, "interval": interval, "law": law.name, "form": law.form,
            "model_params": g["model_params"], "extrapolation": tokens > g["tokens_range"][1]}


def predict_all(report: dict, params: float, tokens: float, loss: float | None, loss_samples: np.ndarray | None,
                level: float) -> dict[str, dict]:
    """predict_metric for every metric of report["downstream"] (empty when there is none)."""
    block = report.get("downstream") or {}
    return {col: predict_metric(entry, params, tokens, loss, loss_samples, level)
            for col, entry in (block.get("metrics") or {}).items()}
