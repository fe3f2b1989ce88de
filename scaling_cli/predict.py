"""Evaluate a fit report (fit.json) at a target scale, with intervals.

    from scaling_cli.fit.artifact import read_report
    from scaling_cli.predict import predict
    result = predict(read_report("runs/_fit/fit.json"), params=7e9, tokens=1.4e12)

Targets: (N, D); (N, C) with D = C/(6N); C alone, which uses the compute-optimal N_opt and D_opt
of the allocation law (fit.json selection.allocation_law: the selected law, or the best-backtested
law of N and D); or N alone, which uses the compute-optimal D for that N.

Two intervals at the fit's level (90% by default):
- confidence interval (CI): the spread of the law itself, from the bootstrap parameter samples;
- prediction interval (PI): what one training run will show, CI samples times exp(eps) with eps
  drawn from N(0, s^2), s the fit's residual RMSE of log loss. `loss_lo`/`loss_hi` are the PI.
The loss comes from the law the fit selected by held-out error (fit.json "selection"); if that law
cannot answer this target (compute_only at an unfitted D/N), the parametric law is used and the
result says so. The result carries the law, its backtest error (`backtest_error`: mean |relative
error| on held-out runs, averaged over the two hold-outs) and `extrapolation_factor` (target C /
largest fitted C). Every prediction carries an interval: the PI is widened to the backtest-calibrated
interval (fit/conformal.py: the law's misses on held-out runs, scaled as 1 + ln(distance)) and to
the predictions of laws that backtest alike (fit.json selection.alike); where fit found that the
geometric mean of those laws' predictions backtests better than the selected law alone (fit.json
selection.average), the point is that mean (`loss_selected_law` is the selected law's own,
`averaged_over` the laws averaged). No confident nonsense: a law
flagged unreliable (fit/reliability.py) gets no bootstrap interval (`loss_ci` null; `loss_pi` is the
backtest-calibrated one alone) and no allocation (`compute_optimal.withheld` says why), nor
does an allocation outside D/N 1..1000; `warnings` lists what not to trust. Downstream metrics the fit found support for (fit.json "downstream") get one key
each, named after the metric column (e.g. next_verse_acc, with next_verse_acc_interval: the
two-stage confidence interval compute -> loss -> metric); see scaling_cli.fit.downstream. A downstream
law flagged unreliable (fit/downstream_reliability.py) gets no value: status "unreliable" and the reason.
numpy only.
"""

from __future__ import annotations

import numpy as np

from scaling_cli import units
from scaling_cli.errors import UserError
from scaling_cli.fit import conformal, downstream, family, hyperparams, intervals, laws, parametric, reliability
from scaling_cli.fit import selection as selection_rules
from scaling_cli.fit.bootstrap import finite_interval, scatter_draws
from scaling_cli.units import with_bits

# Residual draws per bootstrap sample for the prediction interval (200 samples x 50 = 10,000 draws).
PI_DRAWS_PER_SAMPLE = 50


def allocation_entry(report: dict) -> tuple[str | None, dict]:
    """The law that answers compute-optimal questions: the selection's allocation law (a member of
    the L(N, D) family), else chinchilla; ({}, None) when there is none."""
    entries = report["laws"]
    name = report.get("selection", {}).get("allocation_law") or "chinchilla"
    entry = entries.get(name, {})
    return (name, entry) if entry.get("status") == "ok" else (None, {})


def _ratio_interval(entry: dict, flops: float, level: float) -> list[float | None]:
    """The bootstrap interval of the compute-optimal D/N at `flops` (widened like every interval)."""
    s = family.entry_chinchilla(entry, use_samples=True)
    if s is None or len(s) < 2:
        return [None, None]
    with np.errstate(all="ignore"):
        n_opt, d_opt = laws.chinchilla_optimum(flops, *(s[:, i] for i in range(5)))
        point = reliability.optimal_ratio(family.entry_chinchilla(entry), flops)
        return finite_interval(intervals.stretch_values(d_opt / n_opt, point, family.entry_widening(entry)), level)


