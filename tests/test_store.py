"""Tests for scaling_cli/store.py: atomic I/O, run discovery, status, and the loaders fit reads.

    pytest tests/test_store.py

Stores are built by hand (spec.json, status.json, curve/evals tables written directly), on a
local path and on fsspec URLs (file://, memory://), and read back through the public API.
"""

from __future__ import annotations

import math
import uuid

import fsspec
import pandas as pd
import pytest

from scaling_cli.store import CURVE_COLUMNS, EVAL_COLUMNS, RunStore, load_curves, load_evals, load_runs


@pytest.fixture(params=["path", "file", "memory"])
def root(request, tmp_path):
    """A fresh store root as a plain path, a file:// URL, or an in-memory fsspec URL."""
    if request.param == "path":
        yield str(tmp_path / "runs")
    elif request.param == "file":
        yield f"file://{tmp_path}/runs"
    else:
        name = f"memory://store-test-{uuid.uuid4().hex}/runs"
        yield name
        fs, path = fsspec.core.url_to_fs(name)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _all_files(store: RunStore) -> list[str]:
    return [p for p in store.fs.find(store.path)]


def _spec(run_id: str, **extra) -> dict:
    spec = {"run_id": run_id, "name": f"d32L1-{run_id}", "sweep": "hand", "overrides": {}, "params": 1000,
            "params_nonembed": 200, "steps": 10, "tokens": 40960, "flops": 6e9, "flops_per_token": 1.5e5,
            "batch_size_tokens": 4096, "lr": 3e-3, "seq_len": 128, "d_model": 32, "n_layer": 1, "n_head": 2,
            "vocab_size": 512, "schedule": "cosine", "warmup": 0.05, "seed": 0}
    spec.update(extra)
    return spec


def _evals(rows: list[tuple[int, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "tokens": s * 4096, "flops": s * 6e8, "task": t, "metric": m, "value": v}
                         for s, t, m, v in rows], columns=EVAL_COLUMNS)


def _curve(steps: int, start: float) -> pd.DataFrame:
    return pd.DataFrame({"step": range(steps), "tokens": [4096 * (s + 1) for s in range(steps)],
                         "flops": [6e8 * (s + 1) for s in range(steps)], "lr": [1e-3] * steps,
                         "loss": [start - 0.1 * s for s in range(steps)], "grad_norm": [1.0] * steps,
                         "tokens_per_s": [1e4] * steps, "elapsed_s": [0.5 * s for s in range(steps)]},
                        columns=CURVE_COLUMNS)


# ------------------------------------------------------------------ round trips

def test_json_table_and_bytes_round_trip(root):
    store = RunStore(root)
    obj = {"a": 1, "b": [1.5, "x"], "nested": {"c": None}}
    store.write_json("r1", "spec.json", obj)
    assert store.read_json("r1", "spec.json") == obj

    frame = pd.DataFrame({"step": [0, 1, 2], "loss": [5.5, 4.25, float("nan")], "task": ["val", "val", "bleu"]})
    store.write_table("r1", "curve", frame)
    assert store.exists("r1", "curve.parquet")
    pd.testing.assert_frame_equal(store.read_table("r1", "curve"), frame)

    blob = bytes(range(256)) * 3
    store.write_bytes("r1", "checkpoint.pt", blob)
    assert store.read_bytes("r1", "checkpoint.pt") == blob

    store.write_with("r1", "other.bin", lambda f: f.write(b"written by a writer"))
    assert store.read_bytes("r1", "other.bin") == b"written by a writer"


def test_overwrite_replaces_the_file(root):
    store = RunStore(root)
    store.write_bytes("r1", "x.bin", b"old content that is longer")
    store.write_bytes("r1", "x.bin", b"new")
    assert store.read_bytes("r1", "x.bin") == b"new"


