"""Resampling schemes for the loss laws' intervals, and the one scaling-cli uses.

A resample is either a row of multiplicities over runs (pairs bootstraps: runs or whole model
sizes resampled with replacement) or a row of new responses (wild bootstrap: every run keeps its
(N, D) and gets fitted value + a random weight times its residual). `resample(method, ...)`
returns (weights, responses), one of them None; the fitters refit every row (robust.refit_many).

Methods (names as in the coverage study, scaling_cli/fit/coverage.py):

- "pairs":      runs resampled with replacement (Besiroglu et al. 2024; scaling-cli's old default).
- "pairs_size": whole model sizes resampled with replacement (a cluster bootstrap).
- "two_stage":  sizes resampled with replacement, then the runs within each drawn size.
- "bayes_size": a Bayesian two-stage bootstrap (Rubin 1981): Dirichlet(1) weights over sizes,
                then over the units within each size; every size keeps a positive weight, so no
                resample loses a size (with 3-4 sizes, a drawn resample often holds only two).
                THE DEFAULT, with the widening below.
- "wild":       y* = fit + v_i r_i with one weight per run.
- "wild_size":  y* = fit + v_g r_i with one weight per model size g.

Why. Real sweeps have cluster structure: every run of a model size shares its shape,
initialisation luck and tokenizer-to-width ratio, so the runs of a size are off the law together,
and a sweep has only 4-8 such draws. Measured (coverage study, 50 replicates a row, README "Laws,
backtests and intervals"): resampling runs independently ("pairs", the old default) covered the
truth 64-82% of the time at nominal 90% where the per-size offsets matter; the wild bootstraps
gave parameter spreads half the true ones in the scenario checked (with Huber delta = 1e-3 far
below the noise the fit is a median-type estimator, for which sign-flip resampling is not
valid); "two_stage" covered, but
its resamples that lose a size make intervals so wide that most 5-size fits got flagged; raw
"bayes_size" was tight but short where the size offsets dominate (75% and 77% for two of the
three laws), as any resampling of few clusters is. So the default is bayes_size, and every interval it yields is widened by the
small-cluster factor (t with G - 1 degrees of freedom, `small_cluster_factor`) and, for the
fixed-E laws, by LAW_WIDENING: with that, >= 90% of the intervals of fits not flagged unreliable
covered the truth, for every parameter and for the loss 10x and 100x beyond the fitted compute.
The widening applies to each reported quantity's samples around its own point estimate
(`stretch_values`); fit.json keeps the raw joint samples and the factor (optimizer.interval_widening).

Wild weights are Webb's six-point distribution (+-sqrt(1/2), +-1, +-sqrt(3/2), each 1/6; Webb
2014), on residuals inflated by sqrt(n / (n - p)) (HC1).

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit.bootstrap import cluster_weights

WEBB_WEIGHTS = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])

METHODS = ("pairs", "pairs_size", "two_stage", "bayes_size", "wild", "wild_size")

# The scheme every loss law of the L(N, D) family uses for its intervals; chosen by the coverage
# study (scaling_cli/fit/coverage.py, table in README "Laws, backtests and intervals").
DEFAULT_METHOD = "bayes_size"


# Extra widening of the fixed-E laws, measured by the coverage study: their E is decided by the
# one or two largest sizes, whose own offsets no resampling of the design can redraw (raw
# bayes_size needed 1.89x at 6 sizes where the small-cluster factor gives 1.34x; 1.4 more covers).
LAW_WIDENING: dict[str, float] = {"chinchilla_fixed_e": 1.4, "overtrain_fixed_e": 1.4}


def small_cluster_factor(n_clusters: int, level: float = 0.9) -> float:
    """t_{G-1} over normal critical value, times sqrt(G/(G-1)): the usual correction of a
    cluster-robust spread with G clusters (Cameron & Miller 2015, "A practitioner's guide to
    cluster-robust inference", sec. VI). A resampling of 4-8 sizes underestimates the size-level
    spread by about this much: 1.65 at G = 4, 1.34 at 6, 1.23 at 8, -> 1 as G grows."""
    from scipy import stats

    g = max(int(n_clusters), 2)
    q = 0.5 + level / 2
    return float(stats.t.ppf(q, g - 1) / stats.norm.ppf(q) * np.sqrt(g / (g - 1)))


def widening(name: str, n_clusters: int, method: str, level: float = 0.9) -> float:
    """The stretch the default scheme's samples get for law `name` fitted to `n_clusters` sizes
    (1 for the other schemes: the coverage study measures them raw)."""
    if method != DEFAULT_METHOD:
        return 1.0
    return small_cluster_factor(n_clusters, level) * LAW_WIDENING.get(name, 1.0)


def stretch_values(samples: np.ndarray, point: np.ndarray, factor: float) -> np.ndarray:
    """Bootstrap samples of one quantity stretched `factor`-fold away from its point estimate, in
    log space (where the quantity is positive) so its percentile interval [lo, hi] becomes
    [p (lo/p)^k, p (hi/p)^k]. Applied to each reported quantity on its own (a parameter, the loss
    at a target, N_opt), never to the parameter vectors, whose joint shape a stretch would break
    (a stretched E-A ridge predicts nonsense). `point` broadcasts against the rows of `samples`."""
    s = np.asarray(samples, dtype=float)
    if factor == 1.0 or s.size == 0:
        return s
    p = np.broadcast_to(np.asarray(point, dtype=float), s.shape[1:])[None]
    with np.errstate(all="ignore"):
        logs = np.exp(np.log(p) + factor * (np.log(s) - np.log(p)))
        lin = p + factor * (s - p)
    return np.where((s > 0) & (p > 0), logs, lin)


def inflation(n: int, n_free: int) -> float:
    """sqrt(n / (n - p)): the small-sample factor on residuals (HC1); 1 when n <= p + 1."""
    return float(np.sqrt(n / (n - n_free))) if n > n_free + 1 else 1.0


def wild_responses(y: np.ndarray, fitted: np.ndarray, clusters: np.ndarray, n_free: int, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) responses fitted + v * inflated residual, one Webb weight v per cluster."""
    labels, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    r = (np.asarray(y, dtype=float) - fitted) * inflation(len(y), n_free)
    v = rng.choice(WEBB_WEIGHTS, size=(n_boot, len(labels)))
    return fitted[None, :] + v[:, inverse] * r[None, :]


def two_stage_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator,
                      units: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n) multiplicities: clusters drawn with replacement, then each drawn cluster's units
    (default: each point; e.g. all points of one run) drawn with replacement within it."""
    labels, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    units = np.arange(len(inverse)) if units is None else np.unique(np.asarray(units), return_inverse=True)[1]
    members = []
    for g in range(len(labels)):
        in_g = np.flatnonzero(inverse == g)
        members.append([in_g[units[in_g] == u] for u in np.unique(units[in_g])])
    w = np.zeros((n_boot, len(inverse)))
    picks = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    for b in range(n_boot):
        for g in picks[b]:
            group = members[g]
            for k in rng.integers(0, len(group), len(group)):
                w[b, group[k]] += 1.0
    return w


def bayes_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator,
                  units: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n) weights: Dirichlet(1) over clusters (scaled to their count), times Dirichlet(1)
    over the units of each cluster (scaled to the cluster's unit count); a unit's points share it."""
    labels, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    units = np.arange(len(inverse)) if units is None else np.unique(np.asarray(units), return_inverse=True)[1]
    w = np.empty((n_boot, len(inverse)))
    top = rng.dirichlet(np.ones(len(labels)), size=n_boot) * len(labels)
    for g in range(len(labels)):
        in_g = np.flatnonzero(inverse == g)
        ids, local = np.unique(units[in_g], return_inverse=True)
        inner = rng.dirichlet(np.ones(len(ids)), size=n_boot) * len(ids)
        w[:, in_g] = top[:, g:g + 1] * inner[:, local]
    return w


def resample(method: str, y: np.ndarray, fitted: np.ndarray, sizes: np.ndarray, n_free: int, n_boot: int,
             rng: np.random.Generator, units: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(weights, responses) of `n_boot` resamples under `method`; the unused one is None.

    `sizes` labels each run's model-size group (the cluster of the *_size and two_stage methods);
    `units` the points that move together (the pairs and two_stage methods; default: each point)."""
    n = len(y)
    units = np.arange(n) if units is None else units
    if method == "pairs":
        return cluster_weights(units, n_boot, rng), None
    if method == "pairs_size":
        return cluster_weights(sizes, n_boot, rng), None
    if method == "two_stage":
        return two_stage_weights(sizes, n_boot, rng, units), None
    if method == "bayes_size":
        return bayes_weights(sizes, n_boot, rng, units), None
    if method == "wild":
        return None, wild_responses(y, fitted, np.arange(n), n_free, n_boot, rng)
    if method == "wild_size":
        return None, wild_responses(y, fitted, sizes, n_free, n_boot, rng)
    raise ValueError(f"unknown interval method {method!r}; one of {', '.join(METHODS)}")
