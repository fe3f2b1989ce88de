"""The run store: the only interface between training and fitting.

One folder per run under a root that is a local path or any fsspec URL:

    <root>/<run_id>/spec.json        what the planner decided (params, tokens, FLOPs, name, sweep)
    <root>/<run_id>/config.yaml      the fully resolved run config
    <root>/<run_id>/status.json      pending | running | done | diverged | failed, with details
    <root>/<run_id>/curve.parquet    one row per optimizer step
    <root>/<run_id>/evals.parquet    one row per (eval step, task, metric)
    <root>/<run_id>/checkpoint.pt    the last resumable checkpoint (removed once the run is done)

Every file is written to a temporary name and renamed into place, so a crash or a kill
leaves either the old file or the new one, never half of one. Folders whose name starts
with '_' (fit outputs, caches) are not runs.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any, Callable, Iterator

import fsspec
import pandas as pd

from scaling_cli.faults import crash_point

STATES = ("pending", "running", "done", "diverged", "failed")

# The last three are stability diagnostics (scaling_cli/train/diagnostics.py), NaN on the steps
# between train.diagnostics_interval and in stores written before they existed.
CURVE_COLUMNS = ["step", "tokens", "flops", "lr", "loss", "grad_norm", "tokens_per_s", "elapsed_s",
                 "attn_logit_max", "log_z_mean", "update_ratio"]
EVAL_COLUMNS = ["step", "tokens", "flops", "task", "metric", "value"]


class RunStore:
    """A store root. Paths inside are joined with '/', which every fsspec filesystem accepts."""

    def __init__(self, root: str) -> None:
        self.root = str(root)
        self.fs, path = fsspec.core.url_to_fs(self.root)
        self.path = path.rstrip("/")

    # --- paths -------------------------------------------------------------------------------
    def run_path(self, run_id: str, name: str = "") -> str:
        base = f"{self.path}/{run_id}"
        return f"{base}/{name}" if name else base

    def exists(self, run_id: str, name: str) -> bool:
        return self.fs.exists(self.run_path(run_id, name))

    def run_ids(self) -> list[str]:
        """Ids of every run folder (one holding spec.json), sorted."""
        if not self.fs.exists(self.path):
            return []
        ids = []
        for entry in self.fs.ls(self.path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith("_") and self.fs.exists(f"{self.path}/{name}/spec.json"):
                ids.append(name)
        return sorted(ids)

    # --- atomic writes -----------------------------------------------------------------------
    def write_bytes(self, run_id: str, name: str, data: bytes) -> None:
        final = self.run_path(run_id, name)
        self.fs.makedirs(self.run_path(run_id), exist_ok=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        crash_point("store_write")
        self.fs.mv(tmp, final)

    def write_with(self, run_id: str, name: str, writer: Callable[[Any], None]) -> None:
        """Atomically write a file whose content `writer(file_object)` produces (e.g. torch.save)."""
        buffer = io.BytesIO()
        writer(buffer)
        self.write_bytes(run_id, name, buffer.getvalue())

    def read_bytes(self, run_id: str, name: str) -> bytes:
        with self.fs.open(self.run_path(run_id, name), "rb") as f:
            return f.read()

    def write_json(self, run_id: str, name: str, obj: dict) -> None:
        self.write_bytes(run_id, name, json.dumps(obj, indent=2, default=str).encode())

    def read_json(self, run_id: str, name: str) -> dict:
        return json.loads(self.read_bytes(run_id, name))

    def write_table(self, run_id: str, name: str, frame: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.write_bytes(run_id, f"{name}.parquet", buffer.getvalue())

    def read_table(self, run_id: str, name: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(run_id, f"{name}.parquet")))

    def remove(self, run_id: str, name: str) -> None:
        path = self.run_path(run_id, name)
        if self.fs.exists(path):
            self.fs.rm(path)

    def quarantine(self, run_id: str, name: str, reason: str) -> str:
        """Move an unreadable file out of the run into <root>/_quarantine/, with a note saying why.
        Returns where it went. The run then redoes what the file held instead of trusting it."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = f"{self.path}/_quarantine/{run_id}/{stamp}-{name}"
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(self.run_path(run_id, name), target)
        with self.fs.open(f"{target}.reason.txt", "w") as f:
            f.write(reason + "\n")
        return target

    # --- status ------------------------------------------------------------------------------
    def status(self, run_id: str) -> dict:
        if not self.exists(run_id, "status.json"):
            return {"state": "pending"}
        return self.read_json(run_id, "status.json")

    def set_status(self, run_id: str, state: str, **details: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        self.write_json(run_id, "status.json", {"state": state, "updated": time.time(), **details})

    def iter_specs(self) -> Iterator[dict]:
        for run_id in self.run_ids():
            yield self.read_json(run_id, "spec.json")


# Spec keys copied into load_runs' frame, with the column name fit expects.
_SPEC_COLUMNS = {
    "run_id": "run_id", "name": "name", "sweep": "sweep", "params": "params",
    "params_nonembed": "params_nonembed", "tokens": "tokens", "flops": "flops", "lr": "lr",
    "batch_size_tokens": "batch_size", "seq_len": "seq_len", "d_model": "d_model",
    "n_layer": "n_layer", "n_head": "n_head", "vocab_size": "vocab_size", "schedule": "schedule",
    "warmup": "warmup", "seed": "seed", "parametrization": "parametrization", "qk_layernorm": "qk_layernorm",
    "z_loss": "z_loss", "tokenizer": "tokenizer",
}


def load_runs(root: str) -> pd.DataFrame:
    """One row per run: plan metadata, state, and the final value of every eval metric.

    Columns: run_id, name, sweep, status, params, params_nonembed, tokens, flops, loss (final
    validation loss in nats/token; NaN unless the run is done), lr, batch_size (tokens per
    step), seq_len, d_model, n_layer, n_head, vocab_size, schedule, warmup, seed, step (last
    step reached), parametrization, qk_layernorm, z_loss, tokenizer (None in stores older than these
    fields), pack_size (how many runs trained together in the pack that finished this one; 1
    alone), wsd_role ('stable', 'branch' or ''), role ('fit', or 'validation' for a sweep.validate
    target that no fit may see), and `<task>_<metric>` for every other eval recorded at the last
    eval step.
    Unfinished runs report the tokens and FLOPs they were planned for.
    """
    store = RunStore(root)
    rows = []
    for spec in store.iter_specs():
        run_id = spec["run_id"]
        row = {col: spec.get(key) for key, col in _SPEC_COLUMNS.items()}
        status = store.status(run_id)
        row["status"] = status["state"]
        row["step"] = status.get("step")
        row["pack_size"] = status.get("pack_size", 1)
        # WSD branching: a stable run is never annealed, so it is no final point of a loss law
        row["wsd_role"] = "stable" if spec.get("branch_points") else ("branch" if spec.get("parent") else "")
        # sweep.validate targets: trained like any run, never fitted (stores older than the field: "fit")
        row["role"] = spec.get("role") or "fit"
        row["loss"] = float("nan")
        if store.exists(run_id, "evals.parquet"):
            evals = store.read_table(run_id, "evals")
            if not evals.empty:
                last = evals[evals["step"] == evals["step"].max()]
                for task, metric, value in zip(last["task"], last["metric"], last["value"]):
                    if (task, metric) == ("val", "loss"):
                        if row["status"] == "done":
                            row["loss"] = float(value)
                    else:
                        row[f"{task}_{metric}"] = float(value)
        rows.append(row)
    columns = list(_SPEC_COLUMNS.values()) + ["status", "step", "loss", "role"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def _concat_tables(root: str, name: str, columns: list[str]) -> pd.DataFrame:
    store = RunStore(root)
    frames = []
    for run_id in store.run_ids():
        if store.exists(run_id, f"{name}.parquet"):
            frame = store.read_table(run_id, name)
            frame.insert(0, "run_id", run_id)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", *columns])
    return pd.concat(frames, ignore_index=True)


def load_curves(root: str) -> pd.DataFrame:
    """Every run's per-step training curve: run_id + CURVE_COLUMNS."""
    return _concat_tables(root, "curve", CURVE_COLUMNS)


def load_evals(root: str) -> pd.DataFrame:
    """Every run's evaluations: run_id + EVAL_COLUMNS (task 'val', metric 'loss' is validation loss)."""
    return _concat_tables(root, "evals", EVAL_COLUMNS)
