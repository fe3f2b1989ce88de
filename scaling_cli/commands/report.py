"""`scaling-cli report [SOURCE] [-o report.html]`: one self-contained HTML page of a sweep and its fit.

    scaling-cli report runs/                                  # runs/_fit/fit.json; fits first if absent
    scaling-cli report runs/ --params 7e9 --tokens 1.4e12 -o sweep.html
    scaling-cli report results.csv --fit results_fit/

Thin: find (or make, by running `scaling-cli fit SOURCE`) the fit folder, render the page with
scaling_cli.html_report, write it atomically.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from scaling_cli.commands.predict import number

    p = subparsers.add_parser(
        "report", help="one self-contained HTML page: plan, status, curves, laws, backtest, predictions",
        description="Write one HTML file that opens offline in any browser (images embedded, no external "
                    "references): the sweep's runs and their status, training curves, every law in fit.json "
                    "with its parameters and intervals, the backtest, every figure `fit` drew, and the "
                    "predictions at a --params/--tokens/--flops target with the downstream extrapolations. "
                    "Without a fit.json it runs `scaling-cli fit SOURCE` first.")
    p.add_argument("source", nargs="?", default="runs", metavar="SOURCE",
                   help="run-store root or a .csv/.tsv/.parquet table of runs (default: runs)")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--fit", default=None, metavar="DIR",
                   help="fit folder with fit.json and its PNGs (default: where `scaling-cli fit SOURCE` writes)")
    p.add_argument("--params", type=number, default=None, help="target parameters N for the predictions")
    p.add_argument("--tokens", type=number, default=None, help="target tokens D")
    p.add_argument("--flops", type=number, default=None, help="target FLOPs C")
    p.add_argument("--level", type=float, default=None, help="interval level of the predictions (default: the fit's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import fsspec

    from scaling_cli.commands.fit import default_outdir
    from scaling_cli.errors import UserError
    from scaling_cli.fit.artifact import FIT_FILENAME, join, write_bytes
    from scaling_cli.fit.table import is_table
    from scaling_cli.html_report import Target, render_report

    if args.level is not None and not 0 < args.level < 1:
        raise UserError(f"--level must be in (0, 1), got {args.level}")
    if args.tokens is not None and args.params is None:
        raise UserError("--tokens needs --params (or give --flops alone for compute-optimal N and D)")
    fs, path = fsspec.core.url_to_fs(str(args.source))
    if not fs.exists(path):
        raise UserError(f"{args.source}: no such store or table; give the store root or table `fit` reads")
    fit_dir = args.fit or default_outdir(args.source, is_table(args.source))
    fit_error = None
    if not _exists(join(fit_dir, FIT_FILENAME)):
        print(f"scaling-cli report: no {join(fit_dir, FIT_FILENAME)}; running `scaling-cli fit {args.source}` first",
              file=sys.stderr)
        fit_error = _run_fit(args.source, fit_dir)
    target = Target(params=args.params, tokens=args.tokens, flops=args.flops, level=args.level)
    html = render_report(args.source, fit_dir, target, fit_error=fit_error)
    write_bytes(args.output, html.encode("utf-8"))
    print(f"wrote {args.output} ({len(html) / 1e6:.2f} MB)")
    return 0


def _exists(path: str) -> bool:
    import fsspec

    fs, fpath = fsspec.core.url_to_fs(path)
    return fs.exists(fpath)


def _run_fit(source: str, fit_dir: str) -> str | None:
    """Run `scaling-cli fit SOURCE -o FIT_DIR` with its defaults; the error line if it refused."""
    from scaling_cli.cli import build_parser
    from scaling_cli.errors import UserError

    args = build_parser().parse_args(["fit", source, "-o", fit_dir])
    try:
        args.func(args)
    except UserError as err:  # e.g. too few finished runs: the page still shows the plan and status
        return f"`scaling-cli fit {source}` could not fit: {err}"
    return None
