"""Backtest-calibrated intervals of the loss laws: conformal.py's rule fed by backtest.py's misses.

    cal = calibrate_law(backtests, "overtrain", level=0.9)     # fit.json laws.<law>.calibration
    cov = nested_coverage(n, d, c, loss, "overtrain", options, backtests)   # its own coverage

A law's calibration uses every run it missed in a backtest (the largest size held out, the
largest compute held out, and, with >= 5 sizes, the two largest sizes held out: the longest
distance a sweep can test), each at its own distance from the runs it was refitted on. The
coverage of that interval is measured the same way it will be used: for each hold-out, the
interval comes from backtests of its *training* runs only (a backtest within the backtest), and
the share of held-out runs inside it is reported; nothing a held-out run says reaches its own
interval. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit import backtest, conformal
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.fitset import FitSet


def misses(backtests: dict, law: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted, observed, distance) of every held-out run the law predicted, over all hold-outs."""
    p, o, f = [], [], []
    for info in backtests.values():
        score = info.get("scores", {}).get(law, {})
        if score.get("status") != "ok" or "predicted" not in score or "distance" not in info.get("runs", {}):
            continue
        p += list(score["predicted"])
        o += list(info["runs"]["loss"])
        f += list(info["runs"]["distance"])
    return np.asarray(p, dtype=float), np.asarray(o, dtype=float), np.asarray(f, dtype=float)


def calibrate_law(backtests: dict, law: str, level: float) -> dict:
    """conformal.calibrate on the law's backtest misses, with the hold-outs it used."""
    p, o, f = misses(backtests, law)
    cal = conformal.calibrate(conformal.scores(p, o, f), level)
    used = [h for h, info in backtests.items() if "predicted" in info.get("scores", {}).get(law, {})]
    return cal | {"holdouts": used, "max_distance": float(f.max()) if len(f) else None}


def two_sizes_fold(n, d, c, loss, options: FitOptions, laws: tuple[str, ...], fit_set: FitSet | None = None,
                   extra: backtest.DerivedPoints | None = None) -> dict:
    """The calibration-only hold-out of the two largest sizes ({} when the sweep has < 5 sizes)."""
    out = backtest.backtest(n, d, c, loss, options, laws=laws, holdouts=(backtest.TWO_SIZES,), extra=extra,
                            fit_set=fit_set)
    return out if not out[backtest.TWO_SIZES].get("reason") else {}


def nested_coverage(n, d, c, loss, law: str, options: FitOptions, backtests: dict, fit_set: FitSet | None = None,
                    extra: backtest.DerivedPoints | None = None) -> dict:
    """{hold-out: {coverage, n, intervals}} of the law's backtest-calibrated interval, each hold-out's
    interval calibrated on backtests of its own training runs."""
    n, d, c, loss = (np.asarray(v, dtype=float) for v in (n, d, c, loss))
    out = {}
    for holdout, info in backtests.items():
        score = info.get("scores", {}).get(law, {})
        if info.get("reason") or "predicted" not in score:
            continue
        test = backtest.holdout_mask(holdout, n, c)
        train = ~test
        inner = backtest.backtest(n[train], d[train], c[train], loss[train], options, laws=(law,), fit_set=fit_set,
                                  extra=backtest.subset_derived(extra, train))
        cal = calibrate_law(inner, law, options.level)
        pred = np.asarray(score["predicted"], dtype=float)
        obs = np.asarray(info["runs"]["loss"], dtype=float)
        dist = np.asarray(info["runs"]["distance"], dtype=float)
        iv = np.array([conformal.interval(p, f, cal) for p, f in zip(pred, dist)], dtype=float)
        has = np.isfinite(iv).all(axis=1)
        inside = (iv[has, 0] <= obs[has]) & (obs[has] <= iv[has, 1])
        out[holdout] = {"coverage": float(inside.mean()) if has.any() else None, "n": int(has.sum()),
                        "level": options.level, "intervals": iv.tolist(), "calibration_n": cal["n"],
                        "calibration_method": cal["method"]}
    return out
