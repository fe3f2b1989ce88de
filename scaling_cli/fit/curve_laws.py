"""Schedule-aware loss-curve laws: features of an LR schedule and the two law forms.

A schedule is an array `lr` of the learning rate at steps 1..T (lr[0] is step 1) and a warmup
length W (steps 1..W warm up; lr[W-1] is the peak, eta_0 in the papers' notation).

- Tissue et al. 2024, "Scaling law with learning rate annealing":
      L(s) = L0 + A * S1(s)^-alpha - C * S2(s)
      S1(s) = sum_{i<=s} eta_i                                   (forward area)
      S2(s) = sum_{i<=s} sum_{k<=i} (eta_{k-1} - eta_k) lambda^(i-k)   (annealing area)
  S2 is computed in O(T) with the momentum recurrence m_i = lambda m_{i-1} + (eta_{i-1} - eta_i),
  S2(s) = sum_{i<=s} m_i. lambda = 0.999 is the paper's default decay factor.
- Luo et al. 2025, "A multi-power law for loss curve prediction across learning rate schedules":
      L(t) = L0 + A (S1(t) + S_W)^-alpha - LD(t)
      LD(t) = B sum_{k=1}^{t} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),  S_k(t) = sum_{tau=k}^{t} eta_tau
      G(x) = 1 - (C x + 1)^-beta
  with k counted from the end of warmup, S_W the warmup area. S1 + S_W is the total LR area.

Both laws use warmup steps only through the area; the annealing terms start after warmup (the LR
rises there, which the laws do not model). The multi-power sum is O(T x evaluated steps); it is
evaluated on blocks of steps (exact when a block is one step, the Delta-eta-weighted step of a
block otherwise) so that long curves cost O(blocks x evaluated steps).

Also here: cosine / WSD / constant schedule generators, for tests and for predicting a curve under
a schedule that was not run. Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# Decay factor of the annealing momentum (Tissue et al. 2024 use lambda = 0.999 throughout).
TISSUE_LAMBDA = 0.999

# Upper bound on multi-power blocks beyond the evaluated steps themselves; 512 keeps the
# quadrature error of a smooth decay well below per-step loss noise while bounding the cost.
MPL_MAX_BLOCKS = 512


# --- schedule generators ----------------------------------------------------------------------

def cosine_schedule(steps: int, peak: float, warmup: int = 0, final_frac: float = 0.1) -> np.ndarray:
    """Linear warmup to `peak`, then cosine decay to final_frac * peak at the last step."""
    s = np.arange(1, steps + 1, dtype=float)
    lr = np.empty(steps)
    w = s <= warmup
    lr[w] = peak * s[w] / max(warmup, 1)
    progress = (s[~w] - warmup) / max(steps - warmup, 1)
    lr[~w] = peak * (final_frac + (1 - final_frac) * 0.5 * (1 + np.cos(np.pi * progress)))
    return lr


def wsd_schedule(steps: int, peak: float, warmup: int = 0, decay_frac: float = 0.2,
                 final_frac: float = 0.0) -> np.ndarray:
    """Warmup-stable-decay (Hu et al. 2024): constant peak, then linear decay over the last decay_frac."""
    s = np.arange(1, steps + 1, dtype=float)
    lr = np.full(steps, float(peak))
    w = s <= warmup
    lr[w] = peak * s[w] / max(warmup, 1)
    decay_start = steps * (1 - decay_frac)
    d = s > decay_start
    lr[d] = peak * (1 - (1 - final_frac) * (s[d] - decay_start) / max(steps - decay_start, 1))
    return lr


def constant_schedule(steps: int, peak: float, warmup: int = 0) -> np.ndarray:
    """Linear warmup, then constant."""
    return wsd_schedule(steps, peak, warmup, decay_frac=0.0)


def detect_warmup(lr: np.ndarray, tol: float = 1e-3) -> int:
    """Warmup length W: the 1-based step at which the LR first reaches (1 - tol) of its maximum.

    Step W holds the peak (eta_0 of the multi-power law); a schedule without warmup gives W = 1,
    which the features treat like W = 0.
    """
    lr = np.asarray(lr, dtype=float)
    return int(np.argmax(lr >= (1 - tol) * lr.max())) + 1


# --- Tissue et al. ----------------------------------------------------------------------------

def tissue_features(lr: np.ndarray, warmup: int = 0, lam: float = TISSUE_LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) at every step 1..T, S2 by the O(T) recurrence (annealing counted after warmup)."""
    lr = np.asarray(lr, dtype=float)
    s1 = np.cumsum(lr)
    start = max(int(warmup), 1)  # eta_0 is the LR at the last warmup step (the peak)
    drop = np.zeros_like(lr)
    drop[start:] = lr[start - 1:-1] - lr[start:]  # eta_{i-1} - eta_i for steps i > warmup
    return s1, np.cumsum(_momentum(drop, lam))


