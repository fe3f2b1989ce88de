"""`scaling-cli sweep`: plan a grid of proxies and train it into the run store."""

from __future__ import annotations

import argparse
import sys

from scaling_cli.errors import UserError

HELP = """Train a grid of small GPT proxies and log curves and evals to the run store.

Overrides use Hydra syntax: `sweep=chinchilla` picks a ready-made grid from sweeps/,
`model=gpt_small train=gpu` picks config files from conf/, `optim.lr=1e-3` sets one key.
Without sweep=, a machine with CUDA trains the GPU default (sweeps/small.yaml: 5 sizes x 3-4 token
multipliers + an lr axis, for sweep -> fit -> predict in <= 15 minutes on one H100) and a CPU-only
machine the embedded default (tiny). Re-running the same command skips finished runs and resumes
unfinished ones."""

EXAMPLES = """examples:
  scaling-cli sweep --dry-run                      # the default (GPU: sweeps/small, CPU: tiny): plan only
  scaling-cli sweep                                # train it on this machine
  scaling-cli sweep sweep=lr_batch store.root=runs/lr --dry-run
  scaling-cli sweep sweep=chinchilla model=gpt_small train=gpu"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sweep", help="train a grid of proxies (Hydra overrides)", description=HELP,
                                   epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="Hydra overrides, e.g. sweep=NAME optim.lr=1e-3")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (N, tokens, FLOPs, steps) and train nothing")
    parser.add_argument("--show-config", action="store_true", help="print the composed config and exit")
    parser.add_argument("--sweeps-dir", metavar="DIR", help="an extra folder of sweep YAML files")
    parser.add_argument("--max-runs", type=int, metavar="N", help="refuse grids with more than N runs (sweep.max_runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from scaling_cli.compose import compose, hardware_default_sweep
    from scaling_cli.plan import expand
    from scaling_cli.report import print_plan, print_sweep_result
    from scaling_cli.train.compiled import configure_cache

    configure_cache()  # before anything compiles: workers inherit it, packs and later sweeps reuse the artifacts
    overrides = list(args.overrides)
    if args.max_runs is not None:
        if any(o.lstrip("+").startswith("sweep.max_runs=") for o in overrides):
            raise UserError("sweep.max_runs: given both as --max-runs and as an override; keep one")
        overrides.append(f"sweep.max_runs={args.max_runs}")
    chosen = hardware_default_sweep(overrides)
    notes: list[str] = []  # overrides that replaced, or gave way to, another (scaling_cli/overrides.py)
    cfg = compose([f"sweep={chosen}", *overrides] if chosen else overrides, sweeps_dir=args.sweeps_dir, notes=notes)
    if chosen:
        print(f"sweep={chosen}: the GPU default (CUDA is present and no sweep= was given; sweep=tiny is the CPU default)")
    if args.show_config:
        _print_notes(notes)
        print(OmegaConf.to_yaml(cfg))
        return 0
    specs = expand(cfg)
    if cfg.eval.harness:  # unknown lm-eval task names fail here, not after each run has trained
        from scaling_cli.evals.harness import check_tasks

        check_tasks(cfg.eval.harness)
    _print_notes(notes)  # only once the plan stands: a failing command prints its one error line
    print_plan(specs, cfg)
    if args.dry_run:
        return 0
    from scaling_cli.launch import run_sweep
    from scaling_cli.store import RunStore

    store = RunStore(cfg.store.root)
    _check_writable(store)
    result = run_sweep(specs, store, cfg.launcher, show_progress=not args.no_progress)
    print_sweep_result(result, store)
    return 1 if result.states.get("failed") else 0


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"scaling-cli sweep: note: {note}", file=sys.stderr)


def _check_writable(store) -> None:
    try:
        store.fs.makedirs(store.path, exist_ok=True)
        probe = f"{store.path}/_write_probe"
        with store.fs.open(probe, "wb") as f:
            f.write(b"ok")
        store.fs.rm(probe)
    except OSError as err:
        raise UserError(f"store.root: cannot write to {store.root} ({err.strerror or err}); "
                        "choose a writable folder with store.root=PATH") from err
