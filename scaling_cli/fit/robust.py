"""Robust fitting of "constant plus power laws" in log space: Huber loss, multi-start quasi-Newton.

The model is written in log-sum-exp form (Hoffmann et al. 2022, section D.2; Besiroglu et al.
2024 copy it):

    log L = LSE(a_1 - alpha_1 x_1, ..., a_k - alpha_k x_k, e),   x_j = log(input_j),

which is L = exp(e) + sum_j exp(a_j) / input_j^alpha_j, positive by construction and smooth in
theta = (a_1..a_k, alpha_1..alpha_k, e). Chinchilla's L(N, D) is k = 2 and the compute-only law
L(C) is k = 1. The residual r = LSE(...) - log L is scored with the Huber loss (delta = 1e-3,
Hoffmann et al.), which is quadratic for |r| < 0.1% and linear beyond, so a few bad runs do not
drag the fit. The objective has an analytic gradient (softmax weights of the LSE).

Optimiser: every start of the grid (and, for the bootstrap, every resample x start) runs at once
in `batched_bfgs`, a BFGS with Armijo backtracking vectorised over starts in numpy, on centred
log-inputs; the best optimum is then polished with scipy's L-BFGS-B (Hoffmann et al. and Epoch use
(L-)BFGS from a grid). Why not one scipy call per start: per-call overhead (and OpenBLAS threads
spinning on 5x5 problems) made 1,024 starts + 200 x 4 bootstrap refits take minutes; batched, the
400-point, 4^5-start, 200-resample recipe takes a few seconds on 2 cores (tests/test_fit_parametric.py).

Constrained members of the family (the over-training law's shared exponent alpha = beta, an
irreducible loss fixed from elsewhere) use the same objective through a `Constraint`: the
optimiser moves a shorter vector phi of free parameters, theta is expanded from it, and the
gradient is summed back over tied entries. `y` may carry one row per start (wild-bootstrap
resamples refit against their own responses).

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# Huber threshold on the log-loss residual (Hoffmann et al. 2022, section D.2; Epoch keeps it).
HUBER_DELTA = 1e-3

# Default grid of initial exponents. Epoch/Hoffmann use alpha, beta in {0, 0.5, 1, 1.5, 2}; we drop
# alpha = 0 (it makes the power term a second constant, a degenerate start) and keep 4 values over
# the range where fitted LM exponents fall (0.05 for compute laws to ~1).
DEFAULT_EXPONENT_GRID = (0.1, 0.3, 0.6, 1.0)

# Fractions of the median loss the initial power terms and the constant start at: a and e are set
# from the data so that every start is on the loss scale, which matters more than the exact values
# (Hoffmann et al. grid a, b over 0..25 in steps of 5 and e over -1..1, i.e. the same idea by hand).
DEFAULT_TERM_FRACTIONS = (0.05, 0.2, 0.5, 0.9)
DEFAULT_CONST_FRACTIONS = (0.2, 0.5, 0.75, 0.95)

# Exponents are kept in a physical range; a start that runs off to the bound is a bad basin.
EXPONENT_BOUNDS = (1e-4, 5.0)


@dataclass(frozen=True)
class Constraint:
    """Ties and fixed values among theta = (a_1..a_k, alpha_1..alpha_k, e).

    `index[i]` is the free parameter theta[i] takes, or -1 when theta[i] is fixed (its value comes
    from the `fixed` array passed beside the constraint). Free parameters are numbered 0..p-1 in
    order of first use. Only exponents and e may be fixed: the a_j move with the centring of x.
    """

    index: tuple[int, ...]

    @staticmethod
    def tied_exponents(k: int = 2, fix_e: bool = False) -> "Constraint":
        """Every alpha_j equal (the over-training law), optionally with e fixed."""
        return Constraint(tuple(range(k)) + (k,) * k + ((-1,) if fix_e else (k + 1,)))

    @staticmethod
    def fixed_e(k: int = 2) -> "Constraint":
        """e fixed, everything else free."""
        return Constraint(tuple(range(2 * k)) + (-1,))

    @property
    def n_free(self) -> int:
        return max(self.index) + 1

    def compress(self, theta: np.ndarray) -> np.ndarray:
        """phi from theta (rows): the first theta entry of every free parameter."""
        first = [self.index.index(j) for j in range(self.n_free)]
        return np.atleast_2d(theta)[:, first]

    def expand(self, phi: np.ndarray, fixed: np.ndarray | None) -> np.ndarray:
        """theta (rows) from phi (rows) and the fixed values (one row, or one row per phi row)."""
        phi = np.atleast_2d(phi)
        idx = np.asarray(self.index)
        theta = np.empty((phi.shape[0], len(idx)))
        theta[:, idx >= 0] = phi[:, idx[idx >= 0]]
        if (idx < 0).any():
            theta[:, idx < 0] = np.atleast_2d(fixed)[:, idx < 0]
        return theta

    def contract(self, grad: np.ndarray) -> np.ndarray:
        """d/dphi from d/dtheta (rows): tied entries add up, fixed ones drop."""
        idx = np.asarray(self.index)
        out = np.zeros((grad.shape[0], self.n_free))
        for i, j in enumerate(idx):
            if j >= 0:
                out[:, j] += grad[:, i]
        return out

    def exponent_slots(self, k: int) -> np.ndarray:
        """Indices of phi that are exponents (projected onto EXPONENT_BOUNDS)."""
        return np.unique([j for j in self.index[k:2 * k] if j >= 0]).astype(int)


def _free(k: int, constraint: Constraint | None) -> Constraint:
    return constraint if constraint is not None else Constraint(tuple(range(2 * k + 1)))


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss: r^2/2 for |r| <= delta, delta*(|r| - delta/2) beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def lse_predict(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log L for theta = (a_1..a_k, alpha_1..alpha_k, e) and log-inputs x of shape (n, k)."""
    k = x.shape[1]
    terms = np.concatenate([theta[:k] - theta[k:2 * k] * x, np.full((x.shape[0], 1), theta[2 * k])], axis=1)
    m = terms.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(terms - m).sum(axis=1, keepdims=True)))[:, 0]


