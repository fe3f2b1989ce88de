"""Run a planned sweep locally, one run after another, with progress bars.

Finished runs (done, diverged) are skipped; unfinished ones resume from their last checkpoint;
a run that raises is recorded as failed with its error and the sweep goes on. Ctrl-C marks the
run in flight as pending (its last checkpoint stays) and stops, so re-running the same
command continues where it left off.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass

from scaling_cli.plan import RunSpec
from scaling_cli.store import RunStore

SKIP_STATES = ("done", "diverged")


@dataclass
class SweepResult:
    states: Counter
    trained: int
    skipped: int


def register_runs(specs: list[RunSpec], store: RunStore) -> None:
    """Write every run's spec and config up front, so `status` sees the whole sweep at once."""
    from omegaconf import OmegaConf

    provenance = {"version": _version(), "git_sha": _git_sha()}
    for spec in specs:
        if not store.exists(spec.run_id, "spec.json"):
            # config first: a folder only counts as a run once spec.json exists
            store.write_bytes(spec.run_id, "config.yaml", OmegaConf.to_yaml(OmegaConf.create(spec.config)).encode())
            store.write_json(spec.run_id, "spec.json", {**spec.summary(), **provenance})


def run_sweep(specs: list[RunSpec], store: RunStore, show_progress: bool = True) -> SweepResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from scaling_cli.config import DataConfig
    from scaling_cli.data.prepare import prepare
    from scaling_cli.train.trainer import pick_device, train_run

    # Check devices and prepare every distinct dataset first: bad input fails before any run folder exists.
    prepared = {}
    for spec in specs:
        pick_device(spec.config["train"]["device"])
        key = data_key(spec)
        if key not in prepared:
            model = spec.config["model"]
            prepared[key] = prepare(DataConfig(**spec.config["data"]), model["vocab_size"], model["seq_len"])
    register_runs(specs, store)
    todo = [s for s in specs if store.status(s.run_id)["state"] not in SKIP_STATES]
    # Largest-first would balance a parallel launcher; alone, smallest-first gives early results.
    todo.sort(key=lambda s: s.flops)
    states: Counter = Counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        sweep_task = bar.add_task("sweep", total=len(todo), info=f"{len(specs) - len(todo)} already finished")
        for spec in todo:
            run_task = bar.add_task(spec.name, total=spec.steps, info="")

            def hook(done: int, total: int, metrics: dict, task=run_task) -> None:
                bar.update(task, completed=done,
                           info=f"loss {metrics['loss']:.3f}  {metrics['tokens_per_s'] / 1e3:.1f}k tok/s")

            try:
                state = train_run(spec, store, prepared[data_key(spec)], progress=hook)
            except KeyboardInterrupt:
                store.set_status(spec.run_id, "pending", note="interrupted; resumes from its last checkpoint")
                raise
            except Exception as err:  # a crashing run must not take the sweep down with it
                store.set_status(spec.run_id, "failed", error=f"{type(err).__name__}: {err}",
                                 traceback=traceback.format_exc(limit=8))
                state = "failed"
            states[state] += 1
            bar.remove_task(run_task)
            bar.update(sweep_task, advance=1, info=", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    return SweepResult(states=states, trained=len(todo), skipped=len(specs) - len(todo))


def data_key(spec: RunSpec) -> tuple:
    """Runs with equal keys share one tokenizer and token arrays."""
    model = spec.config["model"]
    return (repr(sorted(spec.config["data"].items())), model["vocab_size"], model["seq_len"])


def _version() -> str:
    from scaling_cli import __version__

    return __version__


def _git_sha() -> str | None:
    """The commit of the code that trained a run, when it runs from a git checkout."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
