"""Resampling schemes for the loss laws' intervals, and the one scaling-cli uses.

A resample is either a row of multiplicities over runs (pairs bootstraps: runs or whole model
sizes resampled with replacement) or a row of new responses (wild bootstrap: every run keeps its
(N, D) and gets fitted value + a random weight times its residual). `resample(method, ...)`
returns (weights, responses), one of them None; the fitters refit every row (robust.refit_many).

Methods (names as in the coverage study, scaling_cli/fit/coverage.py):

- "pairs":      runs resampled with replacement (Besiroglu et al. 2024; scaling-cli's old default).
- "pairs_size": whole model sizes resampled with replacement (a cluster bootstrap).
- "two_stage":  sizes resampled with replacement, then the runs within each drawn size (a
                two-stage cluster bootstrap: the per-size and the per-run scatter). THE DEFAULT.
- "bayes_size": a Bayesian two-stage bootstrap (Rubin 1981): Dirichlet(1) weights over sizes,
                then over the units within each size; every size keeps a positive weight, so no
                resample loses a size (with 3-4 sizes, a drawn resample often holds only two).
- "wild":       y* = fit + v_i r_i with one weight per run.
- "wild_size":  y* = fit + v_g r_i with one weight per model size g.

Why two_stage. Real sweeps have cluster structure: every run of a model size shares its shape,
initialisation luck and tokenizer-to-width ratio, so the runs of a size are off the law together,
and a 4-8 size sweep has only 4-8 such draws. Resampling runs independently ("pairs") treats 40
runs as 40 independent draws and covered the truth 58-80% of the time at nominal 90% in the study
(the 73% the issue reported); resampling sizes alone ("pairs_size") drops the run-level scatter
(70-90%); the wild bootstraps undercovered badly (their bootstrap SD of the parameters was half
the true SD): with Huber delta = 1e-3 far below the noise the fit is a median-type (L1)
estimator, for which sign-flip wild resampling is known to be invalid. Two-stage covered >= 90%
in every scenario where the fit is not flagged unreliable (README "Laws, backtests and
intervals"), conservatively (its intervals are somewhat wide), and costs the same as the pairs
bootstrap. A per-law stretch of the samples (WIDENING, `stretch`) is available for laws the
study finds short; none needs one today.

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
# one or two largest sizes, whose own offsets no resampling of the design can redraw (bayes_size
# with the small-cluster factor alone covered 77-78% there; 1.4 more brings it to ~90%).
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


def stretch(samples: np.ndarray, point: np.ndarray, factor: float) -> np.ndarray:
    """theta_hat + factor (theta* - theta_hat), row-wise; theta = (log A, log B, alpha, beta, log E)
    is the fit's own parametrisation, so A, B, E stretch in log space and the exponents linearly.
    To first order every quantity derived from the samples (parameters, predictions, optima)
    widens by the same factor."""
    if factor == 1.0 or len(samples) == 0:
        return samples
    return point[None, :] + factor * (samples - point[None, :])


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
