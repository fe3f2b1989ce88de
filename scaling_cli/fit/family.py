"""The L(N, D) family: Chinchilla's law and its constrained members, fitted one way.

    from scaling_cli.fit.family import fit_member
    entry = fit_member("overtrain", params, tokens, loss, FitOptions())

    member               form                                            free parameters
    chinchilla           L = E + A/N^alpha + B/D^beta                    5
    chinchilla_fixed_e   the same, E fixed (see below)                   4
    overtrain            L = E + (a M^eta + b M^-eta) C^-eta, M = D/N    4
    overtrain_fixed_e    the same, E fixed                               3

One parametrisation serves them all: theta = (log A, log B, alpha, beta, log E) of the
log-sum-exp form in (log N, log D), fitted by Huber on log L from a grid of starts (robust.py),
with a robust.Constraint for the tie alpha = beta and for a fixed E. With C = 6ND, Gadre et al.'s
over-training law *is* the alpha = beta member (eta = alpha/2, a = A 6^eta, b = B 6^eta): the
"alpha = beta" candidate of the constrained family and the over-training law are one fit,
reported in Gadre's parameters. It is fitted jointly over every M = D/N (four numbers for all
multipliers at once; the one-M-at-a-time version is parametric.fit_compute_only), and C is 6ND,
not a FLOPs column that may count attention, so it answers at any (N, D) a user names.

Fixed E. The irreducible loss is the parameter a sweep of small models pins down least: the
fitted E trades off against the power terms with almost no change in fit quality, and that
direction is exactly what decides an extrapolation. The fixed-E members decide it by
extrapolation instead of by in-sample fit: for E on a grid of fractions (0.05..0.95) of the
smallest loss, the other parameters are fitted to every run except the largest model size and
scored on that size (mean |log error|), and likewise one size down (the largest dropped, the
next held out) when >= 3 sizes remain, the two folds weighted equally so one size's luck does not
decide E alone; the best E, refined on a grid four times finer and interpolated between its
points (parabola through the best three), is fixed and the rest refitted on all runs. In a
backtest the profile runs inside the training runs (nested: it holds out their own largest
sizes), and in the bootstrap inside every resample (on a window around the point estimate), so
its uncertainty is in the intervals. It needs >= 3 model sizes.

Intervals come from the resampling scheme of intervals.py (a wild bootstrap clustered by model
size by default; see the coverage table there and in the README). Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from scaling_cli.fit import intervals, laws, robust
from scaling_cli.fit.bootstrap import FitOptions
from scaling_cli.fit.entries import not_enough, residual_stats, summarize
from scaling_cli.fit.grouping import cluster_log, top_groups

MEMBERS = ("chinchilla", "chinchilla_fixed_e", "overtrain", "overtrain_fixed_e")
TIED = frozenset({"overtrain", "overtrain_fixed_e"})
FIXED_E = frozenset({"chinchilla_fixed_e", "overtrain_fixed_e"})

# E profile: coarse fractions of the smallest loss, then a grid 4x finer around the best.
E_FRACTIONS = np.linspace(0.05, 0.95, 19)
E_REFINE = np.linspace(-0.05, 0.05, 9)
# The bootstrap re-runs the profile on a window around the point estimate's E (fractions of the
# smallest loss): +-0.2 covers many interval widths of a well-identified E at a quarter of the cost,
# and a resample that wants E outside it pins to its edge, so wider uncertainty still shows.
BOOT_WINDOW = np.linspace(-0.2, 0.2, 9)
# Iteration cap of the profile's inner fits (a full fit allows 400; warm-started inner fits
# converge in tens, and the cap only bites on flat, degenerate objectives).
PROFILE_MAXITER = 100
# Starts per E value in the point fit's profile (the best of the grid by initial objective).
PROFILE_STARTS = 8

# Column of log E in theta (a, b, alpha, beta, e).
_E = 4


def constraint(name: str) -> robust.Constraint | None:
    if name in TIED:
        return robust.Constraint.tied_exponents(2, fix_e=name in FIXED_E)
    if name in FIXED_E:
        return robust.Constraint.fixed_e(2)
    return None


def grid(x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """The multi-start grid with `size` values per axis (4: the default 4^(2k+1) grid)."""
    if size == 4:
        return robust.lse_grid(x, y)
    return robust.lse_grid(x, y, exponents=tuple(np.linspace(0.1, 1.0, size)),
                           term_fractions=tuple(np.geomspace(0.05, 0.9, size)),
                           const_fractions=tuple(np.linspace(0.2, 0.95, size)))


def member_grid(name: str, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """The grid restricted to the member: alpha = beta rows when tied; one row per free part."""
    g = grid(x, y, size)
    if name in TIED:
        g = g[np.isclose(g[:, 2], g[:, 3])]
    if name in FIXED_E:
        _, first = np.unique(np.round(g[:, :_E], 9), axis=0, return_index=True)
        g = g[np.sort(first)]
    return g


def predict_log(thetas: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log L for many thetas at once: (m, n) from thetas (m, 5) and log-inputs x (n, 2)."""
    t = np.atleast_2d(thetas)
    terms = np.stack([t[:, :1] - t[:, 2:3] * x[:, 0], t[:, 1:2] - t[:, 3:4] * x[:, 1],
                      np.broadcast_to(t[:, 4:5], (t.shape[0], x.shape[0]))])
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


