"""kill -9 at chosen points (during a step, a checkpoint, an atomic write) and re-run: every
run finishes exactly once, no finished run is retrained, and every curve is complete.

The kill comes from scaling_cli.faults (SCALING_CLI_CRASH_AT=point:count), so the process
dies exactly there, not at a random instant that a slow machine would shift."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import TINY_OVERRIDES
from scaling_cli.store import RunStore, load_curves, load_evals, load_runs

OVERRIDES = ["sweep=single", *TINY_OVERRIDES, "eval=none", "sweep.grid={train.seed:[0,1,2]}"]
STEPS = 30

# (point, count): where the first attempt is killed. Counts reach into the first, second and
# third run (each run makes 30 steps, 2 checkpoints, and ~12 atomic writes).
KILL_POINTS = [
    ("step", 1), ("step", 17), ("step", 45), ("step", 89),
    ("checkpoint", 1), ("checkpoint", 4),
    ("store_write", 1), ("store_write", 9), ("store_write", 14), ("store_write", 27),
]


def run_sweep(root, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SCALING_CLI_CRASH_AT", None)
    if crash_at:
        env["SCALING_CLI_CRASH_AT"] = crash_at
    command = [sys.executable, "-m", "scaling_cli.cli", "sweep", "--no-progress", *OVERRIDES, f"store.root={root}"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def finished_state(root) -> dict[str, float]:
    """run_id -> mtime of its model file, for the runs that are done."""
    store = RunStore(str(root))
    return {run_id: os.stat(store.run_path(run_id, "model.pt")).st_mtime_ns
            for run_id in store.run_ids() if store.status(run_id)["state"] == "done"}


@pytest.mark.slow
@pytest.mark.parametrize("point, count", KILL_POINTS, ids=[f"{p}-{c}" for p, c in KILL_POINTS])
def test_kill_then_rerun_finishes_every_run_exactly_once(point, count, tmp_path):
    root = tmp_path / "runs"
    killed = run_sweep(root, f"{point}:{count}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    done_before = finished_state(root)

    rerun = run_sweep(root)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = load_runs(str(root))
    assert len(runs) == 3 and set(runs["seed"]) == {0, 1, 2}  # none lost, none duplicated
    assert (runs["status"] == "done").all() and runs["loss"].notna().all()
    # no finished run was trained again
    after = finished_state(root)
    assert all(after[run_id] == mtime for run_id, mtime in done_before.items())
    for run_id, curve in load_curves(str(root)).groupby("run_id"):
        assert curve["step"].tolist() == list(range(1, STEPS + 1)), run_id
    evals = load_evals(str(root))
    for run_id, val in evals[evals["task"] == "val"].groupby("run_id"):
        assert val["step"].tolist() == [0, 10, 20, 30], run_id
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name or p.name.startswith("lease.")]
    assert leftovers == []


PACK_KILL_POINTS = [("step", 15), ("checkpoint", 2), ("store_write", 20)]


@pytest.mark.slow
@pytest.mark.parametrize("point, count", PACK_KILL_POINTS, ids=[f"{p}-{c}" for p, c in PACK_KILL_POINTS])
def test_kill_a_pack_then_rerun_resumes_every_member_to_the_uninterrupted_curves(point, count, tmp_path):
    """The three runs train as one pack (launcher.pack_size=3); killed mid-pack, the re-run
    finishes each from its own checkpoint, with the curves of an uninterrupted solo sweep."""
    packed = ["launcher.pack_size=3"]
    reference = subprocess.run([sys.executable, "-m", "scaling_cli.cli", "sweep", "--no-progress", *OVERRIDES,
                                f"store.root={tmp_path / 'alone'}"], capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "scaling_cli.cli", "sweep", "--no-progress", *OVERRIDES, *packed,
               f"store.root={root}"]
    env = {**os.environ, "SCALING_CLI_CRASH_AT": f"{point}:{count}"}
    assert subprocess.run(command, env=env, capture_output=True, text=True, timeout=300).returncode == -9
    env.pop("SCALING_CLI_CRASH_AT")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = load_runs(str(root))
    assert len(runs) == 3 and (runs["status"] == "done").all() and (runs["pack_size"] > 1).any()
    ours, theirs = (load_curves(str(r)).sort_values(["run_id", "step"]).reset_index(drop=True)
                    for r in (root, tmp_path / "alone"))
    assert ours["step"].tolist() == theirs["step"].tolist() == list(range(1, STEPS + 1)) * 3
    assert (ours["loss"] - theirs["loss"]).abs().max() <= 1e-5 * theirs["loss"].abs().max()
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name or p.name.startswith("lease.")]
    assert leftovers == []