def _momentum(drop: np.ndarray, lam: float, block: int = 2048) -> np.ndarray:
    """m_i = lam * m_{i-1} + drop_i, vectorised per block: m = lam^i (m_0 + cumsum(drop_k lam^-k)).

    Blocks keep lam^-k within float range (0.999^-2048 ~ 8); the carry links them. O(T).
    """
    out = np.empty_like(drop)
    carry = 0.0
    powers = lam ** np.arange(1, block + 1)
    for start in range(0, len(drop), block):
        chunk = drop[start:start + block]
        p = powers[: len(chunk)]
        m = p * (carry + np.cumsum(chunk / p))
        out[start:start + block] = m
        carry = m[-1]
    return out


def tissue_loss(x: tuple[ArrayLike, ArrayLike], L0, A, alpha, C) -> np.ndarray:
    """L = L0 + A * S1^-alpha - C * S2; x = (S1, S2)."""
    s1, s2 = (np.asarray(v, dtype=float) for v in x)
    return L0 + A * s1 ** (-alpha) - C * s2


# --- multi-power law ----------------------------------------------------------------------------

@dataclass
class MplFeatures:
    """Everything the multi-power law needs about one schedule at the evaluated steps."""

    area: np.ndarray       # S1(t) + S_W: total LR area up to each evaluated step, shape (m,)
    d_eta: np.ndarray      # LR drop of each block, shape (b,)
    eta_rep: np.ndarray    # representative eta_k of each block, shape (b,)
    s_rep: np.ndarray      # cumulative area before the representative step, shape (b,)
    s_k: np.ndarray        # (m, b): S_k(t) of each block's step, 0 where the block is after t
    steps: np.ndarray      # evaluated steps (1-based), shape (m,)
    peak: float            # largest LR of the schedule


def mpl_features(lr: np.ndarray, steps: ArrayLike, warmup: int = 0, max_blocks: int = MPL_MAX_BLOCKS) -> MplFeatures:
    """Precompute the multi-power law's schedule terms at the 1-based `steps`."""
    lr = np.asarray(lr, dtype=float)
    total = len(lr)
    steps = np.asarray(steps, dtype=int)
    if steps.min() < 1 or steps.max() > total:
        raise ValueError(f"evaluated steps must lie in 1..{total}")
    cum = np.concatenate([[0.0], np.cumsum(lr)])  # cum[s] = area of steps 1..s
    start = max(int(warmup), 1)  # blocks cover steps start+1..T; eta_0 = lr at step `start`
    grid = np.linspace(start, total, min(max_blocks, max(total - start, 1)) + 1).round().astype(int)
    bounds = np.unique(np.concatenate([grid, steps[steps > start], [start]]))
    bounds = bounds[bounds >= start]
    lo, hi = bounds[:-1], bounds[1:]  # block j = steps lo+1..hi
    eta = lambda s: lr[s - 1]
    drop = np.zeros(total + 1)  # drop[k] = eta_{k-1} - eta_k for k in start+1..T
    ks = np.arange(start + 1, total + 1)
    drop[ks] = eta(ks - 1) - eta(ks)
    if len(lo):
        d_eta = eta(lo) - eta(hi)
        weights = np.abs(drop)
        wsum = np.add.reduceat(weights[start + 1:], lo - start) if total > start else np.zeros(len(lo))
        kw = np.add.reduceat((weights * np.arange(total + 1))[start + 1:], lo - start) if total > start else np.zeros(len(lo))
        mid = np.where(wsum > 0, np.round(kw / np.where(wsum > 0, wsum, 1)), np.ceil((lo + hi) / 2)).astype(int)
        mid = np.clip(mid, lo + 1, hi)
        eta_rep, s_rep = eta(mid), cum[mid - 1]
    else:
        d_eta = eta_rep = s_rep = np.zeros(0)
        hi = np.zeros(0, dtype=int)
    area = cum[steps]
    s_k = np.where(hi[None, :] <= steps[:, None], area[:, None] - s_rep[None, :], 0.0)
    return MplFeatures(area=area, d_eta=d_eta, eta_rep=eta_rep, s_rep=s_rep, s_k=s_k, steps=steps,
                       peak=float(lr.max()))


def mpl_decay_term(f: MplFeatures, C: float, beta: float, gamma: float) -> np.ndarray:
    """sum_k (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)) at each evaluated step (LD / B)."""
    # A block whose LR reaches 0 would give 0^-gamma; flooring eta at 1e-9 of the peak makes G = 1
    # there (its limit for any positive area after it) instead of inf * 0.
    eta = np.maximum(f.eta_rep, 1e-9 * f.peak)
    x = f.s_k * eta[None, :] ** (-gamma)  # zero for blocks after t, where G(0) = 0
    g = 1.0 - (C * x + 1.0) ** (-beta)
    return g @ f.d_eta


def multi_power_loss(f: MplFeatures, L0, A, alpha, B, C, beta, gamma) -> np.ndarray:
    """L(t) = L0 + A (S1 + S_W)^-alpha - B * sum_k (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t))."""
    return L0 + A * f.area ** (-alpha) - B * mpl_decay_term(f, C, beta, gamma)
