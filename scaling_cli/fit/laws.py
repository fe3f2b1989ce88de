"""Scaling-law forms as pure numpy functions `f(x, *theta)`, published constants, and a registry.

Every law takes its inputs first (a scalar, an array, or a tuple of arrays) and its parameters
after, in the order of `Law.param_names`, so the same function serves fitting (with numbers
from a fit) and prediction (with bootstrap samples, one row per resample). Nothing here fits.

    from scaling_cli.fit.laws import LAWS, EPOCH_CHINCHILLA
    LAWS["chinchilla"].func((7e9, 1.4e12), *EPOCH_CHINCHILLA.values())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import curve_laws

# --- published constants (reference values printed beside our fits) ------------------------

# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (Epoch AI), their refit of
# Hoffmann et al.'s approach 3 on the digitised data: L = E + A/N^alpha + B/D^beta.
EPOCH_CHINCHILLA = {"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}

# Hoffmann et al. 2022 ("Chinchilla"), eq. 10: the constants as originally published.
HOFFMANN_CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

# Li et al. 2025, "Predictable Scale: Part I" (Step Law): eta_opt = 1.79 N^-0.713 D^0.307 and
# B_opt = 0.58 D^0.571, N non-embedding parameters, D and B in tokens.
STEP_LAW = {"lr": (1.79, -0.713, 0.307), "batch_size": (0.58, 0.571)}

# DeepSeek-AI 2024, "DeepSeek LLM", eq. 1: eta_opt = 0.3118 C^-0.1250, B_opt = 0.2920 C^0.3271,
# C = M*D with M the non-embedding FLOPs per token; B in tokens.
DEEPSEEK = {"lr": (0.3118, -0.125), "batch_size": (0.2920, 0.3271)}

# FLOPs per parameter per token of a training step (forward 2 + backward 4; Kaplan et al. 2020).
FLOPS_PER_PARAM_TOKEN = 6.0


# --- law forms --------------------------------------------------------------------------------

def chinchilla_loss(x: tuple[ArrayLike, ArrayLike], E, A, B, alpha, beta) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2); x = (N, D)."""
    n, d = (np.asarray(v, dtype=float) for v in x)
    return E + A / n**alpha + B / d**beta


def compute_loss(c: ArrayLike, E, A, alpha) -> np.ndarray:
    """L(C) = E + A*C^-alpha at a fixed tokens-per-parameter ratio M (Gadre et al. 2024)."""
    return E + A * np.asarray(c, dtype=float) ** (-alpha)


def power_law(x: ArrayLike, coef, exponent) -> np.ndarray:
    """y = coef * x^exponent (optima against N, D or C)."""
    return coef * np.asarray(x, dtype=float) ** exponent


def power_law_2d(x: tuple[ArrayLike, ArrayLike], coef, exp1, exp2) -> np.ndarray:
    """y = coef * x1^exp1 * x2^exp2 (Step Law form eta_opt = a N^b D^c); x = (x1, x2)."""
    x1, x2 = (np.asarray(v, dtype=float) for v in x)
    return coef * x1**exp1 * x2**exp2


def chinchilla_optimum(c: ArrayLike, E, A, B, alpha, beta) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal (N_opt, D_opt) for FLOPs C under C = 6*N*D (Hoffmann et al. eq. 4).

    N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = G^-1 (C/6)^(alpha/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)). Broadcasts over parameter arrays (bootstrap rows).
    """
    c = np.asarray(c, dtype=float)
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n_opt = g * (c / FLOPS_PER_PARAM_TOKEN) ** (beta / (alpha + beta))
    return n_opt, c / (FLOPS_PER_PARAM_TOKEN * n_opt)


def chinchilla_tokens_for_params(n: ArrayLike, E, A, B, alpha, beta) -> np.ndarray:
    """The D at which N is compute-optimal: invert N_opt(C), then D = C/(6N)."""
    n = np.asarray(n, dtype=float)
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    c = FLOPS_PER_PARAM_TOKEN * (n / g) ** ((alpha + beta) / beta)
    return c / (FLOPS_PER_PARAM_TOKEN * n)


def overtrain_loss(x: tuple[ArrayLike, ArrayLike], E, a, b, eta) -> np.ndarray:
    """L(C, M) = E + (a M^eta + b M^-eta) C^-eta (Gadre et al. 2024, eq. 4); x = (C, M), M = D/N.

    With C = 6ND this is the Chinchilla form with one shared exponent alpha = beta = 2 eta:
    A = a 6^-eta, B = b 6^-eta (see `overtrain_to_chinchilla`).
    """
    c, m = (np.asarray(v, dtype=float) for v in x)
    return E + (a * m**eta + b * m ** (-eta)) * c ** (-eta)


def overtrain_to_chinchilla(E, a, b, eta) -> tuple:
    """(E, A, B, alpha, beta) of the Chinchilla form equal to the over-training law under C = 6ND."""
    scale = FLOPS_PER_PARAM_TOKEN ** (-np.asarray(eta, dtype=float))
    return E, a * scale, b * scale, 2 * np.asarray(eta, dtype=float), 2 * np.asarray(eta, dtype=float)


def overtrain_optimal_ratio(a, b, eta) -> np.ndarray:
    """Compute-optimal M* = D/N of the over-training law: argmin a M^eta + b M^-eta = (b/a)^(1/(2 eta)).

    It does not depend on C, so N_opt = sqrt(C/(6 M*)) and D_opt = M* N_opt at every budget.
    """
    return (np.asarray(b, dtype=float) / a) ** (1.0 / (2.0 * np.asarray(eta, dtype=float)))


def beta_n_loss(x: tuple[ArrayLike, ArrayLike], E, A, alpha, B, beta, gamma, N_ref, D_ref) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B (D/D_ref)^(-beta(N)), beta(N) = beta (N/N_ref)^gamma; x = (N, D).

    Chinchilla with a data exponent that depends on model size, the interaction Farseer (Li et al.
    2025, "Predictable Scale: Part II") finds in ~1,000 runs and credits for its extrapolation; their
    law lets B depend on N as well, which needs more runs than a proxy sweep has. N_ref and D_ref
    are the geometric means of the fitted runs (fixed, not fitted): at N = N_ref it is Chinchilla.
    """
    n, d = (np.asarray(v, dtype=float) for v in x)
    return E + A / n**alpha + B * (d / D_ref) ** (-beta * (n / N_ref) ** gamma)


