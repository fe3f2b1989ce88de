"""Validation targets (issue 21): planned and trained like any run, never fitted, predicted by `fit`.

    pytest tests/test_validation.py

The planner tests read `expand` (fast); the store tests train one small real sweep (4 sizes x 2 WSD
branches + one target, two worker processes) and fit it; the table tests use synthetic laws.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_OVERRIDES
from scaling_cli import units
from scaling_cli.cli import main
from scaling_cli.compose import compose
from scaling_cli.config import ConfigError, LauncherConfig, ScheduleConfig
from scaling_cli.fit import synthetic
from scaling_cli.fit.artifact import read_report
from scaling_cli.launch import launch_waves
from scaling_cli.plan import expand
from scaling_cli.predict import predict
from scaling_cli.schedule import lr_multipliers
from scaling_cli.store import load_runs

FAST = ["--n-boot", "20", "--grid-size", "2"]
BASE = ["sweep=single", *TINY_OVERRIDES, "eval=none"]
TARGET = "sweep.validate=[{model.d_model:48,train.tokens:15360}]"
# 4 widths x WSD branches at 1/2 and all of 15360 tokens, and a target twice as wide and twice as long
SWEEP = [*BASE, "schedule=wsd", "train.tokens=15360", "sweep.wsd_branches=[0.5,1.0]",
         "sweep.zip=[{model.d_model:[16,24,32,48],model.n_head:[2,2,2,2]}]",
         "sweep.validate=[{model.d_model:96,model.n_head:2,train.tokens:30720}]", "launcher.workers=2"]


def plan(*extra: str):
    return expand(compose([*BASE, "store.root=unused", *extra]))


def targets_of(specs):
    return [s for s in specs if s.role == "validation"]


# ------------------------------------------------------------------ planning

def test_a_target_is_one_run_with_its_own_stable_id():
    specs = plan(TARGET)
    (target,) = targets_of(specs)
    assert len(specs) == 2 and target.name.startswith("val-d48")
    assert target.config["model"]["d_model"] == 48 and target.tokens == 15360
    assert target.summary()["role"] == "validation" and specs[0].summary()["role"] == "fit"
    assert targets_of(plan(TARGET))[0].run_id == target.run_id  # stable across plans
    same_config = plan("model.d_model=48", "train.tokens=15360")[0]  # the same run as a fitted one
    assert same_config.role == "fit" and same_config.run_id != target.run_id  # never one folder for both


def test_a_target_the_grid_already_trains_is_refused():
    with pytest.raises(ConfigError, match=r"sweep.validate\[0\]: is one of the sweep's fitted runs"):
        plan("sweep.validate=[{train.tokens:7680}]")


@pytest.mark.parametrize("overrides, field", [
    (["sweep.validate=[{model.d_modl:48}]"], "sweep.validate[0]: model.d_modl"),
    (["sweep.validat=[]"], "sweep.validat"),
    (["sweep.validate=[{model.d_model:abc}]"], "sweep.validate[0]: model.d_model"),
    (["sweep.validate=[{train.tokens:1e4,train.steps:3}]"], "sweep.validate[0]: sets train.tokens and train.steps"),
    (["sweep.validate=[{store.root:x}]"], "sweep.validate[0]: 'store.root' cannot vary"),
])
def test_a_bad_target_fails_at_once_with_one_line(overrides, field, tmp_path, capsys):
    assert main(["sweep", "--dry-run", *BASE, *overrides, f"store.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scaling-cli sweep: error: {field}") and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_an_override_of_a_key_a_target_sets_applies_to_the_fitted_runs_with_a_note(tmp_path, capsys):
    overrides = ["sweep.validate=[{train.seed:1,train.tokens:15360}]", "train.seed=2", "train.tokens=null",
                 "train.steps=40"]
    assert main(["sweep", "--dry-run", *BASE, *overrides, f"store.root={tmp_path}"]) == 0
    err = capsys.readouterr().err
    assert ("note: train.seed=2 train.tokens=null train.steps=40 apply to the fitted runs; the validation target "
            "sweep.validate[0] keeps its own train.seed, train.tokens, train.steps") in err
    fitted, target = plan(*overrides)
    assert (fitted.config["train"]["seed"], fitted.steps) == (2, 40)
    assert (target.config["train"]["seed"], target.tokens) == (1, 15360)


def test_with_wsd_branches_a_target_is_an_annealed_run_of_its_own_length():
    specs = plan("schedule=wsd", "schedule.warmup=3", "train.tokens=15360", "sweep.wsd_branches=[0.5,1.0]",
                 "sweep.validate=[{model.d_model:48,train.tokens:30720}]")
    (target,) = targets_of(specs)
    assert target.parent is None and target.branch_points == []
    lrs = lr_multipliers(target.steps, ScheduleConfig(**target.config["schedule"]))
    assert target.steps == 120 and np.all(lrs[3:96] == 1.0)  # the warmup the branches share, then stable
    assert np.all(np.diff(lrs[95:]) < 0) and lrs[-1] == pytest.approx(0.0)  # its own decay over its last 20%
    assert {s.config["schedule"]["warmup"] for s in specs if s.parent} == {target.config["schedule"]["warmup"]}


def test_a_target_sets_its_length_by_tokens_per_param_or_tokens():
    (by_ratio,) = targets_of(plan("sweep.validate=[{model.d_model:48,train.tokens_per_param:2}]"))
    assert by_ratio.tokens == math.ceil(2 * by_ratio.params / 256) * 256  # whole steps of 8 x 32 tokens
    (by_tokens,) = targets_of(plan("train.tokens=null", "train.steps=20", TARGET))
    assert by_tokens.tokens == 15360  # the entry's tokens clear the base config's train.steps


def test_dry_run_lists_each_target_with_its_distance_and_time(tmp_path, capsys):
    assert main(["sweep", "--dry-run", *BASE, TARGET, f"store.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    (target,) = targets_of(plan(TARGET))
    fitted = plan()[0]
    assert "validation targets: 1 run(s) trained like any other but never fitted" in out
    assert f"{target.name}: N " in out and f"= {target.flops / fitted.flops:.3g}x the largest fitted run" in out
    assert "CPU-minutes (at 50 GFLOP/s), an estimate" in out


def test_the_cpu_default_has_a_target_8x_its_largest_fitted_run_within_one_pass():
    from scaling_cli.config import DataConfig
    from scaling_cli.data.sources import load_documents

    specs = expand(compose([]))
    targets = targets_of(specs)
    largest = max(s.flops for s in specs if s.role == "fit" and not s.branch_points)  # stable runs are not fitted
    assert targets and all(t.flops >= 8 * largest for t in targets)
    assert all(s.config["model"]["vocab_size"] == units.BYTE_VOCAB for s in specs)  # bytes: nats/byte
    train = load_documents(DataConfig(source="embedded")).train
    one_pass = sum(len(t.encode()) for t in train) + len(train)  # a token per byte, an end-of-text per document
    assert max(s.tokens for s in specs) <= one_pass


def test_launch_puts_targets_first_and_branches_after_their_stable_runs():
    specs = plan("schedule=wsd", "train.tokens=15360", "sweep.wsd_branches=[0.5,1.0]",
                 "sweep.zip=[{model.d_model:[16,24],model.n_head:[2,2]}]", "sweep.validate=[{model.d_model:32}]")
    first, later = launch_waves(specs, LauncherConfig(workers=2), None, workers=2)
    assert first[0][0].role == "validation" and all(s.parent is None for p in first for s in p)
    assert sorted(s.run_id for p in later for s in p) == sorted(s.run_id for s in specs if s.parent)
    alone, _ = launch_waves(specs, LauncherConfig(workers=1), None, workers=1)
    assert [p[0].flops for p in alone] == sorted(p[0].flops for p in alone)  # one worker: smallest first


# ------------------------------------------------------------------ a real store, fitted

@pytest.fixture(scope="module")
def fitted_store(tmp_path_factory):
    """The sweep SWEEP trained (two workers, branches released as their stable runs finish) and fitted."""
    root = tmp_path_factory.mktemp("validate") / "runs"
    assert main(["sweep", "--no-progress", *SWEEP, f"store.root={root}"]) == 0
    runs = load_runs(str(root))
    assert (runs["status"] == "done").all() and len(runs) == 13
    return root


@pytest.fixture(scope="module")
def fit_output(fitted_store):
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["fit", str(fitted_store), *FAST, "--curve-groups", "1"]) == 0
    return buffer.getvalue(), read_report(str(fitted_store / "_fit"))


def target_row(root):
    runs = load_runs(str(root))
    return runs[runs["role"] == "validation"].iloc[0]


def test_a_target_is_in_no_fitted_set_and_changes_no_law(fitted_store, fit_output, tmp_path):
    _, report = fit_output
    target = target_row(fitted_store)
    everything_else = json.dumps({k: v for k, v in report.items() if k != "validation"})
    assert target["run_id"] not in everything_else  # not in loss_law_runs, curves, curve points, any law's inputs
    assert len(report["loss_law_runs"]) == 8 and report["data"]["n_runs"] == 8
    without = tmp_path / "without"
    shutil.copytree(fitted_store, without, ignore=shutil.ignore_patterns("_fit", target["run_id"]))
    assert main(["fit", str(without), *FAST, "--curve-groups", "1", "--no-plots"]) == 0
    alone = read_report(str(without / "_fit"))
    assert alone["loss_law_runs"] == report["loss_law_runs"] and alone["validation"] == []
    for name in ("chinchilla", "chinchilla_fixed_e", "overtrain", "overtrain_fixed_e", "compute_only", "curves"):
        assert {k: v for k, v in alone["laws"][name].items()} == report["laws"][name], name
    assert alone["selection"] == report["selection"] and alone["downstream"] == report["downstream"]


def test_the_validation_record_round_trips_through_fit_json(fitted_store, fit_output):
    _, report = fit_output
    target = target_row(fitted_store)
    (record,) = report["validation"]
    assert {"run_id", "params", "tokens", "flops", "loss", "predicted", "lo", "hi", "error", "law", "distance",
            "inside"} <= set(record)
    assert record["run_id"] == target["run_id"] and record["loss"] == pytest.approx(target["loss"])
    assert (record["params"], record["tokens"]) == (target["params"], target["tokens"])
    asked = predict(report, params=target["params"], tokens=target["tokens"])  # what `predict` answers from fit.json
    assert record["predicted"] == pytest.approx(asked["loss"]) and record["law"] == asked["law"]
    assert (record["lo"], record["hi"]) == (asked["loss_lo"], asked["loss_hi"])
    assert record["error"] == pytest.approx(record["predicted"] / record["loss"] - 1)
    assert record["distance"] == pytest.approx(target["flops"] / report["data"]["ranges"]["flops"][1])
    if record["lo"] is None:  # a flagged law: predict gives no interval today, and the record says so
        assert record["inside"] is None and "no interval" in record["note"]
    else:
        assert record["inside"] == (record["lo"] <= record["loss"] <= record["hi"])


def test_compact_fit_output_names_the_selected_law_and_the_validation_error(fit_output):
    out, report = fit_output
    lines = out.strip().splitlines()
    (record,) = report["validation"]
    assert len(lines) <= 25
    assert f"selected loss law: {report['selection']['loss_law']} " in out
    assert any(line.startswith(f"validation {record['name']}: ") and f"= {record['distance']:.3g}x the largest fitted"
               in line for line in lines)
    assert f"error {record['error']:+.2%}" in out and f"predicted {record['predicted']:.4f}" in out


def test_backtest_and_report_show_the_target(fitted_store, fit_output, tmp_path, capsys):
    from scaling_cli.html_report import Target, render_report

    _, report = fit_output
    (record,) = report["validation"]
    capsys.readouterr()
    assert main(["backtest", str(fitted_store), "--n-boot", "10", "--grid-size", "2", "--no-plots",
                 "-o", str(tmp_path / "bt")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    (seen,) = result["validation"]
    assert seen["run_id"] == record["run_id"] and f"validation {record['name']}: " in out
    assert f"error {seen['error']:+.2%}" in out
    page = render_report(str(fitted_store), str(fitted_store / "_fit"), Target(params=7e9, tokens=1e11))
    assert 'id="validation"' in page and record["run_id"] in page and f"{record['error']:+.2%}" in page
    answer = predict(report, params=7e9, tokens=1e11)
    if answer["compute_optimal"].get("withheld"):  # a flagged allocation law: the page says why, with no numbers
        assert "withheld: " in page


# ------------------------------------------------------------------ tables: role column, units

@pytest.fixture(scope="module")
def table_with_target(tmp_path_factory):
    """An over-training law's runs (4 sizes x 4 multipliers) and one run at 32x their compute, role=validation."""
    runs = synthetic.overtrain_runs(sizes=(2e7, 4e7, 8e7, 1.6e8), multipliers=(5, 10, 20, 40), seed=3, noise=0.003)
    target = synthetic.overtrain_runs(sizes=(1.28e9,), multipliers=(20,), seed=4, noise=0.0)
    frame = pd.concat([runs.assign(role="fit"), target.assign(role="validation")], ignore_index=True)
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    path = tmp_path_factory.mktemp("table") / "runs.csv"
    frame.assign(tokenizer="bpe", vocab_size=257).to_csv(path, index=False)
    return path, frame