def lse_objective(theta: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float = HUBER_DELTA,
                  weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean Huber loss of the log-space residual, scaled by 1/delta^2, and its gradient.

    The 1/delta^2 scale makes the objective O(1) near the optimum so that L-BFGS's default
    tolerances are meaningful; it does not move the minimum. `weights` (bootstrap multiplicities)
    weight each point's loss.
    """
    n, k = x.shape
    terms = np.empty((n, k + 1))
    terms[:, :k] = theta[:k] - theta[k:2 * k] * x
    terms[:, k] = theta[2 * k]
    m = terms.max(axis=1, keepdims=True)
    ex = np.exp(terms - m)
    s = ex.sum(axis=1, keepdims=True)
    pred = (m + np.log(s))[:, 0]
    soft = ex / s
    r = pred - y
    a = np.abs(r)
    h = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    dh = np.clip(r, -delta, delta)
    w = np.full(n, 1.0 / n) if weights is None else weights / weights.sum()
    scale = 1.0 / (delta * delta)
    value = scale * float(w @ h)
    g = (scale * w * dh)[:, None] * soft  # d value / d term_j for every point
    grad = np.empty(2 * k + 1)
    grad[:k] = g[:, :k].sum(axis=0)
    grad[k:2 * k] = -(g[:, :k] * x).sum(axis=0)
    grad[2 * k] = g[:, k].sum()
    return value, grad


def lse_grid(x: np.ndarray, y: np.ndarray, exponents=DEFAULT_EXPONENT_GRID,
             term_fractions=DEFAULT_TERM_FRACTIONS, const_fractions=DEFAULT_CONST_FRACTIONS) -> np.ndarray:
    """The grid of initial theta: every combination of (a_j, alpha_j) per term and e.

    a_j is set so that the term exp(a_j) * input^-alpha_j equals a fraction of the median loss at
    the median input; e so that exp(e) is a fraction of the smallest loss. With 4 values each the
    k = 2 grid has 4^5 = 1024 starts, as the brief asks (Epoch's grid is 4,500 starts).
    """
    k = x.shape[1]
    med_loss = float(np.exp(np.median(y)))
    min_loss = float(np.exp(np.min(y)))
    x_med = np.median(x, axis=0)
    log_terms = np.log(np.asarray(term_fractions) * med_loss)
    axes = []
    for j in range(k):
        axes.append(list(log_terms))        # offset of a_j, completed below once alpha_j is known
    for j in range(k):
        axes.append(list(exponents))
    axes.append(list(np.log(np.asarray(const_fractions) * min_loss)))
    grid = np.array(list(itertools.product(*axes)), dtype=float)
    grid[:, :k] = grid[:, :k] + grid[:, k:2 * k] * x_med  # a_j = log(f * L_med) + alpha_j * x_med_j
    return grid


def lse_objective_batch(theta: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float = HUBER_DELTA,
                        weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`lse_objective` for m parameter vectors at once: theta (m, 2k+1), weights (m, n) or None.

    Laid out term-major (k+1, m, n) so every reduction runs over contiguous memory; this is what
    makes 1024 starts x 400 points cost tens of milliseconds per iteration instead of seconds.
    """
    m = theta.shape[0]
    n, k = x.shape
    terms = np.empty((k + 1, m, n))
    for j in range(k):
        terms[j] = theta[:, j:j + 1] - theta[:, k + j:k + j + 1] * x[:, j]
    terms[k] = theta[:, 2 * k:2 * k + 1]
    top = np.maximum(terms[0], terms[1]) if k >= 1 else terms[0].copy()
    for j in range(2, k + 1):
        np.maximum(top, terms[j], out=top)
    np.subtract(terms, top, out=terms)
    np.exp(terms, out=terms)
    total = terms.sum(axis=0)
    r = np.log(total)
    r += top
    r -= y
    c = np.clip(r, -delta, delta)
    # Huber in one expression: c (r - c/2) is r^2/2 inside [-delta, delta] and delta(|r| - delta/2) outside.
    r -= 0.5 * c
    r *= c
    w = np.full((1, n), 1.0 / n) if weights is None else weights / weights.sum(axis=1, keepdims=True)
    scale = 1.0 / (delta * delta)
    value = scale * (w * r).sum(axis=1) if weights is not None else scale * r.mean(axis=1)
    c *= w
    c *= scale
    c /= total  # d value / d term_j = c * exp(term_j - lse)
    coef = c
    grad = np.empty((m, 2 * k + 1))
    for j in range(k):
        gj = coef * terms[j]
        grad[:, j] = gj.sum(axis=1)
        grad[:, k + j] = -(gj @ x[:, j])
    grad[:, 2 * k] = (coef * terms[k]).sum(axis=1)
    return value, grad


def _project(phi: np.ndarray, slots: np.ndarray) -> np.ndarray:
    phi[:, slots] = np.clip(phi[:, slots], *EXPONENT_BOUNDS)
    return phi


# Iterations after which a start whose objective is still > 2x the best (+1) is abandoned.
ABANDON_AFTER = 100

# Largest (starts x points) batch evaluated at once; bigger problems run in chunks (~100 MB peak).
MAX_BATCH_ELEMENTS = 2_000_000


def _rows(a: np.ndarray | None, m: int) -> bool:
    """True when `a` carries one row per start (weights, responses or fixed values)."""
    return a is not None and np.ndim(a) == 2 and np.shape(a)[0] == m


def batched_bfgs(theta0: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float = HUBER_DELTA,
                 weights: np.ndarray | None = None, problem: np.ndarray | None = None,
                 constraint: Constraint | None = None, fixed: np.ndarray | None = None,
                 **kw) -> tuple[np.ndarray, np.ndarray]:
    """`_batched_bfgs` in chunks of starts small enough to bound memory.

    `problem` labels which rows minimise the same objective (same weights and responses); by
    default every row shares one objective when `weights` and `y` are one row (or None), and is
    its own problem otherwise. With a `constraint`, theta0's tied entries must agree and its fixed
    entries are taken from `fixed` (one row, or one per start); returned thetas are full.
    """
    theta0 = np.atleast_2d(np.asarray(theta0, dtype=float))
    m, n = theta0.shape[0], x.shape[0]
    k = x.shape[1]
    cons = _free(k, constraint)
    shared = not (_rows(weights, m) or _rows(y, m))
    if problem is None:
        problem = np.zeros(m, dtype=int) if shared else np.arange(m)
    # Centre the log-inputs: with x ~ 40 +- 3 (log FLOPs) the columns of the Jacobian for a_j and
    # alpha_j are nearly collinear and BFGS crawls; in centred coordinates a_j' = a_j - alpha_j c_j
    # the same objective is well conditioned. Results are mapped back.
    center = np.median(x, axis=0)
    xc = x - center
    shift = lambda t, sign: np.concatenate([t[:, :k] + sign * t[:, k:2 * k] * center, t[:, k:]], axis=1)
    fixed = None if fixed is None else np.atleast_2d(np.asarray(fixed, dtype=float))
    theta0 = cons.expand(cons.compress(theta0), fixed)  # tied and fixed entries consistent
    phi0 = cons.compress(shift(theta0, -1.0))  # fixed entries (e, exponents) do not shift
    per = max(1, MAX_BATCH_ELEMENTS // max(n, 1))
    pick = lambda a, i: a[i:i + per] if _rows(a, m) else a
    parts = [_batched_bfgs(phi0[i:i + per], xc, pick(y, i), delta, pick(weights, i), cons,
                           pick(fixed, i), problem=np.asarray(problem)[i:i + per], **kw)
             for i in range(0, m, per)]
    theta = cons.expand(np.concatenate([p[0] for p in parts]), fixed)
    return shift(theta, 1.0), np.concatenate([p[1] for p in parts])


def _batched_bfgs(phi0: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float = HUBER_DELTA,
                  weights: np.ndarray | None = None, constraint: Constraint | None = None,
                  fixed: np.ndarray | None = None, problem: np.ndarray | None = None,
                  maxiter: int = 400, gtol: float = 1e-6,
                  ftol: float = 1e-11, window_ftol: float = 1e-9, window: int = 10,
                  merge_tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Minimise `lse_objective` from m starts at once with BFGS and Armijo backtracking.

    Works on the free parameters phi of `constraint` (all of theta by default). Every start keeps
    its own inverse-Hessian estimate; the arithmetic of all active starts is one numpy call. A
    start stops when its gradient is below gtol, its objective stalls (relative change < ftol
    twice, or < window_ftol over `window` iterations: with delta = 1e-3 the Huber kinks let BFGS
    crawl in tiny decrements that no longer move the fit), or it lands within merge_tol of another
    start of the same problem (two starts in one basin need not both finish), or, after
    ABANDON_AFTER iterations, is still far above its problem's best start (it is crawling through
    a flat, degenerate region such as an exponent at its bound). Exponents are projected onto
    EXPONENT_BOUNDS. `y`, `weights` and `fixed` are one row for all starts or one row per start.
    Returns (phis (m, p), objectives (m,)); objectives are inf where evaluation failed.
    """
    k = x.shape[1]
    cons = _free(k, constraint)
    slots = cons.exponent_slots(k)
    phi = _project(np.array(phi0, dtype=float, copy=True), slots)
    m, p = phi.shape
    problem = np.zeros(m, dtype=int) if problem is None else np.unique(problem, return_inverse=True)[1]
    n_problems = int(problem.max()) + 1
    w_all = None if weights is None else np.asarray(weights, dtype=float)
    sel = lambda a, idx: a[idx] if _rows(a, m) else a

    def evaluate(ph: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = cons.expand(ph, sel(fixed, idx))
        f, g = lse_objective_batch(theta, x, sel(y, idx), delta, sel(w_all, idx))
        return f, cons.contract(g)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f, g = evaluate(phi, np.arange(m))
        H = np.zeros((m, p, p))
        # First step moves the largest coordinate by 0.1: raw gradients span 1e0..1e4.
        H[:] = np.eye(p)
        H *= (0.1 / np.maximum(np.abs(g).max(axis=1), 1e-12))[:, None, None]
        active = np.isfinite(f)
        f[~active] = np.inf
        stall = np.zeros(m, dtype=int)
        history = [f.copy()]
        for it in range(maxiter):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            gi, Hi = g[idx], H[idx]
            d = -np.einsum("mij,mj->mi", Hi, gi)
            slope = np.einsum("mi,mi->m", gi, d)
            bad = ~(slope < 0)
            if bad.any():  # not a descent direction: restart from scaled steepest descent
                scale = 0.1 / np.maximum(np.abs(gi[bad]).max(axis=1), 1e-12)
                Hi[bad] = np.eye(p) * scale[:, None, None]
                d[bad] = -gi[bad] * scale[:, None]
                slope[bad] = np.einsum("mi,mi->m", gi[bad], d[bad])
            step = np.ones(idx.size)
            new_phi = np.empty((idx.size, p))
            new_f = np.full(idx.size, np.inf)
            new_g = np.zeros((idx.size, p))
            todo = np.arange(idx.size)
            for _ in range(40):  # Armijo backtracking, halving the step
                cand = _project(phi[idx[todo]] + step[todo, None] * d[todo], slots)
                fc, gc = evaluate(cand, idx[todo])
                ok = np.isfinite(fc) & (fc <= f[idx[todo]] + 1e-4 * step[todo] * slope[todo])
                new_phi[todo[ok]], new_f[todo[ok]], new_g[todo[ok]] = cand[ok], fc[ok], gc[ok]
                todo = todo[~ok]
                if todo.size == 0:
                    break
                step[todo] *= 0.5
            failed = np.zeros(idx.size, dtype=bool)
            failed[todo] = True  # no acceptable step: the start has converged as far as it can
            okk = ~failed
            s_vec = new_phi[okk] - phi[idx[okk]]
            y_vec = new_g[okk] - g[idx[okk]]
            sy = np.einsum("mi,mi->m", s_vec, y_vec)
            rel = np.abs(f[idx[okk]] - new_f[okk]) / np.maximum(1.0, np.abs(new_f[okk]))
            phi[idx[okk]], f[idx[okk]], g[idx[okk]] = new_phi[okk], new_f[okk], new_g[okk]
            upd = sy > 1e-12 * np.linalg.norm(s_vec, axis=1) * np.linalg.norm(y_vec, axis=1)
            if upd.any():
                rho = 1.0 / sy[upd]
                Hu = H[idx[okk][upd]]
                if it == 0:  # Nocedal & Wright eq. 6.20: scale the initial inverse Hessian
                    Hu = np.eye(p) * (sy[upd] / np.einsum("mi,mi->m", y_vec[upd], y_vec[upd]))[:, None, None]
                I = np.eye(p)[None]
                V = I - rho[:, None, None] * np.einsum("mi,mj->mij", s_vec[upd], y_vec[upd])
                Hu = V @ Hu @ V.transpose(0, 2, 1) + rho[:, None, None] * np.einsum("mi,mj->mij", s_vec[upd], s_vec[upd])
                H[idx[okk][upd]] = Hu
            stall[idx[okk]] = np.where(rel < ftol, stall[idx[okk]] + 1, 0)
            done = failed.copy()
            done[okk] |= (np.abs(g[idx[okk]]).max(axis=1) < gtol) | (stall[idx[okk]] >= 2)
            history.append(f.copy())
            if len(history) > window:
                old_f = history.pop(0)[idx]
                done |= (old_f - f[idx]) < window_ftol * np.maximum(1.0, np.abs(f[idx]))
            active[idx[done]] = False
            if n_problems < m:  # some starts share an objective
                if it % 5 == 4:
                    _merge(phi, f, active, merge_tol, problem)
                if it >= ABANDON_AFTER and it % 25 == 0:
                    best = np.full(n_problems, np.inf)
                    np.minimum.at(best, problem, f)
                    active &= ~(f > 2.0 * best[problem] + 1.0)
    return phi, f


def _merge(theta: np.ndarray, f: np.ndarray, active: np.ndarray, tol: float, problem: np.ndarray) -> None:
    """Deactivate active starts that coincide (within tol) with a better start of the same problem."""
    idx = np.flatnonzero(active)
    if idx.size < 2:
        return
    keys = np.column_stack([problem[idx], np.round(theta[idx] / tol).astype(np.int64)])
    order = np.argsort(f[idx])
    _, first = np.unique(keys[order], axis=0, return_index=True)
    keep = np.zeros(idx.size, dtype=bool)
    keep[order[first]] = True
    active[idx[~keep]] = False


@dataclass
class LseFit:
    """Result of a multi-start fit: the best theta and the distinct local optima found."""

    theta: np.ndarray
    objective: float
    optima: np.ndarray          # distinct converged thetas, best first
    optima_objective: np.ndarray
    n_starts: int
    n_failed: int


def _bounds(k: int, constraint: Constraint | None = None) -> list[tuple[float | None, float | None]]:
    cons = _free(k, constraint)
    slots = set(cons.exponent_slots(k).tolist())
    return [EXPONENT_BOUNDS if j in slots else (None, None) for j in range(cons.n_free)]


def polish(theta0: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float = HUBER_DELTA,
           weights: np.ndarray | None = None, maxiter: int = 500,
           constraint: Constraint | None = None, fixed: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """One scipy L-BFGS-B run from theta0 (the final step of a fit); objective inf on failure."""
    from scipy.optimize import minimize

    k = x.shape[1]
    cons = _free(k, constraint)

    def objective(phi):
        value, grad = lse_objective(cons.expand(phi, fixed)[0], x, y, delta, weights)
        return value, cons.contract(grad[None, :])[0]

    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = minimize(objective, cons.compress(theta0)[0], jac=True, method="L-BFGS-B",
                           bounds=_bounds(k, cons), options={"maxiter": maxiter, "gtol": 1e-9, "ftol": 1e-13})
    except (FloatingPointError, ValueError):
        return theta0, np.inf
    if not np.all(np.isfinite(res.x)) or not np.isfinite(res.fun):
        return theta0, np.inf
    return cons.expand(res.x, fixed)[0], float(res.fun)


def fit_lse(x: np.ndarray, y: np.ndarray, starts: np.ndarray, delta: float = HUBER_DELTA,
            weights: np.ndarray | None = None, constraint: Constraint | None = None,
            fixed: np.ndarray | None = None) -> LseFit:
    """Minimise from every start (batched BFGS), then polish the best with scipy L-BFGS-B.

    x: (n, k) log-inputs; y: (n,) log-loss; starts: (m, 2k+1) full thetas (with a constraint, tied
    entries are taken from the first of each tie and fixed ones from `fixed`). Also returns the
    distinct local optima (rounded to 1e-3) so bootstrap refits can start from the best few basins.
    """
    k = x.shape[1]
    cons = _free(k, constraint)
    starts = cons.expand(cons.compress(np.atleast_2d(np.asarray(starts, dtype=float))), fixed)
    _, first = np.unique(np.round(starts, 9), axis=0, return_index=True)  # ties make duplicates
    starts = starts[np.sort(first)]
    thetas, objs = batched_bfgs(starts, x, y, delta, None if weights is None else weights[None, :],
                                constraint=constraint, fixed=fixed)
    finite = np.isfinite(objs)
    n_failed = int((~finite).sum())
    if not finite.any():
        raise FloatingPointError("every start failed")
    order = np.argsort(objs)
    thetas, objs = thetas[order], objs[order]
    best, best_obj = polish(thetas[0], x, y, delta, weights, constraint=constraint, fixed=fixed)
    if best_obj <= objs[0]:
        thetas[0], objs[0] = best, best_obj
    finite = np.isfinite(objs)
    thetas, objs = thetas[finite], objs[finite]
    _, first = np.unique(np.round(thetas, 3), axis=0, return_index=True)
    first = np.sort(first)
    return LseFit(theta=thetas[0], objective=float(objs[0]), optima=thetas[first],
                  optima_objective=objs[first], n_starts=len(starts), n_failed=n_failed)


def refit_many(starts: np.ndarray, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None,
               delta: float = HUBER_DELTA, constraint: Constraint | None = None,
               fixed: np.ndarray | None = None) -> np.ndarray:
    """Resample refits: for each resample, the best of all `starts`; returns (n_resamples, p).

    A resample is a row of `weights` (multiplicities, the pairs bootstrap) and/or a row of `y`
    (responses, the wild bootstrap); `fixed` may also have one row per resample. All resamples x
    starts run as one batch; rows whose every start failed are NaN.
    """
    s = starts.shape[0]
    rows = [a.shape[0] for a in (weights, y, fixed) if a is not None and np.ndim(a) == 2]
    b = max(rows) if rows else 1
    theta0 = np.tile(starts, (b, 1))
    rep = lambda a: np.repeat(a, s, axis=0) if a is not None and np.ndim(a) == 2 and a.shape[0] == b else a
    thetas, objs = batched_bfgs(theta0, x, rep(y), delta, rep(weights), problem=np.repeat(np.arange(b), s),
                                constraint=constraint, fixed=rep(fixed))
    objs = objs.reshape(b, s)
    best = np.argmin(np.where(np.isfinite(objs), objs, np.inf), axis=1)
    out = thetas.reshape(b, s, -1)[np.arange(b), best].copy()
    out[~np.isfinite(objs).any(axis=1)] = np.nan
    return out
