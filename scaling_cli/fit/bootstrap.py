"""Bootstrap over runs and percentile intervals.

Resampling unit is the run (a row of the runs table, or every point of one curve), as in
Besiroglu et al. 2024 who bootstrap Chinchilla's data points. A resample is expressed as integer
multiplicities per point ("weights") so that a weighted objective refits it without copying data.

Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

# Default number of resamples: the brief's 200 (Epoch use 4,000; 200 gives 5%/95% percentiles
# to about +-1.5 percentile points, enough for error bars that are themselves approximate).
DEFAULT_N_BOOT = 200

# Default two-sided interval level for every interval scaling-cli prints (5% - 95%).
DEFAULT_LEVEL = 0.9


def cluster_weights(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_points) multiplicities from resampling the distinct `groups` with replacement."""
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    counts = np.zeros((n_boot, len(labels)))
    rows = np.repeat(np.arange(n_boot), len(labels))
    np.add.at(counts, (rows, draws.ravel()), 1.0)
    return counts[:, inverse]


def resample_indices(n: int, n_boot: int, rng: np.random.Generator,
                     groups: Sequence | None = None) -> list[np.ndarray]:
    """Index arrays of resamples: rows, or whole groups of rows when `groups` is given."""
    if groups is None:
        return [rng.integers(0, n, size=n) for _ in range(n_boot)]
    groups = np.asarray(groups)
    labels = np.unique(groups)
    members = {label: np.flatnonzero(groups == label) for label in labels}
    out = []
    for _ in range(n_boot):
        picks = rng.choice(labels, size=len(labels), replace=True)
        out.append(np.concatenate([members[p] for p in picks]))
    return out


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval of `samples` along `axis`, ignoring NaNs."""
    tail = 50.0 * (1.0 - level)
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail], axis=axis)
    return lo, hi


def scatter_draws(samples: np.ndarray, sigma: float, per_sample: int, rng: np.random.Generator) -> np.ndarray:
    """(len(samples), per_sample) draws of a new run's loss: each bootstrap sample of the law's
    prediction times lognormal run-to-run scatter (sigma: the law's RMSE of log loss). Their
    percentile interval is a prediction interval (predict; backtest's coverage)."""
    return samples[:, None] * np.exp(rng.normal(0.0, sigma, (len(samples), per_sample)))


def finite_interval(values: np.ndarray | None, level: float = DEFAULT_LEVEL) -> list[float | None]:
    """percentile_interval of the finite values among `values` (any shape) as [lo, hi] floats;
    [None, None] when there are fewer than two, or no values at all."""
    if values is None:
        return [None, None]
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return [None, None]
    lo, hi = percentile_interval(v, level)
    return [float(lo), float(hi)]


def bootstrap(stat: Callable[[np.ndarray], np.ndarray | float | None], n: int, n_boot: int,
              rng: np.random.Generator, groups: Sequence | None = None) -> np.ndarray:
    """Evaluate `stat(indices)` on resamples; failed resamples (None or an exception) give NaN rows."""
    rows = []
    width = None
    for idx in resample_indices(n, n_boot, rng, groups):
        try:
            value = stat(idx)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            value = None
        if value is not None:
            value = np.atleast_1d(np.asarray(value, dtype=float))
            width = value.shape[0]
        rows.append(value)
    if width is None:
        return np.full((n_boot, 1), np.nan)
    return np.array([r if r is not None else np.full(width, np.nan) for r in rows])


@dataclass
class FitOptions:
    """Knobs shared by every fitter; the CLI fills them from flags."""

    n_boot: int = DEFAULT_N_BOOT
    """Bootstrap resamples; 0 disables bootstrap intervals."""
    grid_size: int = 4
    """Values per axis of the multi-start grid: 4 gives 4^5 = 1024 starts for L(N, D) (Epoch-style)."""
    boot_starts: int = 4
    """Starts per bootstrap refit: the best full-data optimum plus the next distinct local optima."""
    level: float = DEFAULT_LEVEL
    """Two-sided level of every interval."""
    seed: int = 0
    """Seeds every random draw, so a fit is reproducible."""
    holdout_starts: int = 32
    """Starts (best of the grid by initial objective) for the leave-largest-size-out refits."""
    curve_groups: int = 8
    """At most this many model sizes get schedule-aware curve fits (most schedules first)."""
    curve_points: bool | None = None
    """Fit L(N, D) on final points plus annealed-equivalent points derived from whole curves
    (fit/curve_points.py). None (the default) decides by backtest: the points are used unless
    L(N, D) fitted without the largest size predicts it worse with them than without, by more
    than 0.25 percentage points (curve_points.decide). Holding out the largest size of the shipped CPU sweeps they cut the
    error from 2.6-3.0% to 1.2-1.4% (tiny) and from 2.5-2.7% to 1.6-1.8% (multipliers_cpu); on a
    byte-level sweep whose curves the curve law fits poorly (3.7-5.2% leave-one-curve-out) they
    raised it from 0.21% to 2.42%. True forces them, False skips them. Inputs without curves are
    fitted on final points."""
    fit_set: str = "auto"
    """Which runs the loss laws are fitted on (fit/fitset.py): 'auto' chooses among the candidate
    fit sets by backtest, a candidate's name forces it ('all': every run)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if self.n_boot < 0 or self.grid_size < 1 or self.boot_starts < 1:
            raise ValueError("n_boot must be >= 0, grid_size and boot_starts >= 1")

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator seeded by (seed, salt): each fitter draws from its own stream."""
        return np.random.default_rng([self.seed, salt])

    def as_dict(self) -> dict:
        return asdict(self)