def allocation_withheld(name: str | None, entry: dict, flops: float, level: float = 0.9) -> str | None:
    """Why the compute-optimal allocation at `flops` is not to be trusted, or None.

    A law flagged only because its E is not identified still gives the allocation when the 90%
    interval of its D/N at `flops` lies inside the plausible 1..1000 (the allocation depends on E only
    through the exponents, and that uncertainty is in the interval predict prints); any other flag,
    or an interval that leaves the range, withholds it."""
    if name is None:
        return "the fit has no law of N and D (see fit.json laws.*.reason)"
    if not entry.get("reliable", True):
        blocking = [r for r in entry.get("reasons", []) if not r.startswith("E is not identified")]
        if blocking:
            return f"{name} is flagged unreliable: " + "; ".join(entry.get("reasons", []))
        lo, hi = _ratio_interval(entry, flops, level)
        lo_ok, hi_ok = reliability.RATIO_RANGE
        if lo is None or not (lo_ok <= lo and hi <= hi_ok):
            shown = "no interval" if lo is None else f"D/N {level:.0%} interval {lo:.3g}..{hi:.3g}"
            return (f"{name} is flagged unreliable ({'; '.join(entry.get('reasons', []))}) and its allocation is not "
                    f"pinned down either ({shown}, outside {lo_ok:g}..{hi_ok:g})")
    ratio = reliability.optimal_ratio(family.entry_chinchilla(entry), flops)
    why = reliability.ratio_reason(ratio, f"at C = {flops:.3g}")
    return f"{name}: {why[0]}" if why else None