@dataclass(frozen=True)
class Law:
    """A registered parametric form."""

    name: str
    func: Callable
    param_names: tuple[str, ...]
    inputs: tuple[str, ...]
    form: str
    reference: str
    fixed: tuple[str, ...] = ()
    """Parameters held fixed in the fit (set from an independent estimate), not fitted."""

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def n_free(self) -> int:
        return len(self.param_names) - len(self.fixed)


LAWS: dict[str, Law] = {
    law.name: law
    for law in (
        Law("chinchilla", chinchilla_loss, ("E", "A", "B", "alpha", "beta"), ("params", "tokens"),
            "L = E + A/N^alpha + B/D^beta", "Hoffmann et al. 2022 approach 3; fitted as Besiroglu et al. 2024"),
        Law("chinchilla_fixed_e", chinchilla_loss, ("E", "A", "B", "alpha", "beta"), ("params", "tokens"),
            "L = E + A/N^alpha + B/D^beta, E fixed by a held-out profile",
            "Hoffmann et al. 2022 with the irreducible loss set apart (scaling_cli/fit/family.py)", fixed=("E",)),
        Law("overtrain", overtrain_loss, ("E", "a", "b", "eta"), ("flops", "tokens_per_param"),
            "L = E + (a M^eta + b M^-eta) C^-eta, M = D/N, C = 6ND (= Chinchilla with alpha = beta = 2 eta)",
            "Gadre et al. 2024, language models scale reliably with over-training, eq. 4"),
        Law("overtrain_fixed_e", overtrain_loss, ("E", "a", "b", "eta"), ("flops", "tokens_per_param"),
            "L = E + (a M^eta + b M^-eta) C^-eta, E fixed by a held-out profile",
            "Gadre et al. 2024 with the irreducible loss set apart (scaling_cli/fit/family.py)", fixed=("E",)),
        Law("chinchilla_beta_n", beta_n_loss, ("E", "A", "alpha", "B", "beta", "gamma", "N_ref", "D_ref"),
            ("params", "tokens"), "L = E + A/N^alpha + B (D/D_ref)^(-beta (N/N_ref)^gamma)",
            "Chinchilla with an N-dependent data exponent, after Li et al. 2025 (Farseer)", fixed=("N_ref", "D_ref")),
        Law("compute_only", compute_loss, ("E", "A", "alpha"), ("flops",),
            "L = E + A*C^-alpha at fixed M = D/N", "Gadre et al. 2024 (over-training)"),
        Law("power_law", power_law, ("coef", "exponent"), ("x",),
            "y = coef * x^exponent", "Hoffmann et al. 2022 approaches 1-2; DeepSeek 2024"),
        Law("step_law", power_law_2d, ("coef", "exp_params", "exp_tokens"), ("params", "tokens"),
            "eta_opt = a * N^b * D^c", "Li et al. 2025 (Step Law)"),
        Law("tissue", curve_laws.tissue_loss, ("L0", "A", "alpha", "C"), ("S1", "S2"),
            "L(s) = L0 + A*S1^-alpha - C*S2", "Tissue et al. 2024, scaling law with LR annealing"),
        Law("multi_power", curve_laws.multi_power_loss, ("L0", "A", "alpha", "B", "C", "beta", "gamma"),
            ("lr schedule",), "L(t) = L0 + A*(S1+S_W)^-alpha - LD(t)",
            "Luo et al. 2025, a multi-power law for loss curve prediction"),
    )
}


def law_value(name: str, x, params: dict[str, float] | np.ndarray) -> np.ndarray:
    """Evaluate registered law `name` at x with parameters as a dict or an array (rows = samples)."""
    law = LAWS[name]
    if isinstance(params, dict):
        theta = [params[p] for p in law.param_names]
    else:
        arr = np.asarray(params, dtype=float)
        theta = [arr[..., i] for i in range(law.n_params)]
    return law.func(x, *theta)
