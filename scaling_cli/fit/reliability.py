"""Is a fitted loss law fit to be believed? Flags for degenerate fits, with reasons.

A law whose parameters sit at their bounds, whose irreducible loss the data cannot place, or
whose compute-optimal allocation is physically implausible extrapolates nonsense however small
its residuals are. `assess(entry, ...)` returns (reliable, reasons); the pipeline stores them in
every loss-law entry of fit.json (`reliable`, `reasons`), `fit` prints them, and `predict`
withholds the allocation and the intervals of a law flagged unreliable.

Thresholds (each a judgement, stated so users can disagree):
- exponents (Chinchilla form alpha, beta) within 1% of the optimiser's bounds (robust.py:
  1e-4..5), or outside 0.02..2: fitted LM exponents fall in 0.05..0.8 (Kaplan et al. 2020:
  0.076/0.095 without E; Hoffmann et al. 2022: 0.34/0.28; Besiroglu et al. 2024: 0.35/0.37);
- E below 0.1% of the smallest observed loss (collapsed to 0: the power terms carry everything)
  or at/above it (a floor the runs already beat);
- E unidentified: its interval wider than half of [0, smallest loss] (the issue's example:
  E = 1.14 with 90% CI [0.05, 1.7]);
- the compute-optimal D/N at the largest fitted compute outside 1..1000 (Chinchilla: ~20;
  heavily over-trained production models: a few hundred to ~2000 tokens per parameter, but as a
  *compute-optimal* ratio values outside 1..1000 signal a degenerate fit, e.g. D/N = 6e-5);
- more than 10% of bootstrap refits failed.

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit import beta_n, family, laws, robust

EXPONENT_RANGE = (0.02, 2.0)
BOUND_MARGIN = 0.01
E_COLLAPSED = 1e-3
E_UNIDENTIFIED = 0.5
RATIO_RANGE = (1.0, 1000.0)
MAX_BOOT_FAILED = 0.10
# compute_only's exponent is in C, about half of the Chinchilla-form exponents.
COMPUTE_EXPONENT_RANGE = (0.01, 1.0)


def _exponent_reasons(name: str, value: float, sane: tuple[float, float]) -> list[str]:
    lo, hi = robust.EXPONENT_BOUNDS
    if value <= lo * (1 + BOUND_MARGIN) + 1e-12 or value >= hi * (1 - BOUND_MARGIN):
        return [f"{name} = {value:.3g} is at its bound ({lo:g}..{hi:g})"]
    if not sane[0] <= value <= sane[1]:
        return [f"{name} = {value:.3g} is outside the plausible range {sane[0]:g}..{sane[1]:g}"]
    return []


def floor_reasons(E: float, interval, min_loss: float, fixed: bool, quantity: str = "loss") -> list[str]:
    """Flags of an irreducible floor E (point and interval) against the smallest observed value of
    the `quantity` it bounds: the loss laws' E here, downstream CE(D_p)'s in downstream_reliability."""
    out = []
    if E < E_COLLAPSED * min_loss:
        out.append(f"E = {E:.3g} has collapsed to 0 (< {E_COLLAPSED:.1%} of the smallest {quantity} {min_loss:.3g})")
    elif E >= min_loss:
        out.append(f"E = {E:.4g} is not below the smallest observed {quantity} {min_loss:.4g}")
    if interval and interval[0] is not None and interval[1] - interval[0] > E_UNIDENTIFIED * min_loss:
        what = "its held-out profile" if fixed else "the data"
        out.append(f"E is not identified by {what}: {interval[0]:.3g}..{interval[1]:.3g} spans "
                   f"{(interval[1] - interval[0]) / min_loss:.0%} of [0, smallest {quantity}]")
    return out


def optimal_ratio(chin: np.ndarray, flops: float) -> float:
    """Compute-optimal D/N at `flops` of a Chinchilla-form parameter vector (E, A, B, alpha, beta)."""
    with np.errstate(all="ignore"):
        n_opt, d_opt = laws.chinchilla_optimum(flops, *chin)
    return float(d_opt / n_opt)


def ratio_reason(ratio: float, where: str) -> list[str]:
    if not np.isfinite(ratio) or not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:
        return [f"compute-optimal D/N = {ratio:.3g} {where} is outside the plausible {RATIO_RANGE[0]:g}..{RATIO_RANGE[1]:g}"]
    return []


def assess(entry: dict, min_loss: float, max_flops: float) -> tuple[bool, list[str]]:
    """(reliable, reasons) of a fitted loss-law entry; entries that are not "ok" are not assessed."""
    if entry.get("status") != "ok":
        return False, [entry.get("reason", "not fitted")]
    reasons: list[str] = []
    name = entry["law"]
    if name == "compute_only":
        for g in entry["groups"]:
            at = f" (D/N ≈ {g['M']:.3g})"
            reasons += [r + at for r in _exponent_reasons("alpha", g["params"]["alpha"], COMPUTE_EXPONENT_RANGE)]
            reasons += [r + at for r in floor_reasons(g["params"]["E"], g["intervals"]["E"], min_loss, False)]
        return not reasons, reasons
    if name == beta_n.NAME:
        return _assess_beta_n(entry, min_loss, max_flops)
    chin = family.entry_chinchilla(entry)
    E, _, _, alpha, beta = chin
    exps = [("eta", entry["params"]["eta"] * 2)] if name in family.TIED else [("alpha", alpha), ("beta", beta)]
    for label, value in exps:
        shown = "2*eta" if label == "eta" else label
        reasons += _exponent_reasons(shown, value, EXPONENT_RANGE)
    reasons += floor_reasons(E, entry["intervals"].get("E"), min_loss, name in family.FIXED_E)
    prof = entry.get("e_profile")
    if prof and not 0.02 < prof["E_over_min_loss"] < 0.98:
        reasons.append(f"the E profile chose the edge of its grid (E = {prof['E_over_min_loss']:.0%} of the smallest loss)")
    reasons += ratio_reason(optimal_ratio(chin, max_flops), "at the largest fitted compute")
    opt = entry.get("optimizer", {})
    if opt.get("n_boot") and opt.get("n_boot_failed", 0) > MAX_BOOT_FAILED * opt["n_boot"]:
        reasons.append(f"{opt['n_boot_failed']} of {opt['n_boot']} bootstrap refits failed")
    return not reasons, reasons


def _assess_beta_n(entry: dict, min_loss: float, max_flops: float) -> tuple[bool, list[str]]:
    """chinchilla_beta_n: its exponents (alpha, and beta(N) at both ends of the fitted sizes), gamma
    off its bounds, E's floor, and its compute-optimal D/N (found numerically) at the largest compute."""
    p = entry["params"]
    reasons = _exponent_reasons("alpha", p["alpha"], EXPONENT_RANGE)
    ends = entry.get("data_exponent", {})
    for where, value in (("smallest", ends.get("at_smallest_N")), ("largest", ends.get("at_largest_N"))):
        if value is not None:
            reasons += [r + f" (data exponent at the {where} N)" for r in _exponent_reasons("beta(N)", value, EXPONENT_RANGE)]
    lo, hi = beta_n.GAMMA_BOUNDS
    if not lo * (1 - BOUND_MARGIN) < p["gamma"] < hi * (1 - BOUND_MARGIN):
        reasons.append(f"gamma = {p['gamma']:.3g} is at its bound ({lo:g}..{hi:g})")
    reasons += floor_reasons(p["E"], entry["intervals"].get("E"), min_loss, False)
    reasons += ratio_reason(beta_n.optimal_ratio(p, max_flops), "at the largest fitted compute")
    opt = entry.get("optimizer", {})
    if opt.get("n_boot") and opt.get("n_boot_failed", 0) > MAX_BOOT_FAILED * opt["n_boot"]:
        reasons.append(f"{opt['n_boot_failed']} of {opt['n_boot']} bootstrap refits failed")
    return not reasons, reasons
