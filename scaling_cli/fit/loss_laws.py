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

from scaling_cli.fit import backtest, family, parametric, reliability, selection
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


def fit_loss_laws(done, options: FitOptions, fitted_kind: str = "total", by_kind: dict | None = None,
                  extra: dict[str, backtest.DerivedPoints] | None = None) -> dict:
    """Entries, backtests, the accounting comparison, the selection and per-law diagnostics."""
    n, d, c, loss = _arrays(done)
    derived = (extra or {}).get(fitted_kind)
    train = backtest.training_set(n, d, c, loss, np.ones(len(loss), dtype=bool), derived)
    points_used = {"final": int(len(loss)), "curve": int(len(train[3]) - len(loss))}
    entries: dict[str, dict] = {}
    for name in family.MEMBERS:
        entries[name] = family.fit_member(name, *train[:2], train[3], options, groups=train[4], weights=train[5])
        if entries[name].get("status") == "ok":
            entries[name]["points_used"] = points_used
    entries["compute_only"] = parametric.fit_compute_only(c, d, n, loss, options)
    for entry in entries.values():
        if entry.get("status") == "ok":
            entry["reliable"], entry["reasons"] = reliability.assess(entry, float(loss.min()), float(c.max()))
    by_kind = by_kind or backtests_by_kind(done, fitted_kind, options, extra)
    backtests = by_kind[fitted_kind]
    chosen = selection.select_loss_law(entries, backtests)
    kinds = selection.compare_params_kinds(by_kind, fitted_kind) if len(by_kind) > 1 else None
    diagnostics = {}
    for name, e in entries.items():
        if e.get("status") != "ok":
            continue
        resid = e["residuals"] if name != "compute_only" else {
            "rmse_log": float(np.sqrt(np.mean([g["residuals"]["rmse_log"] ** 2 for g in e["groups"]])))}
        diagnostics[name] = {"residuals": resid, "heldout": backtests["largest_size"]["scores"].get(name),
                             "heldout_compute": backtests["largest_compute"]["scores"].get(name)}
    return {"entries": entries, "backtests": backtests, "holdout": backtests["largest_size"],
            "params_kinds": kinds, "selection": chosen, "diagnostics": diagnostics}


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
