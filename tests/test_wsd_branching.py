"""WSD branching: one stable run per size, decay branches from its checkpoints. Each branch's
learning rate at every step is exactly the WSD schedule of its length, and training it from
the branch point gives the same curve as training that WSD run alone."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_OVERRIDES
from scaling_cli.cli import main
from scaling_cli.compose import compose
from scaling_cli.config import ConfigError, ScheduleConfig
from scaling_cli.plan import expand, totals
from scaling_cli.store import RunStore, load_curves, load_runs
from scaling_cli.schedule import lr_multipliers

FAMILY = ["sweep=single", *TINY_OVERRIDES, "eval=none", "schedule=wsd", "train.tokens=15360",
          "sweep.wsd_branches=[0.5,1.0]"]


def plan(*extra: str, root: str = "unused"):
    return expand(compose([*FAMILY, f"store.root={root}", *extra]))


def test_family_shape_and_schedules():
    specs = plan()
    stable = [s for s in specs if s.branch_points]
    branches = [s for s in specs if s.parent]
    assert len(stable) == 1 and len(branches) == 2
    stable = stable[0]
    assert stable.config["schedule"]["name"] == "constant"
    for branch in branches:
        start = branch.parent["step"]
        assert branch.parent["run_id"] == stable.run_id and start in stable.branch_points
        lrs = lr_multipliers(branch.steps, ScheduleConfig(**branch.config["schedule"]))
        stable_lrs = lr_multipliers(stable.steps, ScheduleConfig(**stable.config["schedule"]))
        np.testing.assert_array_equal(lrs[:start], stable_lrs[:start])  # shared warmup + stable phase
        assert lrs[start] < 1.0 and lrs[-1] == pytest.approx(0.0)  # decay begins exactly at the branch
    assert stable.steps == max(b.parent["step"] for b in branches)
    t = totals(specs)
    assert t["flops"] < t["flops_unbranched"]


def test_branching_needs_wsd():
    with pytest.raises(ConfigError, match="sweep.wsd_branches"):
        plan("schedule=cosine")


def test_branch_equals_the_wsd_run_trained_alone(tmp_path):
    root = tmp_path / "family"
    assert main(["sweep", "--no-progress", *FAMILY, f"store.root={root}"]) == 0
    runs = load_runs(str(root))
    assert (runs["status"] == "done").all() and len(runs) == 3
    assert sorted(runs["wsd_role"]) == ["branch", "branch", "stable"]
    store = RunStore(str(root))
    branch = min((s for s in plan(root=str(root)) if s.parent), key=lambda s: s.steps)
    # The same WSD run trained from scratch, alone (warmup as the family's step count).
    alone_root = tmp_path / "alone"
    alone = ["sweep=single", *TINY_OVERRIDES, "eval=none", "schedule=wsd",
             f"train.tokens={branch.config['train']['tokens']}",
             f"schedule.warmup={branch.config['schedule']['warmup']}", f"store.root={alone_root}"]
    assert main(["sweep", "--no-progress", *alone]) == 0
    alone_id = RunStore(str(alone_root)).run_ids()[0]
    assert alone_id == branch.run_id  # literally the same run
    mine = store.read_table(branch.run_id, "curve")
    reference = RunStore(str(alone_root)).read_table(alone_id, "curve")
    assert mine["step"].tolist() == list(range(1, branch.steps + 1))
    expected_lr = branch.config["optim"]["lr"] * lr_multipliers(branch.steps, ScheduleConfig(**branch.config["schedule"]))
    np.testing.assert_allclose(mine["lr"], expected_lr, rtol=1e-12)
    np.testing.assert_allclose(mine["loss"], reference["loss"], rtol=1e-5)
    assert store.read_json(branch.run_id, "spec.json")["parent"]["run_id"] in RunStore(str(root)).run_ids()


def test_dry_run_reports_compute_saved(tmp_path, capsys):
    assert main(["sweep", "--dry-run", "sweep=wsd_branches", f"store.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "WSD branching: 16 decay branches from 4 stable runs" in out and "% saved" in out
