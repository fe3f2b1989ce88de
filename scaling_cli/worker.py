"""Execute one run (or a pack of runs) wherever a backend placed it: claim, train, record the outcome.

Every backend (local processes, Ray tasks, SLURM jobs) calls `execute_run`, so the rules
are the same everywhere: a run is trained only by the worker holding its lease; a finished
run (done, diverged) is never trained again; a crash is recorded as `failed` with its error;
an interrupt leaves the run `pending` with its last checkpoint.
"""

from __future__ import annotations

import gc
import traceback
import warnings
from contextlib import ExitStack

from scaling_cli.plan import RunSpec
from scaling_cli.store import RunStore

SKIP_STATES = ("done", "diverged")
BUSY = "busy"
"""Outcome of a run that another live worker holds."""
FINISHED_ELSEWHERE = "finished elsewhere"
"""Outcome of a run that another worker finished between planning and claiming."""

_prepared: dict[tuple, object] = {}  # per process: runs sharing data share tokenizer and arrays


def data_key(spec: RunSpec) -> tuple:
    """Runs with equal keys share one tokenizer and token arrays."""
    model = spec.config["model"]
    return (repr(sorted(spec.config["data"].items())), model["vocab_size"], model["seq_len"])


def prepared_data(spec: RunSpec):
    from scaling_cli.config import DataConfig
    from scaling_cli.data.prepare import prepare

    key = data_key(spec)
    if key not in _prepared:
        model = spec.config["model"]
        _prepared[key] = prepare(DataConfig(**spec.config["data"]), model["vocab_size"], model["seq_len"])
    return _prepared[key]


def verify_finished(store: RunStore, run_id: str) -> bool:
    """A finished run's tables must be readable; unreadable ones are quarantined and the run redone."""
    for name in ("evals", "curve"):
        if not store.exists(run_id, f"{name}.parquet"):
            continue
        try:
            store.read_table(run_id, name)
        except Exception as err:  # pyarrow raises several types for a damaged file
            store.quarantine(run_id, f"{name}.parquet", f"unreadable table: {type(err).__name__}: {err}")
            store.set_status(run_id, "pending", note=f"{name}.parquet was unreadable and is quarantined; retraining")
            return False
    return True


def remove_orphans(store: RunStore, run_id: str) -> None:
    """Temporary files of writes that a killed worker never renamed; only the lease holder may do this."""
    for entry in store.fs.ls(store.run_path(run_id), detail=False):
        if ".tmp-" in entry.rsplit("/", 1)[-1]:
            store.fs.rm(entry)


def execute_run(spec: RunSpec, root: str, lease_ttl_s: float, progress=None) -> str:
    """Train `spec` into the store at `root` unless it is finished or held; return its outcome."""
    from scaling_cli.lease import try_claim

    store = RunStore(root)
    lease = try_claim(store, spec.run_id, ttl=lease_ttl_s)
    if lease is None:
        return BUSY
    with lease:
        state = store.status(spec.run_id)["state"]
        if state in SKIP_STATES and verify_finished(store, spec.run_id):
            return FINISHED_ELSEWHERE
        remove_orphans(store, spec.run_id)
        return _train([spec], store, progress)[spec.run_id]


def execute_pack(specs: list[RunSpec], root: str, lease_ttl_s: float, progress=None) -> list[str]:
    """Train the runs of a pack (scaling_cli.packs) together; one outcome per spec, in order.

    Each run is claimed on its own, under the same rules as `execute_run`: members another
    worker holds or finished are left out, and the pack trains whatever it claimed. A crash marks
    every member that had not finished `failed`; an interrupt leaves them `pending`."""
    if len(specs) == 1:
        return [execute_run(specs[0], root, lease_ttl_s, progress)]
    from scaling_cli.lease import try_claim

    store = RunStore(root)
    outcomes: dict[str, str] = {}
    with ExitStack() as leases:
        claimed = []
        for spec in specs:
            lease = try_claim(store, spec.run_id, ttl=lease_ttl_s)
            if lease is None:
                outcomes[spec.run_id] = BUSY
                continue
            leases.enter_context(lease)
            if store.status(spec.run_id)["state"] in SKIP_STATES and verify_finished(store, spec.run_id):
                outcomes[spec.run_id] = FINISHED_ELSEWHERE
                continue
            remove_orphans(store, spec.run_id)
            claimed.append(spec)
        if claimed:
            outcomes.update(_train(claimed, store, progress))
    return [outcomes[spec.run_id] for spec in specs]


def _train(specs: list[RunSpec], store: RunStore, progress) -> dict[str, str]:
    """Train claimed runs (alone, or as a pack when several) -> {run_id: outcome}. A crash or an
    interrupt is recorded for every run that had not finished (a pack's finished members keep
    their status): `failed` with the error, or `pending` to resume from the last checkpoint."""
    from scaling_cli.train.compiled import configure_cache

    configure_cache()  # a Ray or SLURM worker did not inherit the sweep's environment

    def unfinished() -> list[RunSpec]:
        return [s for s in specs if store.status(s.run_id)["state"] not in SKIP_STATES]

    try:
        return _train_halving(specs, store, prepared_data(specs[0]), progress)
    except KeyboardInterrupt:
        for spec in unfinished():
            store.set_status(spec.run_id, "pending", note="interrupted; resumes from its last checkpoint")
        raise
    except Exception as err:  # a crashing pack must not take the sweep down with it
        failed = unfinished()
        for spec in failed:
            store.set_status(spec.run_id, "failed", error=f"{type(err).__name__}: {err}",
                             traceback=traceback.format_exc(limit=8))
        return {**{s.run_id: store.status(s.run_id)["state"] for s in specs}, **{s.run_id: "failed" for s in failed}}


def _train_halving(specs: list[RunSpec], store: RunStore, data, progress) -> dict[str, str]:
    """Train a pack; if it runs out of GPU memory (the planner's estimate was optimistic), train
    its unfinished members as two half-size packs instead, each resuming from its checkpoint."""
    import torch

    from scaling_cli.train import pack_trainer, trainer

    if len(specs) == 1:
        return {specs[0].run_id: trainer.train_run(specs[0], store, data, progress=progress)}
    try:
        return pack_trainer.train_pack(specs, store, data, progress)
    except torch.OutOfMemoryError as err:
        message = str(err).splitlines()[0]
    # Outside the except block, so the failed pack's tensors (held by the traceback) are freed.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    outcomes = {s.run_id: store.status(s.run_id)["state"] for s in specs}
    left = [s for s in specs if outcomes[s.run_id] not in SKIP_STATES]
    warnings.warn(f"a pack of {len(specs)} ran out of GPU memory ({message}); training its {len(left)} "
                  "unfinished runs as two smaller packs (set launcher.pack_size to choose the size)")
    half = (len(left) + 1) // 2
    for part in (left[:half], left[half:]):
        if part:
            outcomes.update(_train_halving(part, store, data, progress))
    return outcomes
