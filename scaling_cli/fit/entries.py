"""Pieces every fitted law's fit.json entry shares: "not enough data", interval summaries, residuals.

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit.bootstrap import percentile_interval


def not_enough(law: str, reason: str) -> dict:
    """The entry of a law that could not be fitted; every reader checks `status` first."""
    return {"law": law, "status": "not enough data", "reason": reason}


def summarize(names, point: np.ndarray, samples: np.ndarray, level: float) -> tuple[dict, dict]:
    """({name: point value}, {name: [lo, hi]}) from a point and bootstrap samples (rows)."""
    params = {n: float(v) for n, v in zip(names, point)}
    if samples.shape[0] == 0 or not np.isfinite(samples).any():
        return params, {n: [None, None] for n in names}
    lo, hi = percentile_interval(samples, level)
    return params, {n: [float(a), float(b)] for n, a, b in zip(names, lo, hi)}


def residual_stats(y: np.ndarray, pred_log: np.ndarray) -> dict:
    """Fit quality in log space and loss units; y and pred_log are log losses."""
    r = y - pred_log
    rel = np.expm1(-r)  # (pred - obs)/obs in loss units
    return {"rmse_log": float(np.sqrt(np.mean(r * r))),
            "rmse": float(np.sqrt(np.mean((np.exp(pred_log) - np.exp(y)) ** 2))),
            "mean_abs_rel_error": float(np.mean(np.abs(rel)))}