def test_writes_leave_no_temporary_files(root):
    store = RunStore(root)
    store.write_json("r1", "spec.json", {"run_id": "r1"})
    store.write_json("r1", "spec.json", {"run_id": "r1", "again": True})
    store.write_table("r1", "evals", _evals([(1, "val", "loss", 3.0)]))
    store.write_with("r1", "checkpoint.pt", lambda f: f.write(b"\0" * 100))
    store.set_status("r1", "running", step=3)
    names = sorted(p.rsplit("/", 1)[-1] for p in _all_files(store))
    assert names == ["checkpoint.pt", "evals.parquet", "spec.json", "status.json"]
    assert not any(".tmp-" in p for p in _all_files(store))


def test_json_falls_back_to_str_for_unknown_types(tmp_path):
    store = RunStore(str(tmp_path))
    store.write_json("r1", "meta.json", {"path": tmp_path})
    assert store.read_json("r1", "meta.json") == {"path": str(tmp_path)}


def test_remove_deletes_and_tolerates_absence(root):
    store = RunStore(root)
    store.write_bytes("r1", "checkpoint.pt", b"x")
    store.remove("r1", "checkpoint.pt")
    assert not store.exists("r1", "checkpoint.pt")
    store.remove("r1", "checkpoint.pt")  # a second remove is a no-op
    store.remove("never", "checkpoint.pt")


# ------------------------------------------------------------------ discovery and status

def test_run_ids_lists_only_run_folders(root):
    store = RunStore(root)
    assert store.run_ids() == []  # the root does not exist yet
    for run_id in ("b2", "a1"):
        store.write_json(run_id, "spec.json", _spec(run_id))
    store.write_json("_fits", "spec.json", {"run_id": "_fits"})  # '_' folders are outputs, not runs
    store.write_json("no_spec", "status.json", {"state": "running"})  # a folder without spec.json
    assert store.run_ids() == ["a1", "b2"]
    assert [s["run_id"] for s in store.iter_specs()] == ["a1", "b2"]


def test_status_defaults_to_pending_and_records_details(root):
    store = RunStore(root)
    store.write_json("r1", "spec.json", _spec("r1"))
    assert store.status("r1") == {"state": "pending"}
    store.set_status("r1", "diverged", step=17, loss=12.5)
    status = store.status("r1")
    assert (status["state"], status["step"], status["loss"]) == ("diverged", 17, 12.5)
    assert isinstance(status["updated"], float)


@pytest.mark.parametrize("state", ["finished", "DONE", ""])
def test_set_status_rejects_unknown_states(tmp_path, state):
    store = RunStore(str(tmp_path))
    with pytest.raises(ValueError, match="unknown run state"):
        store.set_status("r1", state)
    assert not store.exists("r1", "status.json")


# ------------------------------------------------------------------ loaders

def _build_store(root: str) -> None:
    """Four runs in four states, plus a fit-output folder and an orphan folder."""
    store = RunStore(root)
    # done: val loss at steps 10 and 20 (the last one counts), and a downstream metric at step 20
    store.write_json("done1", "spec.json", _spec("done1", params=5000, lr=1e-3))
    store.set_status("done1", "done", step=20)
    store.write_table("done1", "evals", _evals([(10, "val", "loss", 4.0), (20, "val", "loss", 3.5),
                                                (10, "bleu", "score", 1.0), (20, "bleu", "score", 7.5)]))
    store.write_table("done1", "curve", _curve(3, 6.0))
    # running: has a val loss, but it is not final
    store.write_json("running1", "spec.json", _spec("running1"))
    store.set_status("running1", "running", step=10)
    store.write_table("running1", "evals", _evals([(10, "val", "loss", 4.5), (10, "bleu", "score", 2.0)]))
    store.write_table("running1", "curve", _curve(2, 6.5))
    # diverged: a loss is recorded but must not be fitted
    store.write_json("diverged1", "spec.json", _spec("diverged1"))
    store.set_status("diverged1", "diverged", step=5)
    store.write_table("diverged1", "evals", _evals([(5, "val", "loss", 9.0)]))
    # pending: spec only
    store.write_json("pending1", "spec.json", _spec("pending1"))
    # not runs
    store.write_table("_fit", "evals", _evals([(1, "val", "loss", 0.1)]))
    store.write_table("orphan", "evals", _evals([(1, "val", "loss", 0.2)]))


