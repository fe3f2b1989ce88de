"""`scaling-cli status [STORE]`: what a sweep has finished, what is running, what is left."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show the runs in a store and their state",
                                   description="Show every run in a store: state, step reached, final validation loss.")
    parser.add_argument("store", nargs="?", default="runs", help="store root (path or fsspec URL; default: runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON record per run instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling_cli.errors import UserError
    from scaling_cli.store import RunStore, load_runs

    store = RunStore(args.store)
    if not store.fs.exists(store.path):
        raise UserError(f"store: {args.store} does not exist; run `scaling-cli sweep store.root={args.store}` first")
    frame = load_runs(args.store)
    if args.json:
        print(frame.to_json(orient="records", lines=True))
        return 0
    from scaling_cli.report import print_status

    print_status(frame, args.store)
    return 0
