"""Terminal output for sweeps: the plan table, the end-of-sweep summary, the status table."""

from __future__ import annotations

import os
import sys
from collections import Counter

from rich.console import Console
from rich.table import Table

from scaling_cli.plan import RunSpec, totals
from scaling_cli.units import human

console = Console(width=None if sys.stdout.isatty() else 160)

# FLOP/s assumed for the GPU-hours estimate of a plan: an H100 at 20% MFU of its dense bf16 peak
# (989 TFLOP/s). Packs measured 12-18% MFU on an H100 before the fused pack step of issue 14 (whose
# target is 40%, unmeasured); plain single runs of these sizes reach 14-30%. CPU plans print
# CPU-hours at 50 GFLOP/s, what 2 cores sustain on these small matmuls.
_ASSUMED_FLOPS = {"cuda": 0.2 * 989e12, "cpu": 50e9}


def print_plan(specs: list[RunSpec], cfg) -> None:
    table = Table(title=f"sweep '{cfg.sweep.name}': {len(specs)} runs -> {cfg.store.root}")
    for col in ("run_id", "name", "params", "non-emb", "tokens", "tok/param", "steps", "lr", "FLOPs"):
        table.add_column(col, justify="left" if col in ("run_id", "name") else "right")
    for s in sorted(specs, key=lambda s: (s.params, s.tokens)):
        table.add_row(s.run_id, s.name, human(s.params), human(s.params_nonembed), human(s.tokens),
                      f"{s.tokens / s.params:.1f}", str(s.steps), f"{s.config['optim']['lr']:.3g}", human(s.flops))
    console.print(table)
    total = totals(specs)
    device = "cuda" if str(cfg.train.device).startswith("cuda") else "cpu"
    hours = total["flops"] / _ASSUMED_FLOPS[device] / 3600
    label = "GPU-hours (H100 at an assumed 20% MFU)" if device == "cuda" else "CPU-hours (at 50 GFLOP/s)"
    console.print(f"total: {total['runs']} runs, {human(total['tokens'])} tokens, {human(total['flops'], 'FLOP')}, "
                  f"~{hours:.3g} {label}")
    _print_validation(specs, device)
    _print_packing(specs, cfg.launcher)
    _print_compiles(specs, cfg.launcher)
    branches = [s for s in specs if s.parent]
    if branches:
        saved = 1 - total["flops"] / total["flops_unbranched"]
        console.print(f"WSD branching: {len(branches)} decay branches from {sum(bool(s.branch_points) for s in specs)} stable runs "
                      f"cost {human(total['flops'], 'FLOP')} instead of {human(total['flops_unbranched'], 'FLOP')} "
                      f"for the same runs trained separately ({100 * saved:.0f}% saved)")


def _print_validation(specs: list[RunSpec], device: str) -> None:
    """The validation targets (sweep.validate): trained in this sweep, never fitted; each with its
    distance from the fitted runs and its time at the plan's assumed throughput (an estimate)."""
    targets = [s for s in specs if s.role == "validation"]
    if not targets:
        return
    fitted = [s.flops for s in specs if s.role != "validation" and not s.branch_points]  # stable runs are not fitted
    largest = max(fitted, default=0.0)
    unit = "GPU-minutes (H100 at an assumed 20% MFU)" if device == "cuda" else "CPU-minutes (at 50 GFLOP/s)"
    console.print(f"validation targets: {len(targets)} run(s) trained like any other but never fitted; "
                  "`scaling-cli fit` predicts each from the other runs and reports the error")
    for s in targets:
        distance = f" = {s.flops / largest:.3g}x the largest fitted run ({human(largest, 'FLOP')})" if largest else ""
        console.print(f"  {s.name}: N {human(s.params)}, D {human(s.tokens)} (D/N {s.tokens / s.params:.3g}), "
                      f"{human(s.flops, 'FLOP')}{distance}")
        console.print(f"    ~{s.flops / _ASSUMED_FLOPS[device] / 60:.3g} {unit}, an estimate")


def _print_packing(specs: list[RunSpec], launcher) -> None:
    """How the runs group into packs (runs of one architecture that can train as one model)."""
    from scaling_cli.packs import pack_key

    groups = Counter(pack_key(s) for s in specs)
    on_gpu = any(str(s.config["train"]["device"]).startswith("cuda") for s in specs)
    if max(groups.values(), default=0) < 2 or launcher.pack_size == 1 or not (on_gpu or launcher.pack_size):
        return
    size = (f"at most {launcher.pack_size} per pack" if launcher.pack_size
            else "pack size from GPU memory at launch")
    console.print(f"packing: {len(groups)} architectures, up to {max(groups.values())} runs each can train as one "
                  f"batched model; {size}")


def _print_compiles(specs: list[RunSpec], launcher) -> None:
    """How many graphs train.compile builds (regional: one block for every layer), and where they are kept."""
    from scaling_cli.packs import expected_compiles
    from scaling_cli.train.compiled import cache_folder

    plan = expected_compiles(specs, launcher)
    if plan is None:
        return
    regions = "the block every layer shares, the output head" if plan["regions"] > 1 else "the block every layer shares"
    console.print(f"compile: at most {plan['graphs']} graphs (each a forward and a backward): {plan['regions']} "
                  f"region(s) ({regions}) x {plan['variants']} variants of {plan['architectures']} architectures "
                  "(packs share one graph whatever their size K >= 2; K = 1 gets its own); cached in "
                  f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR') or cache_folder()} for the next pack, worker or sweep")


def print_sweep_result(result, store) -> None:
    from scaling_cli.worker import BUSY

    parts = ", ".join(f"{v} {'held by another worker' if k == BUSY else k}"
                      for k, v in sorted(result.states.items())) or "nothing to train"
    console.print(f"trained {result.trained} runs ({parts}); {result.skipped} already finished; store: {store.root}")


def print_status(frame, root: str) -> None:
    if frame.empty:
        console.print(f"no runs in {root}")
        return
    counts = Counter(frame["status"])
    table = Table(title=f"{root}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for col in ("run_id", "name", "status", "step", "params", "tokens", "val loss"):
        table.add_column(col, justify="left" if col in ("run_id", "name", "status") else "right")
    for row in frame.sort_values(["params", "tokens"]).itertuples():
        step = "" if row.step is None or row.step != row.step else str(int(row.step))
        loss = "" if row.loss != row.loss else f"{row.loss:.4f}"
        table.add_row(row.run_id, row.name, row.status, step, human(row.params), human(row.tokens), loss)
    console.print(table)
