"""Is a fitted downstream law fit to be believed? Flags for degenerate fits, with reasons.

The loss laws get these flags from reliability.py; this module does the same for the downstream
laws of downstream.py: one BLEU/chrF(D_p) or CE(D_p) law per model-size group, and one Err(L) law
per metric. `assess(fitted)` returns (reliable, reasons) for one fitted law (a group, or the
error_of_loss entry); downstream.fit_metric stores them (`reliable`, `reasons`), `fit` prints
them and `predict` withholds the value and interval of a law flagged unreliable.

Flags (thresholds shared with reliability.py where the question is the same):
- a point estimate at (within BOUND_MARGIN of) its optimiser box bound: the optimiser stopped on
  the box, not at a minimum, so the value says where the box is rather than what the data say.
  The box is stored in each fitted law (`bounds`, natural units); for Err(L) the bounded
  quantities are gamma and the amplitude at the mean loss, k * exp(-gamma * L_mean), the
  parameters the fitter optimises (in log space; a 1% margin in natural units is 0.01 there);
- "not identified": at least NOT_IDENTIFIED_SHARE of the bootstrap refits ended at a bound.
  Then the lower or upper end of the 90% percentile interval is the box itself, so the interval
  the table prints is cut by the optimiser, not by the data: the parameter's extent (and every
  extrapolation that uses it) is unknown. We flag this rather than only a point at a bound
  because a law on 4-6 runs can have an interior point estimate on a ridge that the resampled
  data leave at once (the tiny default's chrF law: alpha 0.019 with interval [1e-6, 0.033]).
  Checked on BLEU drawn from its own law (beta 1.5; 6 runs, noise 0.3 BLEU; 200 refits): 3 of 15
  seeds flagged, each with a fitted beta 2-6x the truth (3.1, 4.8, 9.0), none of the 12 others;
- downstream_ce: E collapsed to 0 (< E_COLLAPSED of the smallest observed CE) or not below the
  smallest observed CE; E's interval wider than E_UNIDENTIFIED of [0, smallest CE], or reaching
  0 (E = exp(e) has no box, but 0 is its bound: the same "not identified" as above); alpha
  outside CE_EXPONENT_RANGE;
- error_of_loss: eps (the error at infinite loss: chance error) outside EPS_RANGE = [0, 1] by
  more than EPS_NOISE_RMSE residual RMSEs (an error is a fraction; a point that far outside cannot
  be the scatter of the errors), or eps not identified: its interval wider than EPS_UNIDENTIFIED,
  the whole range an error can take (a step-like or straight-line Err(L) leaves eps and k free
  to trade off). A law that only gets near 1 within noise is not flagged;
- more than MAX_BOOT_FAILED of the bootstrap refits failed. Resamples with fewer than 3 distinct
  runs are not refitted by design (they fit any 3-parameter law exactly) and do not count.

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit.reliability import BOUND_MARGIN, E_COLLAPSED, E_UNIDENTIFIED, MAX_BOOT_FAILED, floor_reasons

# The lower tail of a 90% percentile interval: this share of refits at a bound puts an interval
# endpoint on the box.
NOT_IDENTIFIED_SHARE = 0.05

# alpha of CE(D_p) = E + A / D_p^alpha is the data exponent of a loss at fixed model size. Data
# exponents of LM losses fall in 0.1..0.4 (Kaplan et al. 2020: 0.095; Hoffmann et al. 2022: 0.28;
# Besiroglu et al. 2024: 0.37); alpha > 1 says the reducible CE falls faster than 1/D_p, which no
# published fit shows, and comes with an A of 1e5-1e7 compensating it (a steep drop into a floor
# fitted to 4 runs). Tighter than reliability.EXPONENT_RANGE (0.02..2), which also covers the
# parameter exponent of the loss laws. The lower end is reliability's: below 0.02 the power term
# is a second constant.
CE_EXPONENT_RANGE = (0.02, 1.0)

# An error rate is a fraction: Err(L) = eps - k exp(-gamma L) tends to eps as L grows, so eps is
# the error of a model that has learnt nothing, 1 - chance.
EPS_RANGE = (0.0, 1.0)
# "Beyond noise": 2 residual RMSEs of the fitted errors (about a 95% band of the scatter).
EPS_NOISE_RMSE = 2.0
# An interval for eps wider than [0, 1] says nothing about where chance error lies.
EPS_UNIDENTIFIED = 1.0


def _at_bound(value: float, lo: float, hi: float) -> bool:
    # Every bounded quantity here is positive in natural units (exponents, amplitudes).
    return value <= lo * (1 + BOUND_MARGIN) or value >= hi * (1 - BOUND_MARGIN)


def _bound_reasons(name: str, point: float, draws: np.ndarray, lo: float, hi: float) -> list[str]:
    box = f"(optimiser box {lo:.3g}..{hi:.3g})"
    if _at_bound(point, lo, hi):
        end = "lower" if point <= lo * (1 + BOUND_MARGIN) else "upper"
        return [f"{name} = {point:.4g} is at its {end} bound {box}"]
    if len(draws):
        low, high = float(np.mean(draws <= lo * (1 + BOUND_MARGIN))), float(np.mean(draws >= hi * (1 - BOUND_MARGIN)))
        if max(low, high) >= NOT_IDENTIFIED_SHARE:
            end, bound = ("lower", lo) if low >= high else ("upper", hi)
            return [f"{name} is not identified: {max(low, high):.0%} of bootstrap refits went to its {end} bound "
                    f"{bound:.3g} {box}, so its interval ends on the box, not the data"]
    return []


def _draws(fitted: dict) -> np.ndarray:
    s = np.asarray(fitted.get("samples") or [], dtype=float)
    return s[np.isfinite(s).all(axis=1)] if s.ndim == 2 and len(s) else np.empty((0, len(fitted["param_names"])))


def _bounded(fitted: dict) -> dict[str, tuple[float, np.ndarray, float, float]]:
    """name -> (point, bootstrap draws, lo, hi) of every quantity the optimiser kept in a box."""
    p, draws, names = fitted["params"], _draws(fitted), fitted["param_names"]
    col = {n: draws[:, i] for i, n in enumerate(names)}
    out = {}
    for name, (lo, hi) in (fitted.get("bounds") or {}).items():
        if name == "k_at_mean_loss":  # Err(L): the optimised amplitude k exp(-gamma L_mean)
            lc = fitted["loss_center"]
            with np.errstate(all="ignore"):
                point = p["k"] * np.exp(-p["gamma"] * lc)
                values = col["k"] * np.exp(-col["gamma"] * lc)
            out["k*exp(-gamma*L_mean)"] = (float(point), values, lo, hi)
        else:
            out[name] = (p[name], col[name], lo, hi)
    return out


def _ce_reasons(fitted: dict) -> list[str]:
    E, alpha = fitted["params"]["E"], fitted["params"]["alpha"]
    smallest = fitted["value_range"][0]
    lo, hi = fitted["intervals"]["E"]
    out = floor_reasons(E, [lo, hi], smallest, fixed=False, quantity="CE")
    if lo is not None and hi - lo <= E_UNIDENTIFIED * smallest and lo < E_COLLAPSED * smallest <= E:
        out.append(f"E is not identified: its interval {lo:.3g}..{hi:.3g} reaches 0 (< {E_COLLAPSED:.1%} of the "
                   "smallest observed CE), so the data are consistent with no floor at all")
    if not CE_EXPONENT_RANGE[0] <= alpha <= CE_EXPONENT_RANGE[1] and not _at_bound(alpha, *fitted["bounds"]["alpha"]):
        out.append(f"alpha = {alpha:.4g} is outside the plausible range {CE_EXPONENT_RANGE[0]:g}..{CE_EXPONENT_RANGE[1]:g} "
                   f"(A = {fitted['params']['A']:.3g} compensates)")
    return out


def _error_reasons(fitted: dict) -> list[str]:
    eps = fitted["params"]["eps"]
    noise = EPS_NOISE_RMSE * fitted["residuals"]["rmse"]
    out = []
    if not EPS_RANGE[0] - noise <= eps <= EPS_RANGE[1] + noise:
        out.append(f"eps = {eps:.3g} is outside {EPS_RANGE[0]:g}..{EPS_RANGE[1]:g} by more than {EPS_NOISE_RMSE:g} "
                   f"residual RMSEs ({noise:.2g}): the error at high loss is a fraction (about 1 - chance)")
    lo, hi = fitted["intervals"]["eps"]
    if lo is not None and hi - lo > EPS_UNIDENTIFIED:
        out.append(f"eps is not identified by the data: its interval {lo:.3g}..{hi:.3g} is wider than "
                   f"{EPS_RANGE[0]:g}..{EPS_RANGE[1]:g}, so eps and k trade off")
    return out


def assess(fitted: dict) -> tuple[bool, list[str]]:
    """(reliable, reasons) of one fitted downstream law (a D_p group or the Err(L) entry), as
    downstream.py reports it; fits that are not "ok" are not assessed."""
    if fitted.get("status", "ok") != "ok":
        return False, [fitted.get("reason", "not fitted")]
    reasons: list[str] = []
    for name, (point, draws, lo, hi) in _bounded(fitted).items():
        reasons += _bound_reasons(name, point, draws, lo, hi)
    if fitted["law"] == "downstream_ce":
        reasons += _ce_reasons(fitted)
    elif fitted["law"] == "error_of_loss":
        reasons += _error_reasons(fitted)
    boot = fitted.get("bootstrap") or {}
    tried = boot.get("n_boot", 0) - boot.get("n_boot_too_few_runs", 0)
    if tried > 0 and boot.get("n_boot_failed", 0) > MAX_BOOT_FAILED * tried:
        reasons.append(f"{boot['n_boot_failed']} of {tried} bootstrap refits failed")
    return not reasons, reasons
