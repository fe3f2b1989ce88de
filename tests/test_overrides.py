"""A command-line override never vanishes (scaling_cli/overrides.py), checked through the CLI:
`scaling-cli sweep ... --dry-run` either plans with the override in force and says what it
replaced, or exits 2 with one line naming the axis and the override that changes it."""

from __future__ import annotations

import pytest

from scaling_cli.cli import main
from scaling_cli.compose import compose
from scaling_cli.plan import expand


def dry_run(capsys, tmp_path, *overrides: str) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of `scaling-cli sweep --dry-run OVERRIDES`."""
    code = main(["sweep", "--dry-run", f"store.root={tmp_path / 'runs'}", *overrides])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def test_override_of_one_zipped_key_fails_naming_the_group_and_the_fix(capsys, tmp_path):
    # The example: the default sweep zips width, depth and heads.
    code, out, err = dry_run(capsys, tmp_path, "model.d_model=256")
    assert code == 2 and len(err) == 1
    line = err[0]
    assert line.startswith("scaling-cli sweep: error: model.d_model:")
    assert "sweep.zip[0]" in line and "model.n_layer" in line and "model.n_head" in line
    assert "'sweep.zip=[]'" in line  # the override that removes the group
    assert "runs ->" not in out  # nothing was planned
    # ...and the fix it names works: without the group, the override holds in every run
    code, out, err = dry_run(capsys, tmp_path, "model.d_model=256", "sweep.zip=[]")
    assert code == 0 and "sweep 'tiny': 6 runs" in out  # one stable run + its 4 decays, + the validation target
    assert err == ["scaling-cli sweep: note: model.d_model=256 applies to the fitted runs; the validation target "
                   "sweep.validate[0] keeps its own model.d_model"]
    specs = expand(compose(["model.d_model=256", "sweep.zip=[]"]))
    assert {s.config["model"]["d_model"] for s in specs if s.role == "fit"} == {256}


def test_override_of_a_grid_axis_replaces_it_and_says_so(capsys, tmp_path):
    # sweeps/lr_batch.yaml: 2 shapes x 5 lrs x 3 batch sizes = 30 runs; one lr leaves 6
    code, out, err = dry_run(capsys, tmp_path, "sweep=lr_batch", "optim.lr=1e-3")
    assert code == 0 and "sweep 'lr_batch': 6 runs" in out
    assert len(err) == 1 and "note: optim.lr=1e-3 replaces the grid axis optim.lr" in err[0]
    notes: list[str] = []
    specs = expand(compose(["sweep=lr_batch", "optim.lr=1e-3"], notes=notes))
    assert len(specs) == 6 and {s.config["optim"]["lr"] for s in specs} == {1e-3}
    assert {s.config["train"]["batch_size"] for s in specs} == {8, 16, 32}  # the other axes stay
    assert notes == [err[0].split("note: ", 1)[1]]


def test_overriding_every_key_of_a_zip_group_replaces_the_group(capsys, tmp_path):
    # the default zips shape, learning rate and token budget per size
    group = ["model.d_model=128", "model.n_layer=2", "model.n_head=4", "optim.lr=1e-3", "train.tokens=1e6"]
    code, out, err = dry_run(capsys, tmp_path, *group)
    assert code == 0 and "sweep 'tiny': 6 runs" in out  # one shape: its stable run and 4 decays, + the target
    assert len(err) == 2 and "replace the zipped axis sweep.zip[0]" in err[0]
    assert "apply to the fitted runs; the validation target sweep.validate[0] keeps its own" in err[1]
    shapes = {(s.config["model"]["d_model"], s.config["model"]["n_layer"], s.config["model"]["n_head"],
               s.config["optim"]["lr"]) for s in expand(compose(group)) if s.role == "fit"}
    assert shapes == {(128, 2, 4, 1e-3)}


def test_a_key_set_twice_keeps_the_last_and_says_so(capsys, tmp_path):
    code, out, err = dry_run(capsys, tmp_path, "sweep=single", "optim.lr=1e-3", "optim.lr=3e-2")
    assert code == 0 and len(err) == 1
    assert err[0] == ("scaling-cli sweep: note: optim.lr is set twice on the command line; the last, "
                      "'optim.lr=3e-2', wins over 'optim.lr=1e-3'")
    assert "0.03" in out  # the plan's lr column
    # the same key in two spellings, and a group chosen twice
    notes: list[str] = []
    cfg = compose(["+sweep=single", "sweep=lr_batch", "optim.weight_decay=0.1", "++optim.weight_decay=0.2"],
                  notes=notes)
    assert cfg.sweep.name == "lr_batch" and cfg.optim.weight_decay == 0.2
    assert [n.split(" is set")[0] for n in notes] == ["sweep", "optim.weight_decay"]


def test_a_grid_axis_and_a_plain_value_on_the_command_line_the_later_wins(capsys, tmp_path):
    grid = "sweep.grid={optim.lr:[1e-3,2e-3]}"
    code, out, err = dry_run(capsys, tmp_path, "sweep=single", grid, "optim.lr=1e-3")
    assert code == 0 and "sweep 'single': 1 runs" in out
    assert len(err) == 1 and "optim.lr=1e-3 replaces the grid axis optim.lr" in err[0]
    # a base list of overrides, then the axis: the axis sweeps the key (as the test suite's tiny runs do)
    code, out, err = dry_run(capsys, tmp_path, "sweep=single", "optim.lr=1e-3", grid)
    assert code == 0 and "sweep 'single': 2 runs" in out
    assert len(err) == 1 and f"optim.lr=1e-3 gives way to {grid!r}, later on the command line" in err[0]
    # the same for a zip on the command line
    code, out, err = dry_run(capsys, tmp_path, "sweep=single", "train.tokens=7680",
                             "sweep.zip=[{optim.lr:[1e-3,2e-3],train.tokens:[7680,15360]}]")
    assert code == 0 and "sweep 'single': 2 runs" in out and "train.tokens=7680 gives way" in err[0]


def test_a_failing_plan_prints_its_error_line_alone(capsys, tmp_path):
    code, _, err = dry_run(capsys, tmp_path, "sweep=single", "model.n_head=2", "model.n_head=3")
    assert code == 2 and len(err) == 1 and "model.d_model: 64 is not divisible by model.n_head=3" in err[0]


def test_two_grid_overrides_of_one_axis_keep_the_last_and_say_so(capsys, tmp_path):
    code, out, err = dry_run(capsys, tmp_path, "sweep=single", "sweep.grid={train.seed:[0,1]}",
                             "sweep.grid={train.seed:[0,1,2]}")
    assert code == 0 and "sweep 'single': 3 runs" in out
    assert len(err) == 1 and "sweep.grid.train.seed is set twice" in err[0]


@pytest.mark.parametrize("planner", ["sweep.budgets=[1e13]", "sweep.target_params=[1e6]"])
def test_override_of_a_key_the_budget_planner_sets_fails(capsys, tmp_path, planner):
    code, _, err = dry_run(capsys, tmp_path, "sweep=single", planner, "model.n_layer=3")
    assert code == 2 and len(err) == 1
    assert err[0].startswith("scaling-cli sweep: error: model.n_layer:") and planner.split("=")[0] in err[0]


def test_overrides_of_keys_the_sweep_does_not_vary_are_silent(capsys, tmp_path):
    code, out, err = dry_run(capsys, tmp_path, "optim.weight_decay=0.05", "model=tiny", "train.batch_size=8")
    assert code == 0 and "sweep 'tiny': 31 runs" in out and err == []