def test_load_runs_reports_final_loss_only_for_done_runs(root):
    _build_store(root)
    runs = load_runs(root).set_index("run_id")
    assert sorted(runs.index) == ["diverged1", "done1", "pending1", "running1"]
    assert runs.loc["done1", "loss"] == 3.5  # the last eval step, not the first or the minimum
    for run_id in ("running1", "diverged1", "pending1"):
        assert math.isnan(runs.loc[run_id, "loss"]), run_id
    assert runs["status"].to_dict() == {"done1": "done", "running1": "running", "diverged1": "diverged",
                                        "pending1": "pending"}
    assert runs.loc["done1", "step"] == 20 and runs.loc["running1", "step"] == 10
    assert runs.loc["pending1", "step"] is None or math.isnan(runs.loc["pending1", "step"])


def test_load_runs_other_metrics_become_task_metric_columns(root):
    _build_store(root)
    runs = load_runs(root).set_index("run_id")
    assert runs.loc["done1", "bleu_score"] == 7.5  # at the last eval step
    assert runs.loc["running1", "bleu_score"] == 2.0  # reported for unfinished runs too
    assert math.isnan(runs.loc["pending1", "bleu_score"])
    assert "val_loss" not in runs.columns


def test_load_runs_maps_spec_fields_to_fit_columns(root):
    _build_store(root)
    runs = load_runs(root).set_index("run_id")
    row = runs.loc["done1"]
    assert (row["params"], row["lr"], row["batch_size"], row["d_model"], row["schedule"]) == \
        (5000, 1e-3, 4096, 32, "cosine")
    assert row["tokens"] == 40960 and row["flops"] == 6e9 and row["sweep"] == "hand"
    for column in ("params_nonembed", "seq_len", "n_layer", "n_head", "vocab_size", "warmup", "seed", "name"):
        assert column in runs.columns


def test_load_curves_and_evals_concatenate_runs(root):
    _build_store(root)
    curves = load_curves(root)
    assert list(curves.columns) == ["run_id", *CURVE_COLUMNS]
    assert curves.groupby("run_id").size().to_dict() == {"done1": 3, "running1": 2}
    assert curves[curves.run_id == "done1"]["loss"].tolist() == pytest.approx([6.0, 5.9, 5.8])
    evals = load_evals(root)
    assert list(evals.columns) == ["run_id", *EVAL_COLUMNS]
    assert evals.groupby("run_id").size().to_dict() == {"done1": 4, "running1": 2, "diverged1": 1}
    assert set(evals.run_id) == {"done1", "running1", "diverged1"}  # '_fit' and 'orphan' are not runs


def test_loaders_on_an_empty_or_missing_store(root):
    runs = load_runs(root)
    assert runs.empty and {"run_id", "status", "loss", "params", "tokens"} <= set(runs.columns)
    curves, evals = load_curves(root), load_evals(root)
    assert curves.empty and list(curves.columns) == ["run_id", *CURVE_COLUMNS]
    assert evals.empty and list(evals.columns) == ["run_id", *EVAL_COLUMNS]


def test_empty_evals_table_gives_nan_loss(tmp_path):
    store = RunStore(str(tmp_path))
    store.write_json("r1", "spec.json", _spec("r1"))
    store.set_status("r1", "done", step=10)
    store.write_table("r1", "evals", _evals([]))
    assert math.isnan(load_runs(str(tmp_path)).loc[0, "loss"])


def test_file_url_and_plain_path_see_the_same_store(tmp_path):
    _build_store(str(tmp_path / "runs"))
    via_url = load_runs(f"file://{tmp_path}/runs").sort_values("run_id").reset_index(drop=True)
    via_path = load_runs(str(tmp_path / "runs")).sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(via_url, via_path)
    assert RunStore(f"file://{tmp_path}/runs").read_json("done1", "spec.json")["params"] == 5000
