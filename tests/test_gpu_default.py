"""The GPU default (sweeps/small.yaml): chosen by hardware, designed for sweep -> fit -> predict.

    pytest tests/test_gpu_default.py

CUDA is faked (torch.cuda.is_available patched) to check the choice both ways on a CPU; the design
tests read the planner's own expansion of the sweep file; the chain test trains a scaled-down copy
of the design (same axes and blocks, tiny shapes and budgets, evals cut down) on the CPU, then fits
and predicts from its store.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scaling_cli.cli import main
from scaling_cli.compose import GPU_DEFAULT_SWEEP, compose, sweep_files
from scaling_cli.config import ConfigError, ModelConfig
from scaling_cli.model.counting import count_params
from scaling_cli.packs import expected_compiles
from scaling_cli.plan import expand, grid_points

ASSUMED_MFU_FLOPS = 0.2 * 989e12  # the sweep file's stated assumption: an H100 at 20% MFU


def dry_run(capsys, *overrides: str) -> str:
    capsys.readouterr()
    assert main(["sweep", "--dry-run", *overrides]) == 0
    return capsys.readouterr().out


@pytest.fixture
def cuda(monkeypatch):
    def fake(available: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    return fake


# ------------------------------------------------------------------ the choice by hardware

def test_with_cuda_and_no_sweep_named_the_gpu_default_is_planned(cuda, capsys, tmp_path):
    cuda(True)
    out = dry_run(capsys, f"store.root={tmp_path}")
    assert f"sweep={GPU_DEFAULT_SWEEP}: the GPU default" in out
    assert f"sweep '{GPU_DEFAULT_SWEEP}': 34 runs" in out  # 33 fitted + the validation target
    assert "compile: at most 22 graphs" in out  # 5 architectures x 2 regions x (packs, alone) + the target's 2
    assert "GPU-minutes (H100 at an assumed 20% MFU), an estimate" in out  # the target's GPU time


def test_without_cuda_the_cpu_default_stays_tiny(cuda, capsys, tmp_path):
    cuda(False)
    out = dry_run(capsys, f"store.root={tmp_path}")
    assert "GPU default" not in out and "sweep 'tiny': 31 runs" in out  # 30 fitted + the validation target


@pytest.mark.parametrize("named", ["sweep=tiny", "+sweep=lr_batch"])
def test_a_named_sweep_wins_over_the_hardware_default(cuda, capsys, tmp_path, named):
    cuda(True)
    out = dry_run(capsys, named, f"store.root={tmp_path}")
    assert "GPU default" not in out and f"sweep '{named.split('=')[1]}'" in out


# ------------------------------------------------------------------ the design of sweeps/small.yaml

@pytest.fixture(scope="module")
def planned():
    return expand(compose([f"sweep={GPU_DEFAULT_SWEEP}"]))


@pytest.fixture(scope="module")
def small_specs(planned):
    """The runs the laws are fitted on (the validation target has its own test)."""
    return [s for s in planned if s.role == "fit"]


def test_a_validation_target_at_10x_the_largest_fitted_run(planned, small_specs, cuda, capsys, tmp_path):
    (target,) = [s for s in planned if s.role == "validation"]
    largest = max(s.flops for s in small_specs)
    assert target.flops >= 10 * largest
    assert (target.config["model"]["d_model"], target.config["model"]["n_layer"]) == (512, 8)
    cuda(True)
    out = dry_run(capsys, f"store.root={tmp_path}")
    minutes = target.flops / ASSUMED_MFU_FLOPS / 60
    assert f"= {target.flops / largest:.3g}x the largest fitted run" in out
    assert f"~{minutes:.3g} GPU-minutes (H100 at an assumed 20% MFU), an estimate" in out
    assert 20 < minutes < 30  # the file says ~24 min


def test_every_size_has_several_token_multipliers_well_above_one(small_specs):
    multipliers = defaultdict(set)
    for spec in small_specs:
        multipliers[spec.params].add(round(spec.tokens / spec.params))
    assert len(multipliers) == 5
    assert all({5, 10, 20} <= m for m in multipliers.values())
    largest = max(multipliers)
    assert multipliers[largest] == {5, 10, 20}  # the held-out size has every budget of the law
    assert sum(40 in m for m in multipliers.values()) == 2


def test_the_lr_axis_sits_at_four_cells_of_different_n_and_d(small_specs):
    cells = defaultdict(set)
    for spec in small_specs:
        cells[(spec.params, spec.tokens)].add(spec.config["optim"]["lr"])
    swept = {cell: lrs for cell, lrs in cells.items() if len(lrs) > 1}
    assert len(swept) == 4 and all(len(lrs) == 5 for lrs in swept.values())
    for lrs in swept.values():  # factor-2 spacing around the main grid's lr
        assert np.allclose(np.diff(np.log2(sorted(lrs))), 1.0)
    design = np.array([[1.0, math.log(n), math.log(d)] for n, d in swept])
    assert np.linalg.matrix_rank(design) == 3  # eta_opt = a N^b D^c is identifiable
    assert len(small_specs) == len(cells) + 4 * 4  # the axis is not crossed with the whole grid


def test_the_fitted_runs_fit_15_minutes_on_an_h100_at_the_stated_mfu(small_specs):
    flops = sum(s.flops_to_train for s in small_specs)
    training_min = flops / ASSUMED_MFU_FLOPS / 60
    assert 4 < training_min < 9  # the file says ~7.2 min, leaving room for start-up, compile and evals
    cfg = compose([f"sweep={GPU_DEFAULT_SWEEP}"])
    assert cfg.train.device == "cuda" and cfg.train.compile and cfg.train.precision == "bf16"
    assert list(cfg.eval.tasks) == ["translation", "next_verse", "translation_choice"]
    assert cfg.eval.finetune_steps < 200 and cfg.eval.translation.n_examples < 500  # cut from eval=full
    assert expected_compiles(small_specs, cfg.launcher)["architectures"] == 5
    text = sweep_files()[GPU_DEFAULT_SWEEP].read_text()
    for claim in ("20% MFU", "What it cannot", "1.7M training tokens", "Muennighoff"):
        assert claim in text


# ------------------------------------------------------------------ planner: tokens_per_param, extra blocks

def test_tokens_per_param_plans_m_times_n_and_is_the_same_run_as_those_tokens(tmp_path):
    base = ["sweep=single", "model.d_model=64", "model.n_layer=2", "model.n_head=2", f"store.root={tmp_path}"]
    spec = expand(compose([*base, "train.tokens_per_param=20"]))[0]
    params = count_params(ModelConfig(**spec.config["model"])).total
    assert spec.config["train"]["tokens"] == 20.0 * params
    assert spec.steps == math.ceil(20 * params / spec.batch_size_tokens)
    explicit = expand(compose([*base, f"train.tokens={20.0 * params!r}"]))[0]
    assert explicit.run_id == spec.run_id
    with pytest.raises(ConfigError, match=r"^train\.tokens_per_param: must be > 0"):
        expand(compose([*base, "train.tokens_per_param=-1"]))
    with pytest.raises(ConfigError, match=r"^train\.tokens_per_param: sweep\.budgets"):
        expand(compose([*base, "train.tokens_per_param=20", "sweep.budgets=[1e12]"]))


def test_extra_blocks_add_their_points_to_the_main_grid():
    sweep = OmegaConf.create({"grid": {"optim.lr": [1e-3, 2e-3]}, "zip": [],
                              "extra": [{"grid": {"optim.lr": [4e-3], "train.seed": [0, 1]}},
                                        {"zip": [{"model.d_model": [32, 64], "model.n_layer": [1, 2]}]}]})
    points = grid_points(sweep)
    assert points == [{"optim.lr": 1e-3}, {"optim.lr": 2e-3}, {"optim.lr": 4e-3, "train.seed": 0},
                      {"optim.lr": 4e-3, "train.seed": 1}, {"model.d_model": 32, "model.n_layer": 1},
                      {"model.d_model": 64, "model.n_layer": 2}]
    only_blocks = OmegaConf.create({"grid": {}, "zip": [], "extra": [{"grid": {"optim.lr": [4e-3]}}]})
    assert grid_points(only_blocks) == [{"optim.lr": 4e-3}]  # no run of the bare config
    with pytest.raises(ConfigError, match=r"^sweep\.extra\[0\]\.zip\[0\]: zipped axes need equal lengths"):
        grid_points(OmegaConf.create({"extra": [{"zip": [{"model.d_model": [32, 64], "model.n_layer": [1]}]}]}))
    with pytest.raises(ConfigError, match=r"^sweep\.extra\[0\]: a block is"):
        grid_points(OmegaConf.create({"extra": [{"grids": {"optim.lr": [1e-3]}}]}))


@pytest.mark.parametrize("override, field", [
    ("optim.lr=1e-3", "optim.lr"),                      # varied by the lr blocks of sweep.extra
    ("train.tokens=1e7", "train.tokens"),               # the tokens come from train.tokens_per_param
    ("train.steps=100", "train.steps"),
])
def test_an_override_the_gpu_default_would_overwrite_stops_the_command(capsys, tmp_path, override, field):
    assert main(["sweep", "--dry-run", f"sweep={GPU_DEFAULT_SWEEP}", override, f"store.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scaling-cli sweep: error: {field}: sweep 'small'") and "\n" not in err


def test_dropping_the_blocks_lets_a_single_budget_through(capsys, tmp_path):
    out = dry_run(capsys, f"sweep={GPU_DEFAULT_SWEEP}", "sweep.extra=[]", "train.tokens_per_param=null",
                  "train.tokens=1e7", f"store.root={tmp_path}")
    assert "sweep 'small': 6 runs" in out  # 5 sizes, one budget each, and the validation target


# ------------------------------------------------------------------ the chain on a scaled-down copy

# The GPU default's sizes mapped to tiny ones (same count, same order), and its budgets scaled down.
TINY_SHAPES = {128: (16, 1, 2), 192: (24, 1, 2), 256: (32, 2, 2), 320: (40, 2, 2), 384: (48, 2, 2),
               512: (64, 2, 2)}
TOKENS_SCALE = 1 / 8
CPU_SETTINGS = {
    "model": {"seq_len": 32, "vocab_size": 512},  # the vocabulary of the other CPU tests: its data cache is shared
    "train": {"batch_size": 32, "device": "cpu", "precision": "fp32", "compile": False, "eval_interval": 20,
              "eval_tokens": 2048, "log_interval": 10, "checkpoint_interval": 1000, "diagnostics_interval": 0},
    "eval": {"finetune_steps": 2, "finetune_batch_size": 4, "translation": {"n_examples": 4, "max_new_tokens": 4},
             "choice_items": 8, "batch_size": 8},
    "launcher": {"pack_size": 12},
}


def scaled_copy(folder: Path) -> Path:
    """sweeps/small.yaml with every block's (and the validation target's) shapes tiny and token
    multipliers x TOKENS_SCALE."""
    design = OmegaConf.to_container(OmegaConf.load(sweep_files()[GPU_DEFAULT_SWEEP]))
    blocks = [design["sweep"], *design["sweep"]["extra"]]
    for target in design["sweep"]["validate"]:
        shape = TINY_SHAPES[target["model.d_model"]]
        target.update({"model.d_model": shape[0], "model.n_layer": shape[1], "model.n_head": shape[2],
                       "train.tokens_per_param": target["train.tokens_per_param"] * TOKENS_SCALE})
    for block in blocks:
        for group in block.get("zip", []):
            shapes = [TINY_SHAPES[d] for d in group["model.d_model"]]
            for i, key in enumerate(("model.d_model", "model.n_layer", "model.n_head")):
                group[key] = [shape[i] for shape in shapes]
        grid = block.get("grid", {})
        grid["train.tokens_per_param"] = [m * TOKENS_SCALE for m in grid["train.tokens_per_param"]]
    for group, values in CPU_SETTINGS.items():
        design.setdefault(group, {})
        for key, value in values.items():
            if isinstance(value, dict):
                design[group].setdefault(key, {}).update(value)
            else:
                design[group][key] = value
    design["sweep"]["name"] = "small_cpu_copy"
    folder.mkdir()
    OmegaConf.save(OmegaConf.create(design), folder / "small_cpu_copy.yaml")
    return folder


def test_sweep_fit_predict_on_a_scaled_down_copy_of_the_gpu_default(tmp_path, capsys):
    sweeps = scaled_copy(tmp_path / "sweeps")
    store = tmp_path / "runs"
    assert main(["sweep", "--no-progress", "--sweeps-dir", str(sweeps), "sweep=small_cpu_copy",
                 f"store.root={store}"]) == 0
    assert "trained 34 runs (34 done)" in capsys.readouterr().out  # 33 fitted + the validation target
    assert main(["fit", str(store), "--n-boot", "10", "--grid-size", "3", "--curve-groups", "2", "--no-plots"]) == 0
    report = json.loads((store / "_fit" / "fit.json").read_text())
    assert report["laws"]["chinchilla"]["status"] == "ok"
    holdout = report["holdout"]  # the largest size, held out and predicted by the law fitted on the rest
    assert holdout["n_test"] == 3 and holdout["scores"]["chinchilla"]["status"] == "ok"
    assert np.isfinite(holdout["scores"]["chinchilla"]["mean_abs_rel_error"])
    lr = report["laws"]["lr_opt"]
    assert len(lr.get("cells", [])) + len(lr.get("skipped_cells", [])) == 4  # the 4 cells of the lr axis
    assert any(report["downstream"]["metrics"])  # downstream columns reached the fit
    (target,) = report["validation"]  # predicted from the 33 fitted runs, never fitted
    assert target["run_id"] not in report["loss_law_runs"] and np.isfinite(target["loss"])
    capsys.readouterr()
    assert main(["predict", "--params", "7e9", "--fit", str(store / "_fit"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["params"] == 7e9 and answer["law"] in report["laws"]
    if answer["reliable"]:  # a sane law: a loss with its interval and a compute-optimal D for 7e9
        assert np.isfinite(answer["loss"]) and answer["loss_lo"] <= answer["loss_hi"]
        assert 5 <= answer["compute_optimal"]["tokens_opt_for_params"] / 7e9 <= 200
    else:  # these CPU-sized runs rarely identify a law: the allocation is withheld, with the reason
        assert answer["reasons"] and "withheld" in answer["compute_optimal"]
    # at a stated D the chain always answers with a loss
    assert main(["predict", "--params", "7e9", "--tokens", "1.4e11", "--fit", str(store / "_fit"), "--json"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["loss"])
