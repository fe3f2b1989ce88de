"""`scaling-cli predict`: evaluate a fit at a target scale, with confidence and prediction intervals.

    scaling-cli predict --params 7e9 --tokens 1.4e12
    scaling-cli predict --flops 6e22                 # compute-optimal N and D for this budget
    scaling-cli predict --params 1B --json --fit runs/_fit/fit.json
    scaling-cli predict --schedule wsd:24000:0.2 --params 3e4 --plot wsd.png   # curve law of a fitted size

Thin: read fit.json (fit/artifact.py), call scaling_cli.predict.predict, print or emit JSON.
"""

from __future__ import annotations

import argparse
import json
import re

DEFAULT_FIT = "runs/_fit/fit.json"

# Suffixes accepted on counts: 7B = 7e9 params, 1.4T = 1.4e12 tokens.
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def number(text: str) -> float:
    """Parse '7e9', '7B', '1.4T', '350M' into a float (argparse type)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMbBgGtTpP]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (examples: 7e9, 7B, 1.4T)")
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predict loss, compute-optimal N/D and LR/batch at a target scale",
        description="Evaluate the laws of a fit at a target scale. Prints the loss with a confidence "
                    "interval (the law's uncertainty, from the bootstrap) and a prediction interval (plus "
                    "run-to-run scatter), compute-optimal tokens or params, the optimal learning rate "
                    "and batch size when the fit has them, and every downstream metric the fit supports "
                    "(accuracy via compute -> loss -> Err(L); BLEU and downstream CE via D_p at a fitted size).",
        epilog="Give --params with --tokens or --flops, --params alone (compute-optimal tokens), or "
               "--flops alone (compute-optimal N and D). Counts accept suffixes: 7B, 1.4T. Every loss comes with a 90% "
               "interval (bootstrap, backtest-calibrated and the laws that backtest alike); a law the fit flagged "
               "unreliable keeps only the backtest-calibrated one, and an implausible compute-optimal allocation is "
               "withheld with the reason.")
    p.add_argument("--params", type=number, default=None, help="parameters N (same kind as the fit: total or non-embedding)")
    p.add_argument("--tokens", type=number, default=None, help="training tokens D")
    p.add_argument("--flops", type=number, default=None, help="training FLOPs C (D = C / 6N, or compute-optimal N and D)")
    p.add_argument("--fit", default=DEFAULT_FIT, help=f"fit.json or its folder (default: {DEFAULT_FIT})")
    p.add_argument("--level", type=float, default=None, help="interval level (default: the fit's, usually 0.9)")
    p.add_argument("--schedule", metavar="SPEC", default=None,
                   help="instead of a scale: the final loss and loss curve under this LR schedule, from the curve-law "
                        "fit of the fitted size nearest --params (default: the largest). SPEC is NAME:STEPS[:DECAY] with "
                        "optional :warmup=W :lr=PEAK :final=F :shape=S, e.g. cosine:24000, wsd:24000:0.2, constant:72000")
    p.add_argument("--plot", metavar="FILE", default=None, help="with --schedule: draw the predicted curve and schedule to FILE (.png)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of text (loss_lo/loss_hi: prediction interval; loss_ci: confidence "
                        "interval; law, backtest_error (its mean |relative error| on held-out runs), extrapolation_factor "
                        "(target C / largest fitted C), reliable, reasons, warnings; averaged_over: the laws whose "
                        "geometric mean is the loss, where that average backtested better, with loss_selected_law the "
                        "selected law's own; one key per downstream metric column, e.g. next_verse_acc and "
                        "next_verse_acc_interval)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also why the law was chosen, and each downstream metric without a prediction with its reason "
                        "(default: those are folded into one line)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling_cli.errors import UserError
    from scaling_cli.fit.artifact import read_report, to_jsonable
    from scaling_cli.predict import format_prediction, predict

    if args.level is not None and not 0 < args.level < 1:
        raise UserError(f"--level must be in (0, 1), got {args.level}")
    report = read_report(args.fit)
    if args.schedule is not None or args.plot is not None:
        return run_schedule(args, report)
    result = predict(report, params=args.params, tokens=args.tokens, flops=args.flops, level=args.level)
    if args.json:
        print(json.dumps(to_jsonable(result)))
    else:
        print(format_prediction(result, verbose=args.verbose))
    return 0


def run_schedule(args: argparse.Namespace, report: dict) -> int:
    """`predict --schedule SPEC [--params N] [--plot FILE] [--json]`."""
    from scaling_cli.errors import UserError
    from scaling_cli.fit.artifact import to_jsonable
    from scaling_cli.schedule_predict import format_schedule_prediction, parse_schedule, predict_schedule

    if args.schedule is None:
        raise UserError("--plot draws a --schedule prediction; give --schedule SPEC too")
    if args.tokens is not None or args.flops is not None:
        raise UserError("--schedule predicts one fitted size under a schedule: drop --tokens/--flops (STEPS sets the length)")
    result = predict_schedule(report, parse_schedule(args.schedule), params=args.params, level=args.level)
    if args.plot:
        from scaling_cli.plots import plot_schedule_prediction

        result["plot"] = plot_schedule_prediction(result, args.plot)
    print(json.dumps(to_jsonable(result)) if args.json else format_schedule_prediction(result))
    return 0
