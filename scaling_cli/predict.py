"""Evaluate a fit report (fit.json) at a target scale, with intervals.

    from scaling_cli.fit.artifact import read_report
    from scaling_cli.predict import predict
    result = predict(read_report("runs/_fit/fit.json"), params=7e9, tokens=1.4e12)

Targets: (N, D); (N, C) with D = C/(6N); C alone, which uses the compute-optimal N_opt and D_opt
of the parametric law; or N alone, which uses the compute-optimal D for that N.

Two intervals at the fit's level (90% by default):
- confidence interval (CI): the spread of the law itself, from the bootstrap parameter samples;
- prediction interval (PI): what one training run will show, CI samples times exp(eps) with eps
  drawn from N(0, s^2), s the fit's residual RMSE of log loss. `loss_lo`/`loss_hi` are the PI.
The loss comes from the law the fit selected by held-out error (fit.json "selection"); if that law
cannot answer this target (compute_only at an unfitted D/N), the parametric law is used and the
result says so. Downstream metrics the fit found support for (fit.json "downstream") get one key
each, named after the metric column (e.g. next_verse_acc, with next_verse_acc_interval: the
two-stage confidence interval compute -> loss -> metric); see scaling_cli.fit.downstream. numpy only.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.errors import UserError
from scaling_cli.fit import downstream, hyperparams, laws, parametric
from scaling_cli.fit.bootstrap import finite_interval

# Residual draws per bootstrap sample for the prediction interval (200 samples x 50 = 10,000 draws).
PI_DRAWS_PER_SAMPLE = 50


def _resolve_target(report: dict, params, tokens, flops) -> tuple[float, float, float, dict]:
    """(N, D, C, notes) from whichever of N, D, C were given."""
    chin = report["laws"].get("chinchilla", {})
    notes: dict = {}
    for name, value in (("params", params), ("tokens", tokens), ("flops", flops)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise UserError(f"--{name} must be a positive number, got {value}")
    if params is None and flops is None:
        raise UserError("give --params (optionally with --tokens or --flops) or --flops alone")
    if params is not None and tokens is not None and flops is not None:
        raise UserError("give at most two of --params, --tokens, --flops (the third follows from C = 6ND)")
    k = laws.FLOPS_PER_PARAM_TOKEN
    if params is None:  # flops only (or flops + tokens)
        if tokens is not None:
            return flops / (k * tokens), tokens, flops, {"params_from": "C / (6 D)"}
        if chin.get("status") != "ok":
            raise UserError("--flops alone needs the parametric law L(N,D), which this fit lacks; give --params too")
        p = chin["params"]
        n_opt, d_opt = laws.chinchilla_optimum(flops, p["E"], p["A"], p["B"], p["alpha"], p["beta"])
        return float(n_opt), float(d_opt), flops, {"params_from": "compute-optimal N_opt(C)", "tokens_from": "C / (6 N_opt)"}
    if tokens is None and flops is not None:
        return params, flops / (k * params), flops, {"tokens_from": "C / (6 N)"}
    if tokens is None:
        if chin.get("status") != "ok":
            raise UserError("--params alone needs the parametric law for compute-optimal tokens; give --tokens too")
        p = chin["params"]
        d_opt = float(laws.chinchilla_tokens_for_params(params, p["E"], p["A"], p["B"], p["alpha"], p["beta"]))
        return params, d_opt, k * params * d_opt, {"tokens_from": "compute-optimal D for this N"}
    return params, tokens, k * params * tokens, {"flops_from": "6 N D"}


def _compute_optimal(chin: dict, params: float, flops: float, level: float) -> dict | None:
    """N_opt and D_opt at this compute, and the compute-optimal D for this N, with intervals."""
    if chin.get("status") != "ok":
        return None
    p = chin["params"]
    theta = (p["E"], p["A"], p["B"], p["alpha"], p["beta"])
    n_opt, d_opt = laws.chinchilla_optimum(flops, *theta)
    d_for_n = laws.chinchilla_tokens_for_params(params, *theta)
    out = {"flops": flops, "params_opt": float(n_opt), "tokens_opt": float(d_opt),
           "tokens_per_param_opt": float(d_opt / n_opt), "tokens_opt_for_params": float(d_for_n)}
    s = np.asarray(chin.get("samples", []), dtype=float)
    if s.size:
        cols = tuple(s[:, i] for i in range(5))
        with np.errstate(all="ignore"):
            ns, ds = laws.chinchilla_optimum(flops, *cols)
            out["params_opt_interval"] = finite_interval(ns, level)
            out["tokens_opt_interval"] = finite_interval(ds, level)
            out["tokens_opt_for_params_interval"] = finite_interval(laws.chinchilla_tokens_for_params(params, *cols), level)
    return out


def _reference_hparams(params: float, tokens: float, flops: float) -> dict:
    """Published optima at this scale, for comparison (constants cited in fit/laws.py)."""
    a, b, c = laws.STEP_LAW["lr"]
    d, e = laws.STEP_LAW["batch_size"]
    la, lb = laws.DEEPSEEK["lr"]
    ba, bb = laws.DEEPSEEK["batch_size"]
    return {"step_law": {"lr": a * params**b * tokens**c, "batch_size": d * tokens**e},
            "deepseek": {"lr": la * flops**lb, "batch_size": ba * flops**bb}}


def predict(report: dict, params: float | None = None, tokens: float | None = None, flops: float | None = None,
            level: float | None = None, seed: int = 0) -> dict:
    """Point predictions and intervals at the target; see the module docstring."""
    level = float(level if level is not None else report.get("level", 0.9))
    entries = report["laws"]
    n, d, c, notes = _resolve_target(report, params, tokens, flops)
    law_name = report.get("selection", {}).get("loss_law")
    law_note = report.get("selection", {}).get("reason", "")
    if law_name is None:
        raise UserError("the fit has no usable loss law (see fit.json laws.*.reason); add runs and re-run `scaling-cli fit`")
    point = parametric.entry_loss(entries[law_name], n, d, c)
    if point is None and law_name != "chinchilla" and entries.get("chinchilla", {}).get("status") == "ok":
        law_note = f"{law_name} has no fitted group with D/N = {d / n:.3g}; fell back to chinchilla"
        law_name = "chinchilla"
        point = parametric.entry_loss(entries[law_name], n, d, c)
    if point is None:
        raise UserError(f"law {law_name!r} cannot predict at D/N = {d / n:.3g}; give --tokens matching a fitted ratio")
    entry = entries[law_name]
    loss = float(np.ravel(point)[0])
    with np.errstate(all="ignore"):
        samples = parametric.entry_loss(entry, n, d, c, use_samples=True)
    samples = None if samples is None else np.ravel(samples)
    sigma = parametric.entry_rmse_log(entry, n, d) or 0.0
    rng = np.random.default_rng(seed)
    base = samples[np.isfinite(samples)] if samples is not None and np.isfinite(samples).sum() >= 2 else np.array([loss])
    draws = (base[:, None] * np.exp(rng.normal(0.0, sigma, (len(base), PI_DRAWS_PER_SAMPLE)))).ravel()
    ci = finite_interval(samples, level)
    pi = finite_interval(draws, level)
    result = {
        "params": n, "tokens": d, "flops": c, "tokens_per_param": d / n,
        "params_kind": report.get("data", {}).get("params_kind", "total"),
        "loss": loss, "loss_lo": pi[0], "loss_hi": pi[1], "loss_ci": ci, "loss_pi": pi, "level": level,
        "residual_rmse_log": sigma, "law": law_name, "law_reason": law_note, "target_notes": notes,
    }
    max_c = report.get("data", {}).get("ranges", {}).get("flops", [None, None])[1]
    if max_c:
        result["extrapolation_factor_flops"] = c / max_c
    opt = _compute_optimal(entries.get("chinchilla", {}), n, c, level)
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
        result[col] = got["value"]
        result[f"{col}_interval"] = got["interval"]
    if metrics:
        result["downstream"] = metrics
    return result


def format_prediction(r: dict) -> str:
    """Human-readable lines for the CLI."""
    pct = f"{r['level']:.0%}"
    iv = lambda pair, digits=4: "" if not pair or pair[0] is None else f" [{pair[0]:.{digits}g}, {pair[1]:.{digits}g}]"
    ci = f"{pct} CI{iv(r['loss_ci'])}" if r["loss_ci"][0] is not None else "no CI (fit without bootstrap)"
    lines = [
        f"target     N = {r['params']:.3g} params ({r['params_kind']}), D = {r['tokens']:.3g} tokens, "
        f"C = {r['flops']:.3g} FLOPs, D/N = {r['tokens_per_param']:.3g}",
        f"loss       {r['loss']:.4f} nats/token   {ci}   {pct} PI{iv(r['loss_pi'])}",
        f"law        {r['law']} ({r['law_reason']})",
    ]
    if r.get("extrapolation_factor_flops"):
        lines.append(f"extrapolation  {r['extrapolation_factor_flops']:.3g}x the largest fitted compute")
    opt = r.get("compute_optimal")
    if opt:
        lines.append(f"optimal    at C = {opt['flops']:.3g}: N_opt = {opt['params_opt']:.3g}{iv(opt.get('params_opt_interval'), 3)}, "
                     f"D_opt = {opt['tokens_opt']:.3g}, D/N = {opt['tokens_per_param_opt']:.3g}; "
                     f"for N = {r['params']:.3g}: D_opt = {opt['tokens_opt_for_params']:.3g}")
    ref = r["reference_hparams"]
    for name, label in (("lr", "lr_opt"), ("batch_size", "batch_opt")):
        if f"{name}_opt" in r:
            lines.append(f"{label:<10} {r[f'{name}_opt']:.3g}{iv(r[f'{name}_opt_interval'], 3)} ({r[f'{name}_opt_form']} fit); "
                         f"Step Law {ref['step_law'][name]:.3g}, DeepSeek {ref['deepseek'][name]:.3g}")
    for col, got in r.get("downstream", {}).items():
        if got.get("value") is None:
            lines.append(f"{col:<10} no prediction ({got.get('status')}: {got.get('reason')})")
        else:
            how = got.get("stages") or got.get("form", "")
            extra = ", extrapolated" if got.get("extrapolation") else ""
            lines.append(f"{col:<10} {got['value']:.4g}{iv(got['interval'], 3)} ({how}{extra})")
    if r.get("target_notes"):
        lines.append("notes      " + "; ".join(f"{k.replace('_from', '')} = {v}" for k, v in r["target_notes"].items()))
    return "\n".join(lines)