def test_a_table_role_column_keeps_targets_out_and_byte_units_are_named(table_with_target, capsys):
    path, frame = table_with_target
    assert main(["fit", str(path), *FAST, "--no-plots"]) == 0
    out = capsys.readouterr().out
    report = read_report(str(path.with_name("runs_fit")))
    target_id = frame["run_id"].iloc[-1]
    assert target_id not in report["loss_law_runs"] and len(report["loss_law_runs"]) == 16
    (record,) = report["validation"]
    assert record["distance"] == pytest.approx(frame["flops"].iloc[-1] / frame["flops"].iloc[:-1].max())
    assert abs(record["error"]) < 0.05  # the law is the truth here: a 32x extrapolation lands close
    assert report["data"]["loss_unit"] == units.BYTE and "losses in nats/byte" in out
    assert f"actual {record['loss']:.4f} nats/byte ({record['loss'] / math.log(2):.4f} bits/byte)" in out
    assert main(["predict", "--params", "1e9", "--tokens", "2e10", "--fit", str(path.with_name("runs_fit"))]) == 0
    text = capsys.readouterr().out
    assert " nats/byte (" in text and " bits/byte)" in text and "nats/token" not in text


def test_the_loss_unit_is_bytes_only_for_a_byte_vocabulary(tmp_path, capsys):
    assert units.loss_unit(["bpe", "bpe"], [257, 257]) == units.BYTE
    assert units.loss_unit(["bpe", "bpe"], [257, 259]) == units.TOKEN  # 259 learns two merges: not bytes
    assert units.loss_unit(["gpt2"], [257]) == units.TOKEN and units.loss_unit([], []) == units.TOKEN
    plain = tmp_path / "plain.csv"
    synthetic.overtrain_runs(sizes=(2e7, 4e7, 8e7), multipliers=(5, 10, 20), seed=1).to_csv(plain, index=False)
    assert main(["fit", str(plain), *FAST, "--no-plots"]) == 0
    assert "losses in nats/token" in capsys.readouterr().out  # a table says tokens unless told
    assert main(["fit", str(plain), *FAST, "--no-plots", "--loss-unit", "nats/byte", "-o", str(tmp_path / "b")]) == 0
    assert read_report(str(tmp_path / "b"))["data"]["loss_unit"] == units.BYTE


