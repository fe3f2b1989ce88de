"""`scaling-cli` entry point: dispatch to the subcommands in scaling_cli.commands.

    scaling-cli sweep [sweep=NAME] [hydra overrides]   train a grid of proxies
    scaling-cli status [STORE]                        progress of a sweep
    scaling-cli fit RUNS_OR_TABLE                     fit scaling laws
    scaling-cli predict --params 7e9                  extrapolate to a target scale
    scaling-cli backtest RUNS_OR_TABLE                held-out error of every loss law
    scaling-cli report [STORE] [-o report.html]       one self-contained HTML page of it all
    scaling-cli export RUN [OUT] --format hf          a finished proxy as a transformers checkpoint
    scaling-cli doctor [-o report.json]                check kernels, plans and packs on this machine
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from scaling_cli import __version__
from scaling_cli.errors import UserError

# Subcommand name -> module in scaling_cli.commands. Imported lazily so `fit` never pays for torch.
COMMANDS = {
    "sweep": "sweep",
    "status": "status",
    "fit": "fit",
    "predict": "predict",
    "backtest": "backtest",
    "report": "report",
    "export": "export",
    "doctor": "doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling-cli",
        description="Train small GPT proxies, fit scaling laws to them, and predict a big training run.",
        epilog="Run `scaling-cli COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"scaling-cli {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"scaling_cli.commands.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"scaling-cli {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scaling-cli {args.command}: interrupted; finished runs are kept, re-run to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
