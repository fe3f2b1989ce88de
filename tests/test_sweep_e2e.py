"""End-to-end: `scaling-cli sweep` trains real tiny proxies into a store, skips finished runs,
resumes interrupted and killed ones exactly, records divergence and failures, and rejects bad
input with one line and no run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_OVERRIDES
from scaling_cli.cli import main
from scaling_cli.store import RunStore, load_curves, load_runs


def sweep(*overrides: str) -> int:
    return main(["sweep", "--no-progress", *overrides])


def only_run(root: Path) -> str:
    ids = RunStore(str(root)).run_ids()
    assert len(ids) == 1
    return ids[0]


def test_sweep_trains_writes_parquet_and_rerun_trains_nothing(tiny_overrides, tmp_path, capsys):
    assert sweep(*tiny_overrides) == 0
    root = tmp_path / "runs"
    run = root / only_run(root)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 30
    curve = pd.read_parquet(run / "curve.parquet")
    assert curve["step"].tolist() == list(range(1, 31))
    assert curve["tokens"].iloc[-1] == 30 * 8 * 32
    assert np.isfinite(curve["loss"]).all() and (curve["tokens_per_s"] > 0).all()
    assert curve["loss"].iloc[-5:].mean() < curve["loss"].iloc[:5].mean()  # it learns
    evals = pd.read_parquet(run / "evals.parquet")
    assert evals["step"].tolist() == [0, 10, 20, 30]
    assert evals["value"].iloc[-1] < evals["value"].iloc[0]
    assert (run / "model.pt").exists() and not (run / "checkpoint.pt").exists()
    assert not list(run.glob("*.tmp-*"))
    mtime = (run / "curve.parquet").stat().st_mtime_ns

    capsys.readouterr()
    assert sweep(*tiny_overrides) == 0
    assert "trained 0 runs" in capsys.readouterr().out
    assert (run / "curve.parquet").stat().st_mtime_ns == mtime


def test_interrupted_run_resumes_to_the_same_result(tiny_overrides, tmp_path, monkeypatch):
    # Reference: the same run without interruption, in another store.
    reference = [o for o in tiny_overrides if not o.startswith("store.root")] + [f"store.root={tmp_path / 'ref'}"]
    assert sweep(*reference) == 0

    import scaling_cli.train.trainer as trainer

    real_train_run = trainer.train_run

    def interrupted(spec, store, data, progress=None):
        def hook(done, total, metrics):
            if done >= 15:  # after the checkpoint at step 10
                raise KeyboardInterrupt
        return real_train_run(spec, store, data, progress=hook)

    monkeypatch.setattr(trainer, "train_run", interrupted)
    assert sweep(*tiny_overrides) == 130
    root = tmp_path / "runs"
    run_id = only_run(root)
    assert RunStore(str(root)).status(run_id)["state"] == "pending"
    assert (root / run_id / "checkpoint.pt").exists()

    monkeypatch.setattr(trainer, "train_run", real_train_run)
    assert sweep(*tiny_overrides) == 0
    resumed, fresh = load_curves(str(root)), load_curves(str(tmp_path / "ref"))
    assert resumed["step"].tolist() == list(range(1, 31))  # no step lost or counted twice
    np.testing.assert_allclose(resumed["loss"], fresh["loss"], rtol=1e-5)
    np.testing.assert_allclose(load_runs(str(root))["loss"], load_runs(str(tmp_path / "ref"))["loss"], rtol=1e-5)


@pytest.mark.slow
def test_kill_9_mid_sweep_then_rerun_finishes_every_run_once(tmp_path):
    root = tmp_path / "runs"
    overrides = ["sweep=single", *TINY_OVERRIDES, "eval=none", "train.tokens=20480", f"store.root={root}",
                 "sweep.grid={train.seed:[0,1,2]}"]
    command = [sys.executable, "-m", "scaling_cli.cli", "sweep", "--no-progress", *overrides]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill once the second run has written a checkpoint: one run done, one mid-way, one untouched.
    while time.time() < deadline:
        done = [p for p in root.glob("*/status.json") if json.loads(p.read_text())["state"] == "done"]
        if done and list(root.glob("*/checkpoint.pt")):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the sweep never reached a checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    states = [json.loads(p.read_text())["state"] for p in root.glob("*/status.json")]
    assert "running" in states  # the killed run never got to say anything

    assert subprocess.run(command, capture_output=True).returncode == 0
    runs = load_runs(str(root))
    assert len(runs) == 3 and (runs["status"] == "done").all()
    curves = load_curves(str(root))
    for _, curve in curves.groupby("run_id"):
        assert curve["step"].tolist() == list(range(1, 81))


def test_divergence_is_recorded_not_dropped(tiny_overrides, tmp_path):
    assert sweep(*tiny_overrides, "optim.lr=30", "optim.grad_clip=0", "schedule.warmup=0") == 0
    root = tmp_path / "runs"
    status = RunStore(str(root)).status(only_run(root))
    assert status["state"] == "diverged"
    assert status["step"] < 30 and status["reason"]
    assert load_curves(str(root))["step"].max() == status["step"]


def test_a_crashing_run_is_failed_and_the_sweep_goes_on(tiny_overrides, tmp_path, monkeypatch):
    import scaling_cli.train.trainer as trainer

    real_train_run = trainer.train_run

    def crash_on_high_lr(spec, store, data, progress=None):
        if spec.config["optim"]["lr"] > 5e-3:
            raise RuntimeError("simulated crash")
        return real_train_run(spec, store, data, progress)

    monkeypatch.setattr(trainer, "train_run", crash_on_high_lr)
    assert sweep(*tiny_overrides, "sweep.grid={optim.lr:[1e-3,1e-2]}") == 1
    runs = load_runs(str(tmp_path / "runs")).set_index("lr")
    assert runs.loc[1e-3, "status"] == "done"
    assert runs.loc[1e-2, "status"] == "failed"
    error = RunStore(str(tmp_path / "runs")).status(runs.loc[1e-2, "run_id"])["error"]
    assert "simulated crash" in error


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.d_modle=3", "model.d_modle"),
        ("optim.lr=abc", "optim.lr"),
        ("optim.lr=-1", "optim.lr"),
        ("model.n_head=3", "model.d_model"),
        ("sweep.grid={optim.lr:[]}", "sweep"),
        ("data.source=/nonexistent/corpus.txt", "data.source"),
        ("sweep=nope", "sweep"),
        ("train.device=cuda:7", "train.device"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_no_run(override, field, tiny_overrides, tmp_path, capsys):
    if override == "train.device=cuda:7":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    capsys.readouterr()
    assert sweep(*tiny_overrides, override) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err
    assert RunStore(str(tmp_path / "runs")).run_ids() == []


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    assert sweep("--dry-run", f"store.root={tmp_path / 'runs'}") == 0
    out = capsys.readouterr().out
    assert "31 runs" in out and "FLOP" in out and "validation targets: 1 run(s)" in out
    assert not (tmp_path / "runs").exists()


def test_max_runs_guard(tmp_path, capsys):
    assert sweep("--dry-run", "--max-runs", "5", f"store.root={tmp_path / 'runs'}") == 2
    assert "sweep.max_runs" in capsys.readouterr().err


def test_status_lists_runs(tiny_overrides, tmp_path, capsys):
    assert sweep(*tiny_overrides) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "runs"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert record["status"] == "done" and record["loss"] > 0
    assert main(["status", str(tmp_path / "missing")]) == 2
