"""Every loss law on one set of final points: fit, flag, backtest, compare accountings, select.

    block = fit_loss_laws(done, options)      # done: one row per (N, D) cell (pipeline.best_per_cell)
    block["entries"]["overtrain"], block["selection"]["loss_law"], block["backtests"]

The L(N, D) family (family.py: chinchilla, chinchilla_fixed_e, overtrain, overtrain_fixed_e) and
the per-M compute_only law are fitted with their bootstrap; each entry gets `reliable` and
`reasons` (reliability.py); every law is backtested on both hold-outs (backtest.py), also with the
other parameter count when the runs carry one (`params_alt`: total vs non-embedding); the law is
selected by selection.py. `resolve_auto_kind` makes `--params-kind auto` pick the accounting
before anything else is fitted.

Derived points from whole curves (curve_points.py; `extra`, as backtest.DerivedPoints in each
accounting) join the L(N, D) family's fits and backtests with their weights, each moving with its
run in the bootstrap; compute_only, the reliability checks and every held-out score use final
losses only. Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.fit import backtest, beta_n, calibration, family, fitset, parametric, reliability, selection
from scaling_cli.fit.bootstrap import FitOptions


def _arrays(done, params_col: str = "params"):
    return tuple(done[k].to_numpy(dtype=float) for k in (params_col, "tokens", "flops", "loss"))


def backtests_by_kind(done, fitted_kind: str, options: FitOptions,
                      extra: dict[str, backtest.DerivedPoints] | None = None) -> dict[str, dict]:
    """{kind: backtests} for the fitted accounting and, when present, the other one. `extra`: the
    derived points per accounting ({kind: DerivedPoints}), or None."""
    extra = extra or {}
    out = {fitted_kind: backtest.backtest(*_arrays(done), options, extra=extra.get(fitted_kind))}
    if "params_alt" in done.columns:
        other = "nonembed" if fitted_kind == "total" else "total"
        out[other] = backtest.backtest(*_arrays(done, "params_alt"), options, extra=extra.get(other))
    return out


# The L(N, D) laws (compute_only abstains at unfitted D/N and is scored apart).
SCREENED_LAWS = family.MEMBERS + (beta_n.NAME,)
# The laws that judge a fit set (fitset.py): the stiffest members, one exponent for N and D.
SET_JUDGES = tuple(sorted(family.TIED))


def _n_free() -> dict[str, int]:
    return {name: selection.estimated_parameters(name) for name in backtest.LOSS_LAWS}


def choose_fit_set(done, options: FitOptions, derived: backtest.DerivedPoints | None,
                   all_backtests: dict | None = None) -> dict:
    """The fit set the loss laws use (fitset.py) and the scores of every candidate.

    Returns {"name", "reason", "forced", "candidates": {name: {score, law, errors, why, n_kept,
    left_out or not_applicable}}, "backtests": {name: backtests}} (the backtests of each scored
    candidate, with every loss law, for reuse). `all_backtests`: the backtests of `all`, if known."""
    n, d, c, loss = _arrays(done)
    runs = done["run"].tolist() if "run" in done.columns else list(range(len(done)))
    forced = options.fit_set != "auto"
    names = [options.fit_set] if forced else list(fitset.AUTO)
    candidates, backtests = {}, {}
    for name in names:
        fs = fitset.get(name)
        why_not = fs.applies(n, d, c)
        if why_not and name != fitset.DEFAULT:
            candidates[name] = {"not_applicable": why_not}
            if forced:
                from scaling_cli.errors import UserError

                raise UserError(f"--fit-set {name}: {why_not}; use --fit-set all or auto")
            continue
        if name == fitset.DEFAULT:
            bt = all_backtests if all_backtests is not None else backtest.backtest(n, d, c, loss, options, extra=derived)
        else:
            bt = backtest.backtest(n, d, c, loss, options, laws=SET_JUDGES, extra=derived, fit_set=fs)
        backtests[name] = bt
        errors = {law: backtest.combined_error(bt, law) for law in SET_JUDGES}
        score, law = fitset.candidate_score(errors, _n_free())
        candidates[name] = {"score": score, "law": law, "errors": errors,
                            **fitset.describe_left_out(fs, n, d, c, runs)}
    if forced:
        name, reason = options.fit_set, f"forced by --fit-set {options.fit_set}"
    else:
        name, reason = fitset.choose({k: (v["score"], v["law"]) for k, v in candidates.items() if "score" in v})
    if name != fitset.DEFAULT and name in backtests:  # every other law on the chosen set
        others = tuple(law for law in backtest.LOSS_LAWS if law not in SET_JUDGES)
        rest = backtest.backtest(n, d, c, loss, options, laws=others, extra=derived, fit_set=fitset.get(name))
        for h, info in rest.items():
            backtests[name][h].setdefault("scores", {}).update(info.get("scores", {}))
    return {"name": name, "reason": reason, "forced": forced, "candidates": candidates, "backtests": backtests,
            "rule": {"set_margin": fitset.SET_MARGIN, "law_tie": fitset.LAW_TIE, "judges": list(SET_JUDGES),
                     "criterion": "combined backtest error of the candidate's best tied-exponent law (fewer free "
                                  "parameters winning ties within the law tie); a candidate replaces all runs only "
                                  "when better by the set margin"}}


def fit_loss_laws(done, options: FitOptions, fitted_kind: str = "total", by_kind: dict | None = None,
                  extra: dict[str, backtest.DerivedPoints] | None = None) -> dict:
    """Entries, backtests, the accounting comparison, the fit set, the selection, calibrations and
    per-law diagnostics."""
    n, d, c, loss = _arrays(done)
    derived = (extra or {}).get(fitted_kind)
    by_kind = dict(by_kind or backtests_by_kind(done, fitted_kind, options, extra))
    choice = choose_fit_set(done, options, derived, all_backtests=by_kind.get(fitted_kind))
    fs = fitset.get(choice["name"])
    keep = fs.mask(n, d, c)
    train = backtest.training_set(n, d, c, loss, keep, derived)
    weights = backtest.set_weights(train, fs)
    points_used = {"final": int(keep.sum()), "curve": int(len(train[3]) - keep.sum())}
    entries: dict[str, dict] = {}
    for name in family.MEMBERS:
        entries[name] = family.fit_member(name, *train[:2], train[3], options, groups=train[4], weights=weights)
    start = family.entry_chinchilla(entries["chinchilla"]) if entries["chinchilla"].get("status") == "ok" else None
    entries[beta_n.NAME] = beta_n.fit(*train[:2], train[3], options, groups=train[4], weights=weights,
                                      chinchilla_start=start)
    for name in SCREENED_LAWS:
        if entries[name].get("status") == "ok":
            entries[name]["points_used"] = points_used
    entries["compute_only"] = parametric.fit_compute_only(c[keep], d[keep], n[keep], loss[keep], options)
    for entry in entries.values():
        if entry.get("status") == "ok":
            entry["reliable"], entry["reasons"] = reliability.assess(entry, float(loss[keep].min()), float(c.max()))
    backtests = choice["backtests"].get(choice["name"])
    if backtests is None:  # forced `all` without the accounting's backtests
        backtests = backtest.backtest(n, d, c, loss, options, extra=derived)
    by_kind[fitted_kind] = backtests
    # The two largest sizes held out: the longest backtest a sweep allows, which calibrates every
    # law's interval and gates the laws beyond the Chinchilla family (selection.py).
    fold = calibration.two_sizes_fold(n, d, c, loss, options, backtest.LOSS_LAWS, fs if fs.name != "all" else None,
                                      derived)
    chosen = selection.select_loss_law(entries, backtests, longer=fold)
    chosen["far_agreement"] = selection.far_agreement(entries, chosen, float(c.max()))
    kinds = selection.compare_params_kinds(by_kind, fitted_kind) if len(by_kind) > 1 else None
    # Backtest-calibrated intervals (calibration.py): every law's misses, and the selected law's own
    # measured coverage.
    for name, entry in entries.items():
        if entry.get("status") == "ok":
            entry["calibration"] = calibration.calibrate_law(backtests | fold, name, options.level)
    if chosen.get("loss_law"):
        chosen["interval_coverage"] = calibration.nested_coverage(
            n, d, c, loss, chosen["loss_law"], options, backtests, fs if fs.name != "all" else None, derived)
    diagnostics = {}
    for name, e in entries.items():
        if e.get("status") != "ok":
            continue
        resid = e["residuals"] if name != "compute_only" else {
            "rmse_log": float(np.sqrt(np.mean([g["residuals"]["rmse_log"] ** 2 for g in e["groups"]])))}
        diagnostics[name] = {"residuals": resid, "heldout": backtests["largest_size"]["scores"].get(name),
                             "heldout_compute": backtests["largest_compute"]["scores"].get(name)}
    fit_set_block = {k: v for k, v in choice.items() if k != "backtests"} | \
        fitset.describe_left_out(fs, n, d, c, done["run"].tolist() if "run" in done.columns else list(range(len(n))))
    return {"entries": entries, "backtests": backtests, "holdout": backtests["largest_size"],
            "calibration_fold": fold, "params_kinds": kinds, "selection": chosen, "diagnostics": diagnostics,
            "fit_set": fit_set_block}


def resolve_auto_kind(prepared, done, options: FitOptions, extra: dict[str, backtest.DerivedPoints] | None = None):
    """For --params-kind auto: backtest both accountings, make the better one the params column.

    Returns (prepared, done, by_kind) with prepared.runs / done swapped when non-embedding wins and
    meta["params_kind"] set to the chosen kind; by_kind is reused by fit_loss_laws.
    """
    meta = prepared.meta
    meta["params_kind_requested"] = "auto"
    if "params_alt" not in done.columns:
        meta["params_kind"] = "total"
        meta["notes"].append("--params-kind auto: the runs have no second parameter count; using total")
        return prepared, done, None
    by_kind = backtests_by_kind(done, "total", options, extra)
    cmp = selection.compare_params_kinds(by_kind, "total")
    kind = cmp["selected"]
    meta["params_kind"] = kind
    meta["notes"].append(f"--params-kind auto chose {kind} parameters by backtest ({cmp['note']})")
    if kind == "nonembed":
        swap = lambda f: f.assign(params=f["params_alt"], params_alt=f["params"])
        prepared.runs, done = swap(prepared.runs), swap(done)
        columns = meta.setdefault("columns", {})
        columns["params"], meta["params_alt"] = meta["params_alt"]["column"], {"column": columns.get("params", "params"),
                                                                               "kind": "total"}
        by_kind = {"nonembed": by_kind["nonembed"], "total": by_kind["total"]}
    return prepared, done, by_kind
