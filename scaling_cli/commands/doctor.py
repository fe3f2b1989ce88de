"""`scaling-cli doctor`: check this machine's kernels, plans and packs before a sweep relies on them."""

from __future__ import annotations

import argparse
import os

HELP = """Check what a sweep on this machine will rely on, and say what was measured.

On a GPU (about 3 minutes): versions; the fused loss against its fp32 oracle at 4 shapes (forward
and gradients, every backward scheme); each backward scheme, torch.compile's loss and the 3-matmul
floor timed at the shapes the GPU default trains, the fastest kept as this GPU's measured plan;
a 20-step probe of one pack against the plain compiled model; the memory planner's estimate
against the measured peak. On a CPU it checks what it can (versions, the kernels under the Triton
interpreter at small shapes, the torch path, the planner's plans, the plan cache) and lists the rest.
Writes one JSON report and prints a short table; exits 1 if a kernel fails its reference check
(sweeps on this GPU then train on the torch path until a later doctor passes)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check kernels, plans and packs on this machine", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="where to write the JSON report (default: $SCALING_CLI_CACHE/doctor/doctor.json)")
    parser.add_argument("--budget-s", type=float, default=180.0, metavar="S",
                        help="time budget on a GPU: kernel timings stop at 55%% of it, the pack probe is "
                             "skipped past it (default 180)")
    parser.add_argument("--no-probe", action="store_true", help="skip the pack probe and the memory check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from scaling_cli.errors import UserError

    if args.budget_s <= 0:
        raise UserError(f"--budget-s: must be > 0 seconds, got {args.budget_s}")
    if not torch.cuda.is_available():
        # Before triton's first import: without a GPU the kernels can only run under the interpreter.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import json
    from pathlib import Path

    from scaling_cli.cache import cache_root
    from scaling_cli.doctor.report import summary
    from scaling_cli.doctor.run import diagnose, healthy
    from scaling_cli.train.compiled import configure_cache

    configure_cache()  # compiled graphs and Triton's tuning land where sweeps will find them
    path = Path(args.output).expanduser() if args.output else cache_root() / "doctor" / "doctor.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--output: cannot create {path.parent} ({err.strerror or err}); choose a writable path") from err
    def save(report: dict) -> None:  # after every part: a doctor stopped by a time limit keeps what it measured
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        tmp.replace(path)

    report = diagnose(args.budget_s, probe=not args.no_probe, save=save)
    print(summary(report, str(path)))
    return 0 if healthy(report) else 1
