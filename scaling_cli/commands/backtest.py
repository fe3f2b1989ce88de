"""`scaling-cli backtest RUNS_OR_TABLE`: how well would each loss law have predicted runs it never saw?

    scaling-cli backtest runs/                     # a run store written by `scaling-cli sweep`
    scaling-cli backtest sweep.csv --n-boot 100 -o bt/
    scaling-cli backtest runs.parquet --params-kind nonembed --where "params > 1e6"

Two hold-outs (scaling_cli/fit/backtest.py): every run of the largest model size, and the runs of
the largest compute. For each, every loss law is refitted on the other runs, with its bootstrap,
and scored on the held-out runs: mean |relative error|, RMSE of log loss, signed bias, worst miss,
and the share of held-out runs inside its prediction interval (interval coverage). The table
marks the law `fit` would select (best combined error among laws not flagged unreliable), and,
when the input carries both, compares total and non-embedding parameter counts. Writes
OUTDIR/backtest.json and OUTDIR/backtest.png (predicted vs observed loss of every held-out run,
one marker per law, prediction intervals as bars). Thin, like `fit`: input flags and loading are
shared with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scaling_cli import units
from scaling_cli.commands.fit import (add_fitting_arguments, add_input_arguments, backtest_table, column_spec,
                                      default_outdir, fit_set_option, fit_set_lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "backtest", help="hold out the largest size and the largest compute, refit every loss law, score it",
        description="Backtest every loss law (chinchilla, chinchilla_fixed_e, overtrain, overtrain_fixed_e, "
                    "compute_only): refit without the largest model size (and, separately, without the largest "
                    "compute) and report each law's error and interval coverage on the held-out runs, the law "
                    "`fit` would select, and total vs non-embedding parameter counts.",
        epilog="Reads the same inputs as `scaling-cli fit`. Example: scaling-cli backtest runs/ --n-boot 100")
    p.add_argument("source", metavar="RUNS_OR_TABLE",
                   help="run-store root (directory or fsspec URL) or a .csv/.tsv/.parquet table of runs")
    p.add_argument("-o", "--outdir", default=None,
                   help="output folder (default: <store>/_backtest, or <table stem>_backtest/ beside the table)")
    add_input_arguments(p)
    fit = add_fitting_arguments(p, n_boot=100, n_boot_help="bootstrap resamples per refit, for the interval "
                                                            "coverage (default: 100; 0: errors only)")
    fit.add_argument("--no-plots", action="store_true", help="write backtest.json only")
    fit.add_argument("--json", action="store_true", help="print the per-law errors as one JSON object")
    p.set_defaults(func=run)


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def format_backtests(result: dict) -> list[str]:
    """The per-hold-out tables."""
    lines = []
    for info in result["backtests"].values():
        if info.get("reason"):
            lines.append(f"held out: {info['heldout']}: not run ({info['reason']})")
            continue
        where = (f"N≈{info['heldout_params']:.3g}" if info["heldout"] == "largest model size"
                 else f"C {info['heldout_flops'][0]:.3g}..{info['heldout_flops'][1]:.3g}")
        lines.append(f"held out: {info['heldout']} ({where}; {info['n_test']} run{'s' * (info['n_test'] != 1)}, "
                     f"fitted on {info['n_train']}; "
                     f"{info['extrapolation_factor']:.3g}x the largest training compute)")
        lines.append(f"  {'law':<18} {'mean |err|':>10} {'RMSE(log)':>10} {'bias':>8} {'worst':>8} {'in PI':>12}"
                     f" {'in cal. PI':>11}")
        for law, s in info["scores"].items():
            if s.get("status") != "ok" or "mean_abs_rel_error" not in s:
                lines.append(f"  {law:<18} {s.get('status') or 'no prediction'}: {s.get('reason') or 'no held-out run predicted'}")
                continue
            cov = s.get("interval_coverage")
            pi = "n/a" if cov is None else f"{cov:.0%} ({round(cov * info['n_test'] * s['coverage'])}/{round(info['n_test'] * s['coverage'])})"
            part = "" if s["coverage"] >= 1 else f"  (predicts {s['coverage']:.0%} of the runs)"
            cal = s.get("calibrated_coverage")
            cal_txt = "n/a" if cal is None else f"{cal:.0%}"
            lines.append(f"  {law:<18} {_pct(s['mean_abs_rel_error']):>10} {s['rmse_log']:>10.4f} "
                         f"{s['mean_rel_error']:>+8.2%} {_pct(s['max_abs_rel_error']):>8} {pi:>12} {cal_txt:>11}{part}")
    return lines


def summary_json(result: dict) -> dict:
    """{selected, per hold-out: {law: mean |relative error|}, parameter-count comparison}."""
    out = {"selected": result["selection"]["loss_law"], "reliable": result["selection"].get("reliable")}
    for h, info in result["backtests"].items():
        out[h] = {law: s.get("mean_abs_rel_error") for law, s in info.get("scores", {}).items()}
        out[f"{h}_interval_coverage"] = {law: s.get("interval_coverage") for law, s in info.get("scores", {}).items()}
        out[f"{h}_calibrated_coverage"] = {law: s.get("calibrated_coverage") for law, s in info.get("scores", {}).items()}
    out["fit_set"] = result.get("fit_set", {}).get("name")
    out["combined"] = {r["law"]: r["combined_error"] for r in result["selection"].get("ranking", [])}
    if result.get("params_kinds"):
        out["params_kind"] = {"fitted": result["params_kinds"]["fitted"], "selected": result["params_kinds"]["selected"],
                              **{k: v["best_error"] for k, v in result["params_kinds"]["kinds"].items()}}
    return out


def _backtest(prepared, options) -> dict:
    """Fit set, selection and every law's backtest scores, with bootstrap and backtest-calibrated
    interval coverage of each held-out run."""
    from scaling_cli.fit import backtest, calibration, fitset, loss_laws, pipeline

    inputs = pipeline.loss_law_inputs(prepared, options)  # the points `fit` fits, curve points included
    done, kind, derived = inputs.done, inputs.kind, inputs.derived or {}
    by_kind = dict(inputs.by_kind or {})
    arrays = [done[k].to_numpy(dtype=float) for k in ("params", "tokens", "flops", "loss")]
    by_kind[kind] = backtest.backtest(*arrays, options, intervals=options.n_boot > 0, extra=derived.get(kind))
    if "params_alt" in done.columns and len(by_kind) < 2:
        other = "nonembed" if kind == "total" else "total"
        by_kind[other] = backtest.backtest(done["params_alt"].to_numpy(dtype=float), *arrays[1:], options,
                                           extra=derived.get(other))
    block = loss_laws.fit_loss_laws(done, options, kind, by_kind, inputs.derived)
    chosen = fitset.get(block["fit_set"]["name"])
    rule = None if chosen.name == fitset.DEFAULT else chosen
    backtests = block["backtests"]
    if rule is not None and options.n_boot > 0:  # the chosen set's refits again, with their bootstrap
        backtests = backtest.backtest(*arrays, options, intervals=True, extra=derived.get(kind), fit_set=rule)
    for name in backtest.LOSS_LAWS:
        if block["entries"].get(name, {}).get("status") != "ok":
            continue
        for holdout, cov in calibration.nested_coverage(*arrays, name, options, backtests, rule,
                                                         derived.get(kind)).items():
            backtests[holdout]["scores"][name]["calibrated_coverage"] = cov["coverage"]
            backtests[holdout]["scores"][name]["calibrated_intervals"] = cov["intervals"]
    # the sweep's validation targets, predicted by the laws fitted here (as `fit` does: scaling_cli.validation)
    from scaling_cli.fit import artifact
    from scaling_cli.validation import validate_targets

    fitted = {"laws": block["entries"], "selection": block["selection"], "backtests": block["backtests"],
              "level": options.level, "data": inputs.prepared.meta | {"ranges": {"flops": [float(done["flops"].min()),
                                                                                         float(done["flops"].max())]}}}
    validation = validate_targets(artifact.to_jsonable(fitted), inputs.prepared.validation)
    return {"validation": validation,
            "params_kind": kind, "n_runs": int(len(done)), "backtests": backtests, "selection": block["selection"],
            "fit_set": block["fit_set"], "params_kinds": block["params_kinds"],
            "reliability": {n: {"reliable": e.get("reliable"), "reasons": e.get("reasons")}
                            for n, e in block["entries"].items() if e.get("status") == "ok"},
            "options": options.as_dict(), "n_curve_points": len(derived[kind]) if derived.get(kind) else 0,
            "source_meta": inputs.prepared.meta}


def run(args: argparse.Namespace) -> int:
    import warnings


    from scaling_cli.errors import UserError
    from scaling_cli.fit import artifact, pipeline, table
    from scaling_cli.fit.bootstrap import FitOptions
    from scaling_cli.validation import format_validation

    start = time.perf_counter()
    try:
        options = FitOptions(n_boot=args.n_boot, grid_size=args.grid_size, level=args.level, seed=args.seed,
                             curve_points=args.curve_points, fit_set=fit_set_option(args.fit_set))
    except ValueError as err:
        raise UserError(f"{err}; fix --level/--n-boot/--grid-size") from err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", table.DataWarning)
        prepared = table.load_input(args.source, column_spec(args))
    for w in caught:
        if issubclass(w.category, table.DataWarning):
            print(f"scaling-cli backtest: warning: {w.message}", file=sys.stderr)
    with pipeline.one_blas_thread():
        result = _backtest(prepared, options)
    result["source"] = args.source
    n_curve = result.pop("n_curve_points")
    meta = result.pop("source_meta")
    outdir = args.outdir or default_outdir(args.source, table.is_table(args.source), "backtest")
    plots = []
    if not args.no_plots:
        from scaling_cli import plots as plotting

        plots = [plotting.plot_backtest(result, outdir)]
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    path = artifact.join(outdir, "backtest.json")
    artifact.write_bytes(path, json.dumps(artifact.to_jsonable(result), indent=1, allow_nan=False).encode())
    if args.json:
        print(json.dumps(artifact.to_jsonable(summary_json(result))))
        return 0
    print(f"backtest of {result['n_runs']} runs (one per (N, D) cell) from {meta['source']}; params: "
          f"{result['params_kind']}" + (f"; the L(N, D) laws also train on {n_curve} points derived from curves"
                                        if n_curve else ""))
    print("\n".join(fit_set_lines(result)))
    print("\n".join(format_backtests(result)))
    table_lines = backtest_table(result["backtests"], result["selection"], result["params_kinds"])
    print("\n".join(table_lines[1:]))  # the summary table without its header sentence
    for law, r in result["reliability"].items():
        if not r["reliable"]:
            print(f"  {law} is flagged unreliable: " + "; ".join(r["reasons"]))
    for line in format_validation(result["validation"], prepared.meta.get("loss_unit", units.TOKEN)):
        print(line)
    print(f"wrote {path}" + (f" and {plots[0]}" if plots and plots[0] else "") + f" ({result['elapsed_s']:.1f} s)")
    return 0