def theta_to_params(name: str, theta: np.ndarray) -> np.ndarray:
    """theta rows -> rows of the law's parameters in laws.LAWS[name].param_names order."""
    t = np.atleast_2d(theta)
    E, A, B, alpha, beta = np.exp(t[:, 4]), np.exp(t[:, 0]), np.exp(t[:, 1]), t[:, 2], t[:, 3]
    if name in TIED:
        eta = alpha / 2.0
        scale = laws.FLOPS_PER_PARAM_TOKEN ** eta
        return np.stack([E, A * scale, B * scale, eta], axis=1)
    return np.stack([E, A, B, alpha, beta], axis=1)


def chinchilla_rows(name: str, rows: np.ndarray) -> np.ndarray:
    """Law-parameter rows -> (E, A, B, alpha, beta) rows of the equal Chinchilla form."""
    r = np.atleast_2d(np.asarray(rows, dtype=float))
    if r.size == 0:
        return np.empty((0, 5))
    if name in TIED:
        return np.stack(laws.overtrain_to_chinchilla(*(r[:, i] for i in range(4))), axis=1)
    return r


def _screened(starts: np.ndarray, x: np.ndarray, y: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` starts with the lowest initial objective."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values, _ = robust.lse_objective_batch(starts, x, y)
    values[~np.isfinite(values)] = np.inf
    return starts[np.argsort(values, kind="stable")[:keep]]


def screened_starts(name: str, x: np.ndarray, y: np.ndarray, size: int, keep: int,
                    e_fixed: float | None = None) -> np.ndarray:
    """The member grid's `keep` best starts on (x, y) (cheap refits: backtests, profiles)."""
    g = member_grid(name, x, y, size)
    if e_fixed is not None:
        g = g.copy()
        g[:, _E] = e_fixed
    return _screened(g, x, y, keep)


def _best_per_problem(theta0: np.ndarray, problem: np.ndarray, n_problems: int, x, y, weights, cons, fixed):
    """Refit every row; the best theta per problem label (NaN rows where every start failed).

    These are inner fits (E profiles, their bootstrap): PROFILE_MAXITER iterations bound the cost
    of the flat directions a degenerate sweep has, where BFGS would otherwise crawl to maxiter."""
    thetas, objs = robust.batched_bfgs(theta0, x, y, weights=weights, problem=problem, constraint=cons, fixed=fixed,
                                       maxiter=PROFILE_MAXITER)
    objs = np.where(np.isfinite(objs), objs, np.inf)
    order = np.lexsort((objs, problem))
    first = order[np.unique(problem[order], return_index=True)[1]]
    out = np.full((n_problems, theta0.shape[1]), np.nan)
    ok = np.isfinite(objs[first])
    out[problem[first][ok]] = thetas[first][ok]
    return out


def _rows_of(a, b: int, n: int) -> np.ndarray | None:
    return None if a is None else np.broadcast_to(np.atleast_2d(a), (b, n))


def profile_folds(n: np.ndarray, max_folds: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward-chaining folds over model size: (train, test) masks holding out the largest size
    (grouping.top_groups, as the backtests do), then the next largest with the largest dropped,
    as long as >= 2 sizes remain to fit."""
    folds, keep = [], np.ones(len(n), dtype=bool)
    for _ in range(max_folds):
        idx = np.flatnonzero(keep)
        if len(np.unique(cluster_log(n[idx]))) < 3:
            break
        test = np.zeros(len(n), dtype=bool)
        test[idx[top_groups(n[idx])]] = True
        keep = keep & ~test
        folds.append((keep.copy(), test))
    return folds


def profile_e(name: str, x: np.ndarray, y: np.ndarray, starts: np.ndarray,
              weights: np.ndarray | None = None, ys: np.ndarray | None = None,
              around: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """log E chosen by held-out error, for each resample at once.

    For every E of the grid, fits the member to the training runs of each fold (`profile_folds`;
    from `starts`: (s, 5) shared starts, e overwritten) and scores the fold's held-out size
    (mean |log error|, folds weighted equally); averaging two folds keeps one size's luck from
    deciding E alone. Resamples are rows of `weights` and/or `ys` (one resample when both are
    None). `around` (a fraction of the smallest loss) searches only BOOT_WINDOW around it, as the
    bootstrap does around the point estimate. Returns (log E per resample (b,), first-fold thetas
    at that E (b, 5)); NaN where every fit failed.
    """
    cons = constraint(name)
    folds = profile_folds(np.exp(x[:, 0]))
    b = max([a.shape[0] for a in (weights, ys) if a is not None] or [1])
    y_rows = _rows_of(ys if ys is not None else y, b, len(y))
    w_rows = _rows_of(weights, b, len(y))
    # Fractions of the smallest (resampled) loss: E below every observed loss.
    floor = np.exp(np.min(y_rows, axis=1))

    def fold_stage(train, test, theta0, problem, n_prob, g, s):
        rep = lambda a: None if a is None else np.repeat(a[:, train], g * s, axis=0)
        y_fit = y[train] if ys is None else rep(y_rows)
        best = _best_per_problem(theta0, problem, n_prob, x[train], y_fit, rep(w_rows), cons, theta0)
        pred = predict_log(best, x[test]).reshape(b, g, -1)
        # A pairs resample scores the held-out runs it drew, as often as it drew them.
        w_test = np.ones((b, int(test.sum()))) if w_rows is None else w_rows[:, test] + 1e-12
        with np.errstate(invalid="ignore"):
            scores = (np.abs(pred - y_rows[:, None, test]) * w_test[:, None, :]).sum(axis=2) / w_test.sum(axis=1)[:, None]
        return best, scores

    def stage(fractions: np.ndarray, starts_per: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # fractions (b, g); starts_per (b, g, s, 5) -> first-fold thetas (b, g, 5), scores (b, g)
        g, s = fractions.shape[1], starts_per.shape[2]
        e_vals = np.log(np.maximum(fractions, 1e-4) * floor[:, None])
        theta0 = starts_per.reshape(-1, 5).copy()
        theta0[:, _E] = np.repeat(e_vals.ravel(), s)
        problem = np.repeat(np.arange(b * g), s)
        total, first = np.zeros((b, g)), None
        for train, test in folds:
            best, scores = fold_stage(train, test, theta0, problem, b * g, g, s)
            total += scores
            first = best if first is None else first
        total[~np.isfinite(total)] = np.inf
        return first.reshape(b, g, 5), total

    grid_ = E_FRACTIONS if around is None else np.clip(around + BOOT_WINDOW, 0.01, 0.99)
    coarse = np.broadcast_to(grid_, (b, len(grid_)))
    starts_c = np.broadcast_to(starts[None, None], (b, len(grid_), *starts.shape))
    thetas, scores = stage(coarse, starts_c)
    pick = np.argmin(scores, axis=1)
    fine = np.clip(coarse[np.arange(b), pick][:, None] + E_REFINE[None, :], 0.01, 0.99)
    warm = np.broadcast_to(thetas[np.arange(b), pick][:, None, None, :], (b, len(E_REFINE), 1, 5))
    thetas_f, scores_f = stage(fine, warm)
    rows = np.arange(b)
    pick_f = np.argmin(scores_f, axis=1)
    best = thetas_f[rows, pick_f]
    failed = ~np.isfinite(scores_f[rows, pick_f])
    best[failed] = np.nan
    # The held-out error is smooth in E near its minimum: the vertex of the parabola through the
    # best grid point and its neighbours places E between grid points, so neither the estimate nor
    # its bootstrap distribution is quantised to the grid step (which would make intervals too narrow).
    inner = (pick_f > 0) & (pick_f < fine.shape[1] - 1) & ~failed
    frac = fine[rows, pick_f].copy()
    if inner.any():
        i = rows[inner]
        f0, f1, f2 = (scores_f[i, pick_f[i] + k] for k in (-1, 0, 1))
        step = fine[i, 1] - fine[i, 0]
        curv = f0 - 2 * f1 + f2
        with np.errstate(all="ignore"):
            shift = np.where((curv > 0) & np.isfinite(curv), 0.5 * step * (f0 - f2) / curv, 0.0)
        frac[i] = frac[i] + np.clip(np.nan_to_num(shift), -step, step)
    e = np.where(failed, np.nan, np.log(np.maximum(frac, 1e-4) * floor))
    return e, best


def _n_sizes(n: np.ndarray) -> int:
    return len(np.unique(cluster_log(n)))


def fit_member(name: str, params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, options: FitOptions | None = None,
               starts: np.ndarray | None = None, intervals_: bool = True,
               method: str = intervals.DEFAULT_METHOD, widening: float | None = None,
               groups: ArrayLike | None = None, weights: ArrayLike | None = None) -> dict:
    """Fit one member of the family; the fit.json entry (status "ok" or "not enough data").

    `starts` overrides the grid (backtests pass a screened subset); `intervals_=False` skips the
    bootstrap (point fits for backtests). `method` is the resampling scheme (intervals.METHODS) and
    `widening` the stretch of its samples (default: intervals.widening, measured for `method`).
    `groups` labels the points the bootstrap moves together within a model size (e.g. every point
    derived from one run's curve; default: each point alone); `weights` weight each point's Huber
    loss (derived points count less than measured ones).
    """
    options = options or FitOptions()
    law = laws.LAWS[name]
    n_arr, d_arr, l_arr = (np.asarray(v, dtype=float) for v in (params, tokens, loss))
    if len(l_arr) < law.n_free + 1:
        return not_enough(name, f"{len(l_arr)} points for {law.n_free} free parameters")
    if len(np.unique(n_arr)) < 2 or len(np.unique(d_arr)) < 2:
        return not_enough(name, "params and tokens must each take at least 2 distinct values")
    sizes = cluster_log(n_arr)
    if name in FIXED_E and _n_sizes(n_arr) < 3:
        return not_enough(name, "fixing E by its held-out profile needs runs of >= 3 model sizes")
    x = np.column_stack([np.log(n_arr), np.log(d_arr)])
    y = np.log(l_arr)
    w = None if weights is None else np.asarray(weights, dtype=float)
    units = np.arange(len(y)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    cons = constraint(name)
    fixed = None
    profile = None
    if name in FIXED_E:
        train = ~top_groups(n_arr)
        prof_starts = screened_starts(name, x[train], y[train], options.grid_size, PROFILE_STARTS,
                                      e_fixed=float(np.log(0.5 * np.exp(y.min()))))
        e_hat, _ = profile_e(name, x, y, prof_starts, weights=None if w is None else w[None, :])
        if not np.isfinite(e_hat[0]):
            return not_enough(name, "every fit of the E profile failed")
        fixed = np.zeros(5)
        fixed[_E] = e_hat[0]
        profile = {"E": float(np.exp(e_hat[0])), "E_over_min_loss": float(np.exp(e_hat[0] - y.min())),
                   "how": "E minimising the mean |log error| on held-out sizes when fitted to the smaller ones "
                          "(folds: the largest size; the next, with the largest dropped) over a grid of "
                          f"{len(E_FRACTIONS)} fractions of the smallest loss, refined 4x and interpolated"}
    if starts is None:
        starts = member_grid(name, x, y, options.grid_size)
    if fixed is not None:
        starts = starts.copy()
        starts[:, _E] = fixed[_E]
    fit = robust.fit_lse(x, y, starts, weights=w, constraint=cons, fixed=fixed)
    fitted = robust.lse_predict(fit.theta, x)
    point = theta_to_params(name, fit.theta)[0]
    boot = np.empty((0, 5))
    if intervals_ and options.n_boot > 0:
        boot = _bootstrap(name, x, y, sizes, units, w, fit, fitted, fixed, options, method)
        if widening is None:
            widening = intervals.widening(name, len(np.unique(sizes)), method, options.level)
    widening = 1.0 if widening is None else float(widening)
    # fit.json keeps the raw joint samples; every interval widens its own quantity (stretch_values)
    samples = theta_to_params(name, boot) if len(boot) else np.empty((0, law.n_params))
    p, iv = summarize(law.param_names, point, intervals.stretch_values(samples, point, widening), options.level)
    entry = {
        "law": name, "status": "ok", "form": law.form, "reference": law.reference,
        "inputs": list(law.inputs), "param_names": list(law.param_names), "fixed": list(law.fixed),
        "params": p, "intervals": iv, "samples": samples.tolist(),
        "n_points": int(len(y)), "n_groups": int(len(np.unique(sizes))), "n_units": int(len(np.unique(units))),
        "optimizer": {"method": "Huber(log L): batched BFGS from every start, best polished by L-BFGS-B",
                      "huber_delta": robust.HUBER_DELTA,
                      "n_starts": fit.n_starts, "n_failed": fit.n_failed, "objective": fit.objective,
                      "n_boot": int(options.n_boot if intervals_ else 0),
                      "n_boot_failed": int(np.isnan(samples).any(axis=1).sum()) if len(samples) else 0,
                      "interval_method": method if intervals_ and options.n_boot > 0 else None,
                      "interval_widening": widening},
        "residuals": residual_stats(y, fitted),
        "chinchilla_form": dict(zip(laws.LAWS["chinchilla"].param_names,
                                    map(float, chinchilla_rows(name, point[None, :])[0]))),
    }
    if profile is not None:
        entry["e_profile"] = profile
    if name == "chinchilla":
        entry["reference_params"] = dict(laws.EPOCH_CHINCHILLA)
    entry["derived"] = derived(name, point, samples, options.level, widening)
    return entry


def _bootstrap(name, x, y, sizes, units, point_weights, fit: robust.LseFit, fitted, fixed, options: FitOptions,
               method: str) -> np.ndarray:
    """Resample (intervals.resample) and refit: theta rows, NaN where a refit failed."""
    weights, ys = intervals.resample(method, y, fitted, sizes, laws.LAWS[name].n_free, options.n_boot, options.rng(1),
                                     units=units)
    if point_weights is not None:
        weights = (np.ones((options.n_boot, len(y))) if weights is None else weights) * point_weights[None, :]
    cons = constraint(name)
    if name not in FIXED_E:
        return robust.refit_many(fit.optima[: options.boot_starts], x, y if ys is None else ys, weights,
                                 constraint=cons)
    # The E profile inside every resample (warm-started from the point fit), then the final refit.
    e_b, train_theta = profile_e(name, x, y, fit.theta[None, :], weights=weights, ys=ys,
                                 around=float(np.exp(fixed[_E] - y.min())))
    ok = np.isfinite(e_b)
    fixed_rows = np.tile(fixed, (len(e_b), 1))
    fixed_rows[:, _E] = np.where(ok, e_b, fixed[_E])
    starts = np.stack([np.where(ok[:, None], train_theta, fit.theta[None, :]), np.tile(fit.theta, (len(e_b), 1))], axis=1)
    starts[:, :, _E] = fixed_rows[:, None, _E]
    b = len(e_b)
    problem = np.repeat(np.arange(b), 2)
    rep = lambda a: None if a is None else np.repeat(a, 2, axis=0)
    out = _best_per_problem(starts.reshape(-1, 5), problem, b, x, y if ys is None else rep(ys), rep(weights), cons,
                            rep(fixed_rows))
    out[~ok] = np.nan
    return out


def derived(name: str, point: np.ndarray, samples: np.ndarray, level: float, widening: float = 1.0) -> dict:
    """Compute-optimal exponents and G (and M* = D_opt/N_opt for the over-training law)."""
    def derive(rows):
        E, A, B, alpha, beta = chinchilla_rows(name, rows).T
        with np.errstate(all="ignore"):
            g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
            cols = [beta / (alpha + beta), alpha / (alpha + beta), g]
            if name in TIED:
                r = np.atleast_2d(rows)
                cols.append(laws.overtrain_optimal_ratio(r[:, 1], r[:, 2], r[:, 3]))
        return np.stack(cols, axis=1)

    names = ("n_opt_exponent", "d_opt_exponent", "G") + (("tokens_per_param_opt",) if name in TIED else ())
    at_point = derive(point[None, :])[0]
    s = intervals.stretch_values(derive(samples), at_point, widening) if len(samples) else np.empty((0, len(names)))
    vals, iv = summarize(names, at_point, s, level)
    vals["formula"] = ("M* = D_opt/N_opt = (b/a)^(1/(2 eta)) at every C; N_opt = sqrt(C/(6 M*))" if name in TIED else
                       "N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = C/(6 N_opt), G = (alpha A/(beta B))^(1/(alpha+beta))")
    return {"values": vals, "intervals": iv}


def entry_widening(entry: dict) -> float:
    """The stretch every interval of this entry gets (intervals.widening); 1 for older fits."""
    return float((entry.get("optimizer") or {}).get("interval_widening") or 1.0)


def entry_chinchilla(entry: dict, use_samples: bool = False) -> np.ndarray | None:
    """(E, A, B, alpha, beta) of a fitted member: the point (5,), or sample rows (n, 5); None if none."""
    if entry.get("status") != "ok":
        return None
    if not use_samples:
        return chinchilla_rows(entry["law"], np.array([[entry["params"][k] for k in entry["param_names"]]]))[0]
    s = np.asarray(entry.get("samples", []), dtype=float)
    if s.size == 0:
        return None
    return chinchilla_rows(entry["law"], s)
