"""Launcher backends and the lease rules they share: Ray and SLURM (submitit) give the same
runs as the local backend; two sweeps on one store never train a run twice; leases lapse when
their owner dies; corrupted files are quarantined and redone; an unwritable store fails clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY_OVERRIDES
from scaling_cli.cli import main
from scaling_cli.lease import holder, try_claim
from scaling_cli.store import RunStore, load_curves, load_runs

THREE_RUNS = ["sweep=single", *TINY_OVERRIDES, "eval=none", "sweep.grid={train.seed:[0,1,2]}"]


def sweep(*overrides: str) -> int:
    return main(["sweep", "--no-progress", *overrides])


def final_losses(root) -> dict[int, float]:
    runs = load_runs(str(root))
    assert (runs["status"] == "done").all(), runs[["run_id", "status"]]
    return dict(zip(runs["seed"], runs["loss"]))


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> dict[int, float]:
    root = tmp_path_factory.mktemp("local") / "runs"
    assert sweep(*THREE_RUNS, f"store.root={root}") == 0
    return final_losses(root)


def test_lease_is_exclusive_and_lapses_with_its_owner(tmp_path):
    store = RunStore(str(tmp_path))
    first = try_claim(store, "run1", ttl=60)
    assert first is not None and holder(store, "run1")["owner"] == first.owner
    assert try_claim(store, "run1", ttl=60) is None  # held by a live process
    first._stop.set()  # stop heartbeats without releasing: as if the owner hung...
    record = store.read_json("run1", first.name)
    store.write_json("run1", first.name, {**record, "heartbeat": time.time() - 120})  # ...for 2 minutes
    second = try_claim(store, "run1", ttl=60)
    assert second is not None and second.number == first.number + 1
    second.release()
    assert holder(store, "run1") is None


def test_lease_of_a_dead_process_on_this_host_lapses_at_once(tmp_path):
    store = RunStore(str(tmp_path))
    child = subprocess.run([sys.executable, "-c", (
        "import os, sys; from scaling_cli.store import RunStore; from scaling_cli.lease import try_claim; "
        f"lease = try_claim(RunStore({str(tmp_path)!r}), 'run1', ttl=3600); os._exit(0 if lease else 1)")])
    assert child.returncode == 0
    assert holder(store, "run1") is None  # ttl is an hour, but its pid is gone
    assert try_claim(store, "run1") is not None


def test_ray_backend_matches_local(local_reference, tmp_path):
    pytest.importorskip("ray")
    root = tmp_path / "runs"
    assert sweep(*THREE_RUNS, f"store.root={root}", "launcher=ray", "launcher.ray_num_cpus=1") == 0
    ray_losses = final_losses(root)
    assert ray_losses.keys() == local_reference.keys()
    np.testing.assert_allclose(list(ray_losses.values()), list(local_reference.values()), rtol=1e-5)


@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_slurm_backend_through_submitit_matches_local(cluster, local_reference, tmp_path):
    pytest.importorskip("submitit")
    root = tmp_path / "runs"
    assert sweep(*THREE_RUNS, f"store.root={root}", "launcher=slurm", f"launcher.slurm_cluster={cluster}",
                 f"launcher.slurm_folder={tmp_path / 'logs'}") == 0
    np.testing.assert_allclose(list(final_losses(root).values()), list(local_reference.values()), rtol=1e-5)


def test_store_as_fsspec_url(local_reference, tmp_path):
    root = f"file://{tmp_path / 'runs'}"
    assert sweep(*THREE_RUNS, f"store.root={root}") == 0
    np.testing.assert_allclose(list(final_losses(root).values()), list(local_reference.values()), rtol=1e-5)


def test_two_concurrent_sweeps_train_each_run_once(tmp_path):
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "scaling_cli.cli", "sweep", "--no-progress", *THREE_RUNS,
               "sweep.grid={train.seed:[0,1,2,3]}", f"store.root={root}"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    trained = 0
    for out, _ in outputs:
        summary = next(line for line in out.splitlines() if line.startswith("trained"))
        done = re.search(r"(\d+) done", summary)
        trained += int(done.group(1)) if done else 0
    assert trained == 4  # each of the 4 runs trained by exactly one of the two sweeps
    runs = load_runs(str(root))
    assert len(runs) == 4 and (runs["status"] == "done").all()
    for _, curve in load_curves(str(root)).groupby("run_id"):
        assert curve["step"].tolist() == list(range(1, 31))


def test_corrupt_checkpoint_is_quarantined_and_the_run_redone(tiny_overrides, tmp_path):
    import scaling_cli.train.trainer as trainer

    root = tmp_path / "runs"
    # A run interrupted after its first checkpoint, whose checkpoint then gets damaged.
    real = trainer.train_run

    def stop_at_15(spec, store, data, progress=None):
        def hook(done, total, metrics):
            if done >= 15:
                raise KeyboardInterrupt
        return real(spec, store, data, progress=hook)

    trainer.train_run = stop_at_15
    try:
        assert sweep(*tiny_overrides) == 130
    finally:
        trainer.train_run = real
    run_id = RunStore(str(root)).run_ids()[0]
    (root / run_id / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="checkpoint unreadable"):
        assert sweep(*tiny_overrides) == 0
    quarantined = list((root / "_quarantine" / run_id).glob("*checkpoint.pt"))
    assert len(quarantined) == 1 and "unreadable" in quarantined[0].with_suffix(".pt.reason.txt").read_text()
    assert load_curves(str(root))["step"].tolist() == list(range(1, 31))


def test_corrupt_table_of_a_finished_run_is_quarantined_and_retrained(tiny_overrides, tmp_path):
    root = tmp_path / "runs"
    assert sweep(*tiny_overrides) == 0
    run_id = RunStore(str(root)).run_ids()[0]
    (root / run_id / "evals.parquet").write_bytes(b"PAR1 garbage")
    assert sweep(*tiny_overrides) == 0
    assert list((root / "_quarantine" / run_id).glob("*evals.parquet"))
    runs = load_runs(str(root))
    assert runs["status"].tolist() == ["done"] and runs["loss"].notna().all()


def test_unwritable_store_fails_clean(tiny_overrides, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    overrides = [o for o in tiny_overrides if not o.startswith("store.root")] + [f"store.root={blocker / 'runs'}"]
    assert sweep(*overrides) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "store.root" in err
