"""Backtest-calibrated intervals: how wrong the law was on runs it did not see, scaled to the target.

The bootstrap measures how much a law's parameters move when the runs are resampled; it cannot see
that the law's form, or the runs it was fitted on, are off. The backtests can: refitted without the
largest model size (or the largest compute), the law missed those runs by a measured amount at a
measured distance. This module turns those misses into an interval at any target, split-conformal
style (Vovk et al. 2005; Lei et al. 2018), with the score normalised by distance:

    score_i = |log(predicted_i / observed_i)| / s(f_i),   s(f) = 1 + ln f   (f >= 1),
    f = target compute / largest compute the law was fitted on,

    interval at a target at distance f:  predicted * exp(+-q * s(f)),
    q = the ceil((n + 1) * level)-th smallest of the n scores.

Why 1 + ln f: a law fitted on a finite range errs by an offset (scatter and misfit at the edge of
the data, the "1") plus an error in its slope, whose effect on log L grows linearly in the log of
the distance (the "ln f"); at the fitted range's edge (f = 1) the interval is the backtest's own
spread, at 10x it is 3.3x wider, at 1e9x (a 7B model from CPU proxies) 22x. The rule is a model of
how error grows, not a law of nature; bench_fit_extrapolation.py measures the coverage it gives at
10x, 30x and 100x on synthetic grids, and every backtest reports the coverage of its own held-out
runs (nested: the calibration comes from the training runs' own backtests).

With fewer than ceil((n + 1) * level) scores the conformal quantile is undefined (n < 9 at 90%);
the largest score is used instead, times SMALL_N_FACTOR, and the calibration says so. Pure numpy;
no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

RULE = "half-width q * (1 + ln f), f = target compute / largest fitted compute (>= 1); q from backtest misses"
# Too few backtest misses for a conformal quantile: the largest miss, widened by this much.
SMALL_N_FACTOR = 1.5


def distance_scale(distance: ArrayLike) -> np.ndarray:
    """s(f) = 1 + ln(max(f, 1)): how much wider the interval is at distance f than at the data's edge."""
    return 1.0 + np.log(np.maximum(np.asarray(distance, dtype=float), 1.0))


def scores(predicted: ArrayLike, observed: ArrayLike, distance: ArrayLike) -> np.ndarray:
    """Distance-normalised absolute log errors of held-out runs (NaN predictions dropped)."""
    p, o, f = (np.asarray(v, dtype=float) for v in (predicted, observed, distance))
    ok = np.isfinite(p) & np.isfinite(o) & (p > 0) & (o > 0) & np.isfinite(f)
    return np.abs(np.log(p[ok] / o[ok])) / distance_scale(f[ok])


def calibrate(score_values: ArrayLike, level: float) -> dict:
    """The calibration block of fit.json: {q, n, level, method, rule}; q is None without scores."""
    s = np.sort(np.asarray(score_values, dtype=float))
    s = s[np.isfinite(s)]
    n = len(s)
    out = {"n": int(n), "level": float(level), "rule": RULE}
    if n == 0:
        return out | {"q": None, "method": "none", "note": "no backtest could score this law"}
    k = math.ceil((n + 1) * level)
    if k <= n:
        return out | {"q": float(s[k - 1]), "method": "conformal",
                      "note": f"the {k}-th smallest of {n} distance-normalised backtest misses"}
    return out | {"q": float(s[-1] * SMALL_N_FACTOR), "method": "largest miss",
                  "note": f"only {n} backtest misses (a conformal {level:.0%} quantile needs {k}): the largest "
                          f"x {SMALL_N_FACTOR:g}"}


def interval(point: float, distance: float, calibration: dict | None) -> list[float | None]:
    """[lo, hi] around a point prediction at `distance`; [None, None] without a calibration."""
    q = (calibration or {}).get("q")
    if q is None or not np.isfinite(point) or point <= 0:
        return [None, None]
    half = float(q * distance_scale(distance))
    return [float(point * np.exp(-half)), float(point * np.exp(half))]


def union(a: list, b: list) -> list[float | None]:
    """The smallest interval containing both (a side that is None in one is taken from the other)."""
    lo = [v for v in (a[0], b[0]) if v is not None]
    hi = [v for v in (a[1], b[1]) if v is not None]
    return [min(lo) if lo else None, max(hi) if hi else None]