# ------------------------------------------------------------------ the embedded default's fit, as printed

ASSETS = Path(__file__).parent / "assets"
# fit.json of the embedded default (sweeps/tiny.yaml trained on 2 CPU cores, then `scaling-cli fit`),
# with the keys no summary reads removed at every level (samples, envelope, points, support,
# bootstrap, leave_one_curve_out, run_steps, runs, run_schedules, e_profile, inputs, optimizer,
# reference_params, chinchilla_form, diagnostics, holdout, checks, loss_range, value_range, bounds;
# main's summary of the stripped file equals that of the full one), and what `fit` printed for it
# before issue 21 (summarize of commands/fit.py at 8562d30, on the stripped file)
DEFAULT_FIT = ASSETS / "fit_tiny_default.json"
DEFAULT_SUMMARY_BEFORE = ASSETS / "fit_tiny_default_summary_before.txt"


def test_verbose_keeps_every_line_fit_printed_before_and_the_default_fits_one_screen():
    """`--verbose` prints each line that main's commands/fit.py summarize printed for this fit."""
    from scaling_cli.commands.fit import summarize

    report = json.loads(DEFAULT_FIT.read_text())
    plots = [f"runs/_fit/{p}" for p in report["plots"]]
    verbose = summarize(report, "runs/_fit/fit.json", plots, verbose=True).splitlines()
    before = DEFAULT_SUMMARY_BEFORE.read_text().splitlines()
    assert [line for line in before if line not in verbose] == []
    compact = summarize(report, "runs/_fit/fit.json", plots).splitlines()
    assert len(compact) <= 24  # <= 25 with the line about the fit set that issue 20 adds
    (record,) = report["validation"]
    assert f"selected loss law: {report['selection']['loss_law']} " in "\n".join(compact)
    assert any(line.startswith("validation val-d128L1") for line in compact)
    assert any(f"error {record['error']:+.2%}" in line for line in compact)
    assert len(verbose) > len(compact) + 10  # the parameters and flags are there, not on the first screen


def test_predict_puts_the_loss_first_and_folds_what_it_cannot_predict():
    from scaling_cli.predict import format_prediction

    report = json.loads(DEFAULT_FIT.read_text())
    result = predict(report, params=1e6, tokens=2e7)
    lines = format_prediction(result).splitlines()
    assert lines[1].startswith("loss       ") and " nats/byte (" in lines[1] and "bits/byte)" in lines[1]
    assert lines[2].startswith(f"law        {result['law']}; backtest ")
    missing = [c for c, got in result["downstream"].items() if got["value"] is None]
    folded = [line for line in lines if line.startswith(f"no prediction for {len(missing)} downstream metric(s): ")]
    assert missing and len(folded) == 1 and all(c in folded[0] for c in missing)
    verbose = format_prediction(result, verbose=True).splitlines()
    assert sum(line.split()[0] in missing for line in verbose) == len(missing)  # one line each, with its reason