def _resolve_target(report: dict, params, tokens, flops) -> tuple[float | None, float | None, float | None, dict]:
    """(N, D, C, notes) from whichever of N, D, C were given; N or D is None when it would come
    from a compute-optimal allocation that is withheld (notes["withheld"] says why)."""
    notes: dict = {}
    for name, value in (("params", params), ("tokens", tokens), ("flops", flops)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise UserError(f"--{name} must be a positive number, got {value}")
    if params is None and flops is None:
        raise UserError("give --params (optionally with --tokens or --flops) or --flops alone")
    if params is not None and tokens is not None and flops is not None:
        raise UserError("give at most two of --params, --tokens, --flops (the third follows from C = 6ND)")
    k = laws.FLOPS_PER_PARAM_TOKEN
    name, entry = allocation_entry(report)
    if params is None:  # flops only (or flops + tokens)
        if tokens is not None:
            return flops / (k * tokens), tokens, flops, {"params_from": "C / (6 D)"}
        if name is None:
            raise UserError("--flops alone needs a law of N and D, which this fit lacks; give --params too")
        why = allocation_withheld(name, entry, flops)
        if why:
            return None, None, flops, {"withheld": why}
        n_opt, d_opt = laws.chinchilla_optimum(flops, *family.entry_chinchilla(entry))
        return float(n_opt), float(d_opt), flops, {"params_from": f"compute-optimal N_opt(C) ({name})",
                                                   "tokens_from": "C / (6 N_opt)"}
    if tokens is None and flops is not None:
        return params, flops / (k * params), flops, {"tokens_from": "C / (6 N)"}
    if tokens is None:
        if name is None:
            raise UserError("--params alone needs a law of N and D for compute-optimal tokens; give --tokens too")
        d_opt = float(laws.chinchilla_tokens_for_params(params, *family.entry_chinchilla(entry)))
        why = allocation_withheld(name, entry, k * params * d_opt)
        if why:
            return params, None, None, {"withheld": why}
        return params, d_opt, k * params * d_opt, {"tokens_from": f"compute-optimal D for this N ({name})"}
    return params, tokens, k * params * tokens, {"flops_from": "6 N D"}


def _compute_optimal(name: str | None, entry: dict, params: float, flops: float, level: float) -> dict | None:
    """N_opt and D_opt at this compute, and the compute-optimal D for this N, with intervals;
    {"withheld": reason} when the allocation law is unreliable or its allocation implausible."""
    if name is None:
        return None
    why = allocation_withheld(name, entry, flops)
    if why:
        return {"withheld": why, "law": name}
    theta = family.entry_chinchilla(entry)
    n_opt, d_opt = laws.chinchilla_optimum(flops, *theta)
    d_for_n = laws.chinchilla_tokens_for_params(params, *theta)
    out = {"law": name, "flops": flops, "params_opt": float(n_opt), "tokens_opt": float(d_opt),
           "tokens_per_param_opt": float(d_opt / n_opt), "tokens_opt_for_params": float(d_for_n),
           "tokens_per_param_opt_interval": _ratio_interval(entry, flops, level)}
    if not entry.get("reliable", True):
        out["note"] = (f"{name} is flagged ({'; '.join(entry.get('reasons', []))}); its allocation is shown because "
                       "its D/N interval stays inside 1..1000")
    s = family.entry_chinchilla(entry, use_samples=True)
    if s is not None:
        cols = tuple(s[:, i] for i in range(5))
        k = family.entry_widening(entry)
        with np.errstate(all="ignore"):
            ns, ds = laws.chinchilla_optimum(flops, *cols)
            dn = laws.chinchilla_tokens_for_params(params, *cols)
            out["params_opt_interval"] = finite_interval(intervals.stretch_values(ns, n_opt, k), level)
            out["tokens_opt_interval"] = finite_interval(intervals.stretch_values(ds, d_opt, k), level)
            out["tokens_opt_for_params_interval"] = finite_interval(intervals.stretch_values(dn, d_for_n, k), level)
    return out


def _reference_hparams(params: float, tokens: float, flops: float) -> dict:
    """Published optima at this scale, for comparison (constants cited in fit/laws.py)."""
    a, b, c = laws.STEP_LAW["lr"]
    d, e = laws.STEP_LAW["batch_size"]
    la, lb = laws.DEEPSEEK["lr"]
    ba, bb = laws.DEEPSEEK["batch_size"]
    return {"step_law": {"lr": a * params**b * tokens**c, "batch_size": d * tokens**e},
            "deepseek": {"lr": la * flops**lb, "batch_size": ba * flops**bb}}


def _backtest_summary(report: dict, law: str) -> dict:
    """The law's backtest errors (mean |relative error| per hold-out) and how far each reached."""
    out = {}
    for holdout, info in (report.get("backtests") or {}).items():
        score = info.get("scores", {}).get(law, {})
        out[holdout] = {"mean_abs_rel_error": score.get("mean_abs_rel_error"),
                        "mean_rel_error": score.get("mean_rel_error"),
                        "extrapolation_factor": info.get("extrapolation_factor")}
    return out



def _law_keys(report: dict, law_name: str, law_note: str) -> dict:
    """What a prediction says about the law it used: name, why chosen, flags and its backtests."""
    entry = report.get("laws", {}).get(law_name, {})
    ranking = report.get("selection", {}).get("ranking", [])
    return {"law": law_name, "law_reason": law_note, "reliable": bool(entry.get("reliable", True)),
            "reasons": list(entry.get("reasons", [])),
            "backtest_error": next((r["combined_error"] for r in ranking if r["law"] == law_name), None),
            "backtest": _backtest_summary(report, law_name)}

def _alike_predictions(entries: dict, selection: dict, law_name: str, n: float, d: float, c: float) -> dict[str, float]:
    """{law: loss at (N, D)} of the other laws that backtest alike with the selected one (none when
    the law answering is not the selected one, e.g. a fallback)."""
    spread: dict[str, float] = {}
    if law_name != selection.get("loss_law"):
        return spread
    for other in selection.get("alike", []):
        v = None if other == law_name else parametric.entry_loss(entries.get(other, {}), n, d, c)
        if v is not None and np.isfinite(np.ravel(v)[0]) and np.ravel(v)[0] > 0:
            spread[other] = float(np.ravel(v)[0])
    return spread


def predict(report: dict, params: float | None = None, tokens: float | None = None, flops: float | None = None,
            level: float | None = None, seed: int = 0) -> dict:
    """Point predictions and intervals at the target; see the module docstring."""
    level = float(level if level is not None else report.get("level", 0.9))
    entries = report["laws"]
    n, d, c, notes = _resolve_target(report, params, tokens, flops)
    selection = report.get("selection", {})
    law_name = selection.get("loss_law")
    law_note = selection.get("reason", "")
    if law_name is None:
        raise UserError("the fit has no usable loss law (see fit.json laws.*.reason); add runs and re-run `scaling-cli fit`")
    warnings_: list[str] = []
    max_c = report.get("data", {}).get("ranges", {}).get("flops", [None, None])[1]
    result: dict = {"params": n, "tokens": d, "flops": c, "tokens_per_param": None if n is None or d is None else d / n,
                    "params_kind": report.get("data", {}).get("params_kind", "total"), "level": level,
                    "loss": None, "loss_lo": None, "loss_hi": None, "loss_ci": [None, None], "loss_pi": [None, None],
                    "loss_unit": units.unit_of(report), "target_notes": notes}
    if d is None or n is None:  # the target needs an allocation that is withheld
        result |= _law_keys(report, law_name, law_note) | {
                   "residual_rmse_log": None,
                   "extrapolation_factor": c / max_c if c and max_c else None,
                   "compute_optimal": {"withheld": notes["withheld"]},
                   "warnings": [f"no loss predicted: the compute-optimal allocation is withheld ({notes['withheld']}); "
                                "give --tokens (with --params) to predict at a stated D"]}
        if result["extrapolation_factor"]:
            result["extrapolation_factor_flops"] = result["extrapolation_factor"]
        result["reference_hparams"] = None
        return result
    point = parametric.entry_loss(entries[law_name], n, d, c)
    if point is None and law_name != "chinchilla" and entries.get("chinchilla", {}).get("status") == "ok":
        law_note = f"{law_name} has no fitted group with D/N = {d / n:.3g}; fell back to chinchilla"
        law_name = "chinchilla"
        point = parametric.entry_loss(entries[law_name], n, d, c)
    if point is None:
        raise UserError(f"law {law_name!r} cannot predict at D/N = {d / n:.3g}; give --tokens matching a fitted ratio")
    entry = entries[law_name]
    loss_own = float(np.ravel(point)[0])
    reliable = bool(entry.get("reliable", True))
    # Laws that backtest alike (selection "alike"): the runs cannot choose between them, so the
    # interval spans them, and the point is their geometric mean where fit found that the average
    # backtests better than the selected law alone (fit/selection.py `averaging`).
    spread = _alike_predictions(entries, selection, law_name, n, d, c)
    averaged = bool(spread) and bool((selection.get("average") or {}).get("used"))
    loss = float(selection_rules.alike_average([loss_own, *spread.values()])) if averaged else loss_own
    shift = loss / loss_own
    with np.errstate(all="ignore"):
        samples = parametric.entry_loss(entry, n, d, c, use_samples=True)
    # the bootstrap measures the selected law's spread; recentred on the averaged point
    samples = None if samples is None else np.ravel(samples) * shift
    sigma = parametric.entry_rmse_log(entry, n, d) or 0.0
    factor = c / max_c if max_c else None
    calib = entry.get("calibration") if np.isclose(level, (entry.get("calibration") or {}).get("level", -1)) else None
    backtested = conformal.interval(loss, factor or 1.0, calib)
    if reliable:
        rng = np.random.default_rng(seed)
        base = samples[np.isfinite(samples)] if samples is not None and np.isfinite(samples).sum() >= 2 else np.array([loss])
        draws = scatter_draws(base, sigma, PI_DRAWS_PER_SAMPLE, rng)
        ci, boot_pi = finite_interval(samples, level), finite_interval(draws, level)
        pi = conformal.union(boot_pi, backtested)
        how = ("the wider of the bootstrap prediction interval and the backtest-calibrated one"
               if backtested[0] is not None else "bootstrap prediction interval (no backtest calibration)")
    else:  # a degenerate law's bootstrap spread is no measure of its error; its backtest misses still are
        ci, boot_pi, pi = [None, None], [None, None], backtested
        samples = None
        how = "backtest-calibrated only (the bootstrap of a flagged law is no measure of its error)"
        warnings_.append(f"{law_name} is flagged unreliable ({'; '.join(entry.get('reasons', []))}): "
                         + ("its interval comes from its backtest misses alone, scaled to this distance; do not bet "
                            "on the point" if pi[0] is not None else
                            "the loss is shown without an interval (no backtest could calibrate one); do not bet on it"))
    law_keys = _law_keys(report, law_name, law_note)
    reached = max([b["extrapolation_factor"] or 0 for b in law_keys["backtest"].values()] or [0])
    if factor and factor > max(10.0, 10 * reached):
        warnings_.append(f"the target is {factor:.3g}x the largest fitted compute; the backtests reached "
                         f"{reached:.3g}x, so the error at this distance is unmeasured: the interval assumes the "
                         "backtest misses grow as 1 + ln(distance)")
    if spread and pi[0] is not None:
        every = [loss_own, *spread.values()]
        pi = conformal.union(pi, [min(every), max(every)])
        how += ", widened to the laws that backtest alike"
    result |= {
        "loss": loss, "loss_lo": pi[0], "loss_hi": pi[1], "loss_ci": ci, "loss_pi": pi, "law_spread": spread,
        "loss_selected_law": loss_own, "averaged_over": [law_name, *spread] if averaged else [],
        "loss_pi_bootstrap": boot_pi, "loss_pi_backtest": backtested, "interval_method": how,
        "calibration": None if calib is None else {k: calib.get(k) for k in ("q", "n", "method", "rule", "max_distance")},
        "residual_rmse_log": sigma, **law_keys,
    }
    if factor:
        result["extrapolation_factor"] = factor
        result["extrapolation_factor_flops"] = factor
    opt = _compute_optimal(*allocation_entry(report), n, c, level)
    if opt is not None:
        result["compute_optimal"] = opt
    for name in ("lr", "batch_size"):
        got = hyperparams.predict_optimum(entries.get(f"{name}_opt", {}), n, d, c, level)
        if got is not None:
            result[f"{name}_opt"] = got["value"]
            result[f"{name}_opt_interval"] = got["interval"]
            result[f"{name}_opt_form"] = got["form"]
    result["reference_hparams"] = _reference_hparams(n, d, c)
    # Downstream metrics: two-stage (this loss and its bootstrap samples -> Err(L)) or BLEU/CE(D_p)
    # at a fitted model size; one key per metric column, null where the fit found no support.
    metrics = downstream.predict_all(report, n, d, loss, samples, level)
    for col, got in metrics.items():
        if not reliable and got.get("stages"):  # stage 1 has no trustworthy interval
            got["interval"] = [None, None]
        result[col] = got["value"]
        result[f"{col}_interval"] = got["interval"]
    if metrics:
        result["downstream"] = metrics
    result["warnings"] = warnings_
    return result


def format_prediction(r: dict, verbose: bool = False) -> str:
    """Human-readable lines for the CLI: the loss, its interval, the law, the distance and the warnings
    first, then the allocation, hyperparameters and downstream metrics (those without a prediction
    folded into one line unless `verbose`, which gives each its reason and why the law was chosen)."""
    pct = f"{r['level']:.0%}"
    unit = r.get("loss_unit", units.TOKEN)
    iv = lambda pair, digits=4: "" if not pair or pair[0] is None else f" [{pair[0]:.{digits}g}, {pair[1]:.{digits}g}]"
    n_txt = "?" if r["params"] is None else f"{r['params']:.3g}"
    d_txt = "withheld" if r["tokens"] is None else f"{r['tokens']:.3g}"
    c_txt = "?" if r["flops"] is None else f"{r['flops']:.3g}"
    lines = [f"target     N = {n_txt} params ({r['params_kind']}), D = {d_txt} tokens, C = {c_txt} FLOPs"
             + ("" if r["tokens_per_param"] is None else f", D/N = {r['tokens_per_param']:.3g}")]
    if r["loss"] is None:
        lines.append("loss       not predicted")
    elif not r.get("reliable", True):
        lines.append(f"loss       {with_bits(r['loss'], unit)}   " + (
            f"{pct} PI{iv(r['loss_pi'])} from the backtest misses alone (the law is flagged unreliable)"
            if r["loss_pi"][0] is not None else "no interval: the law is flagged unreliable and could not be backtested"))
    else:
        ci = f"{pct} CI{iv(r['loss_ci'])}" if r["loss_ci"][0] is not None else "no CI (fit without bootstrap)"
        lines.append(f"loss       {with_bits(r['loss'], unit)}   {pct} PI{iv(r['loss_pi'])}   {ci}")
    if verbose and r.get("interval_method") and r["loss_pi"][0] is not None:
        lines.append(f"interval   {r['interval_method']}")
    bt = r.get("backtest") or {}
    parts = [f"{h.replace('_', ' ')} {b['mean_abs_rel_error']:.2%}"
             + (f" at {b['extrapolation_factor']:.3g}x" if b.get("extrapolation_factor") else "")
             for h, b in bt.items() if b.get("mean_abs_rel_error") is not None]
    if r.get("backtest_error") is not None:
        backtest = f"mean |error| {r['backtest_error']:.2%} on held-out runs ({'; '.join(parts)})"
    elif parts:
        backtest = "; ".join(parts)
    else:
        backtest = "none (needs runs of >= 3 model sizes): the error of this extrapolation is unmeasured"
    averaged = ""
    if r.get("averaged_over"):
        others = [law for law in r["averaged_over"] if law != r["law"]]
        averaged = (f" (the loss is the geometric mean with {', '.join(others)}, which backtest alike; "
                    f"{r['law']} alone {r['loss_selected_law']:.4g})")
    if verbose:
        lines += [f"law        {r['law']}{averaged} ({r['law_reason']})", f"backtest   {backtest}"]
    else:
        fallback = "" if "fell back" not in (r.get("law_reason") or "") else f" ({r['law_reason']})"
        lines.append(f"law        {r['law']}{averaged}{fallback}; backtest {backtest}")
    if not r.get("reliable", True):
        lines.append("UNRELIABLE " + "; ".join(r.get("reasons", [])))
    if r.get("extrapolation_factor"):
        lines.append(f"extrapolation  {r['extrapolation_factor']:.3g}x the largest fitted compute")
    lines += [f"warning    {w}" for w in r.get("warnings", [])]
    opt = r.get("compute_optimal")
    if opt and opt.get("withheld"):
        lines.append(f"optimal    withheld: {opt['withheld']}")
    elif opt:
        lines.append(f"optimal    at C = {opt['flops']:.3g}: N_opt = {opt['params_opt']:.3g}{iv(opt.get('params_opt_interval'), 3)}, "
                     f"D_opt = {opt['tokens_opt']:.3g}, D/N = {opt['tokens_per_param_opt']:.3g}"
                     f"{iv(opt.get('tokens_per_param_opt_interval'), 3)}; "
                     f"for N = {r['params']:.3g}: D_opt = {opt['tokens_opt_for_params']:.3g} ({opt['law']})")
    ref = r.get("reference_hparams")
    for name, label in (("lr", "lr_opt"), ("batch_size", "batch_opt")):
        if f"{name}_opt" in r and ref:
            lines.append(f"{label:<10} {r[f'{name}_opt']:.3g}{iv(r[f'{name}_opt_interval'], 3)} ({r[f'{name}_opt_form']} fit); "
                         f"Step Law {ref['step_law'][name]:.3g}, DeepSeek {ref['deepseek'][name]:.3g}")
    unanswered: dict[str, list[str]] = {}
    for col, got in r.get("downstream", {}).items():
        if got.get("value") is not None:
            how = got.get("stages") or got.get("form", "")
            extra = ", extrapolated" if got.get("extrapolation") else ""
            lines.append(f"{col:<10} {got['value']:.4g}{iv(got['interval'], 3)} ({how}{extra})")
        elif not verbose:
            unanswered.setdefault("withheld: flagged unreliable" if got.get("status") == "unreliable"
                                  else str(got.get("status")), []).append(col)
        elif got.get("status") == "unreliable":  # the loss-law style: "withheld: <law> is flagged unreliable: ..."
            lines.append(f"{col:<10} withheld: {got.get('reason')}")
        else:
            lines.append(f"{col:<10} no prediction ({got.get('status')}: {got.get('reason')})")
    if unanswered:
        count = sum(len(cols) for cols in unanswered.values())
        lines.append(f"no prediction for {count} downstream metric(s): "
                     + "; ".join(f"{', '.join(cols)} ({status})" for status, cols in unanswered.items())
                     + " (--verbose: each reason)")
    notes = {k: v for k, v in (r.get("target_notes") or {}).items() if k != "withheld"}
    if notes:
        lines.append("notes      " + "; ".join(f"{k.replace('_from', '')} = {v}" for k, v in notes.items()))
    return "\n".join(lines)
