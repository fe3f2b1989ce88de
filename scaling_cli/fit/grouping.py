"""Grouping runs that share a value up to rounding: compute buckets, M = D/N ratios, (N, D) cells.

Sweeps plan runs at exact budgets, but realised FLOPs and tokens differ by a few percent (step
counts are integers, attention FLOPs depend on shape). Values are therefore grouped in log space:
sorted, and a new group starts where the gap to the previous value exceeds `rel_tol` or the
group would span more than a factor (1 + rel_tol)^2.

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# Default relative gap that separates two groups: 10% (IsoFLOP budgets in a sweep are usually
# spaced by 2x or more, while the realised FLOPs of one budget scatter by a few percent).
DEFAULT_REL_TOL = 0.10


def cluster_log(values: ArrayLike, rel_tol: float = DEFAULT_REL_TOL) -> np.ndarray:
    """Integer group label per value (0, 1, ... in increasing order); NaN values get -1."""
    v = np.asarray(values, dtype=float)
    labels = np.full(v.shape, -1, dtype=int)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any():
        return labels
    idx = np.flatnonzero(ok)
    logs = np.log(v[idx])
    order = np.argsort(logs)
    sorted_logs = logs[order]
    gap, span = np.log1p(rel_tol), 2 * np.log1p(rel_tol)
    sorted_labels = np.zeros(len(order), dtype=int)
    label, first = 0, sorted_logs[0]
    for i in range(1, len(order)):
        # A new group at a gap, or when the group would span more than (1 + rel_tol)^2: without the
        # span cap a dense continuum of values would chain into one group covering decades.
        if sorted_logs[i] - sorted_logs[i - 1] > gap or sorted_logs[i] - first > span:
            label, first = label + 1, sorted_logs[i]
        sorted_labels[i] = label
    labels[idx[order]] = sorted_labels
    return labels


def group_centers(values: ArrayLike, labels: np.ndarray) -> dict[int, float]:
    """Geometric mean of the values in each group label (>= 0)."""
    v = np.asarray(values, dtype=float)
    return {int(g): float(np.exp(np.mean(np.log(v[labels == g])))) for g in np.unique(labels) if g >= 0}


def nearest_group(value: float, centers: dict[int, float], rel_tol: float = DEFAULT_REL_TOL) -> int | None:
    """The group whose center is nearest to value in log space, if within a factor 1 + 2*rel_tol."""
    if not centers:
        return None
    best = min(centers, key=lambda g: abs(np.log(value / centers[g])))
    return best if abs(np.log(value / centers[best])) <= np.log1p(2 * rel_tol) else None


def top_groups(values: ArrayLike, share: float = 0.10, max_share: float = 1 / 3,
               rel_tol: float = DEFAULT_REL_TOL) -> np.ndarray:
    """True for the values in the top groups: as many groups (largest first) as it takes to cover
    >= max(2, share) of the values, never more than max_share of them (one group always)."""
    v = np.asarray(values, dtype=float)
    labels = cluster_log(v, rel_tol)
    want = max(2, int(np.ceil(share * len(v))))
    mask = np.zeros(len(v), dtype=bool)
    for g in sorted(set(labels.tolist()) - {-1}, reverse=True):
        nxt = mask | (labels == g)
        if mask.any() and nxt.sum() > max_share * len(v):
            break
        mask = nxt
        if mask.sum() >= want:
            break
    return mask
