"""Tests for scaling_cli/plan.py (sweep -> RunSpecs) and scaling_cli/model/counting.py.

    pytest tests/test_plan.py

Parameter counts are checked against the real model (scaling_cli.model.gpt.GPT) and the FLOP
formula against a hand computation, so the planner cannot drift from what is trained.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scaling_cli.compose import compose
from scaling_cli.config import ConfigError, ModelConfig
from scaling_cli.model.counting import count_params, flops_per_token
from scaling_cli.model.gpt import GPT
from scaling_cli.plan import expand, grid_points, totals


@pytest.fixture(scope="module")
def single_cfg():
    """The composed default config with a one-run sweep (composing costs ~0.3 s, so tests edit copies)."""
    return compose(["sweep=single"])


@pytest.fixture(scope="module")
def tiny_cfg():
    return compose([])


@pytest.fixture(scope="module")
def single_specs(single_cfg):
    return expand(single_cfg)


def _edited(cfg, edits: dict):
    """A deep copy of cfg with dotted keys set (what the same command-line overrides would give)."""
    cfg = copy.deepcopy(cfg)
    for key, value in edits.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


# ------------------------------------------------------------------ grid_points: product vs zip

def _sweep(grid=None, zip_=None):
    return OmegaConf.create({"grid": grid or {}, "zip": zip_ or []})


def test_grid_axes_form_a_cartesian_product():
    points = grid_points(_sweep({"optim.lr": [1e-3, 2e-3], "train.batch_size": [8, 16, 32]}))
    assert len(points) == 6
    assert points == [{"optim.lr": lr, "train.batch_size": b} for lr in (1e-3, 2e-3) for b in (8, 16, 32)]


def test_zip_axes_vary_together_then_cross_the_grid():
    points = grid_points(_sweep({"train.tokens": [1e5, 2e5]},
                                [{"model.d_model": [32, 64, 96], "model.n_layer": [1, 2, 3]}]))
    assert len(points) == 6  # 3 zipped shapes x 2 budgets, not 3 x 3 x 2
    shapes = {(p["model.d_model"], p["model.n_layer"]) for p in points}
    assert shapes == {(32, 1), (64, 2), (96, 3)}
    assert sorted(p["train.tokens"] for p in points) == [1e5, 1e5, 1e5, 2e5, 2e5, 2e5]


def test_no_axes_is_one_run():
    assert grid_points(_sweep()) == [{}]


def test_zip_with_unequal_lengths_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^sweep\.zip\[0\]: zipped axes need equal lengths"):
        grid_points(_sweep(zip_=[{"model.d_model": [32, 64], "model.n_layer": [1]}]))


def test_second_zip_group_is_named_in_the_error():
    with pytest.raises(ConfigError, match=r"^sweep\.zip\[1\]:"):
        grid_points(_sweep(zip_=[{"model.d_model": [32]}, {"optim.lr": [1e-3, 2e-3], "train.seed": [0]}]))


@pytest.mark.parametrize("sweep", [_sweep({"optim.lr": []}), _sweep({"optim.lr": [1e-3]}, [{"model.d_model": []}])])
def test_an_empty_axis_is_a_config_error(sweep):
    with pytest.raises(ConfigError, match="no runs"):
        grid_points(sweep)


def test_a_scalar_axis_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.optim\.lr: expected a list of values"):
        grid_points(_sweep({"optim.lr": 3e-3}))


# ------------------------------------------------------------------ expand: shipped sweeps

@pytest.fixture(scope="module")
def lr_batch_specs():
    return expand(compose(["sweep=lr_batch"]))


@pytest.mark.parametrize("sweep, runs", [("tiny", 31), ("isoflop_cpu", 15), ("lr_batch", 30), ("single", 1)])
def test_shipped_sweeps_expand_to_their_documented_run_counts(request, sweep, runs):
    if sweep == "isoflop_cpu":
        specs = expand(compose(["sweep=isoflop_cpu"]))
    else:
        specs = {"tiny": lambda: expand(request.getfixturevalue("tiny_cfg")),
                 "lr_batch": lambda: request.getfixturevalue("lr_batch_specs"),
                 "single": lambda: request.getfixturevalue("single_specs")}[sweep]()
    assert len(specs) == runs
    assert len({s.run_id for s in specs}) == runs  # every run distinct
    assert all(s.sweep == sweep for s in specs)


def test_tiny_sweep_runs_carry_their_grid_point(tiny_cfg):
    specs = [s for s in expand(tiny_cfg) if s.role == "fit"]  # the validation target: tests/test_validation.py
    branches = [s for s in specs if s.parent]
    # each size's decay branches end at 1/4, 1/2, 3/4 and all of its zipped train.tokens (whole steps)
    budget = dict(zip([16, 24, 32, 48, 64, 96], [2.3e6, 3.0e6, 3.0e6, 4.3e6, 2.7e6, 1.35e6]))
    tokens = {s.config["model"]["d_model"]: [] for s in branches}
    for s in sorted(branches, key=lambda s: s.tokens):
        tokens[s.config["model"]["d_model"]].append(s.tokens)
    assert sorted(tokens) == sorted(budget)
    for width, values in tokens.items():
        np.testing.assert_allclose(values, np.array([0.25, 0.5, 0.75, 1.0]) * budget[width], rtol=0.01,
                                   err_msg=str(width))
    ratios = [s.tokens / s.params for s in branches]  # tokens per parameter (total): 2.1..203
    assert 2 < min(ratios) < 2.2 and 200 < max(ratios) < 205
    assert len([s for s in specs if s.branch_points]) == 6
    for spec in specs:
        for key, value in spec.overrides.items():
            if key in ("wsd_fraction", "wsd_stable", "train.tokens"):
                continue  # a WSD family member trains a fraction of the grid point's train.tokens
            group, name = key.split(".")
            assert spec.config[group][name] == value
        assert "wsd_fraction" in spec.overrides or spec.overrides.get("wsd_stable")
        assert spec.name.startswith(f"d{spec.config['model']['d_model']}L{spec.config['model']['n_layer']}-")
        assert spec.name.endswith(spec.run_id[:6])
        assert "store" not in spec.config and "sweep" not in spec.config


def test_tokens_are_whole_steps_of_batch_times_seq_len(lr_batch_specs):
    for spec in lr_batch_specs:
        batch, seq = spec.config["train"]["batch_size"], spec.config["model"]["seq_len"]
        assert spec.batch_size_tokens == batch * seq
        assert spec.steps == math.ceil(spec.config["train"]["tokens"] / (batch * seq))
        assert spec.tokens == spec.steps * batch * seq
        assert spec.flops == pytest.approx(spec.flops_per_token * spec.tokens, rel=1e-12)


def test_steps_given_directly(single_cfg):
    (spec,) = expand(_edited(single_cfg, {"train.tokens": None, "train.steps": 7, "train.batch_size": 4}))
    assert spec.steps == 7 and spec.tokens == 7 * 4 * 128


def test_totals_sum_the_plan(tiny_cfg):
    specs = expand(tiny_cfg)
    total = totals(specs)
    assert total["runs"] == 31  # 30 fitted + the validation target
    assert total["tokens"] == sum(s.tokens for s in specs)
    assert total["flops"] == pytest.approx(sum(s.flops_to_train for s in specs))  # a branch pays for its decay only
    assert total["flops_unbranched"] == pytest.approx(sum(s.flops for s in specs if not s.branch_points))


def test_duplicate_grid_points_collapse_to_one_run(single_cfg):
    specs = expand(_edited(single_cfg, {"sweep.grid": {"optim.lr": [1e-3, 1e-3, 2e-3]}}))
    assert [s.config["optim"]["lr"] for s in specs] == [1e-3, 2e-3]


def test_summary_is_the_flat_record_for_the_store(single_specs):
    summary = single_specs[0].summary()
    assert summary["run_id"] == single_specs[0].run_id
    assert (summary["d_model"], summary["n_layer"], summary["n_head"]) == (64, 2, 2)
    assert summary["lr"] == 3e-3 and summary["batch_size_tokens"] == 16 * 128
    assert summary["schedule"] == "cosine" and summary["seed"] == 0


# ------------------------------------------------------------------ expand: guards

def test_max_runs_guard(tiny_cfg):
    # WSD families count as the runs they train: 6 sizes x (1 stable + 4 branches), + the validation target
    with pytest.raises(ConfigError, match=r"^sweep\.max_runs: the grid expands to 30 runs, more than sweep\.max_runs=29"):
        expand(_edited(tiny_cfg, {"sweep.max_runs": 29}))
    with pytest.raises(ConfigError, match=r"^sweep\.max_runs: the grid and sweep\.validate expand to 31 runs"):
        expand(_edited(tiny_cfg, {"sweep.max_runs": 30}))
    assert len(expand(_edited(tiny_cfg, {"sweep.max_runs": 31}))) == 31


def test_unknown_key_in_grid_is_named(single_cfg):
    with pytest.raises(ConfigError, match=r"^model\.d_modle: unknown config key in the sweep grid"):
        expand(_edited(single_cfg, {"sweep.grid": {"model.d_modle": [64]}}))


def test_unknown_group_in_grid_is_named(single_cfg):
    with pytest.raises(ConfigError, match=r"^optimizer\.lr: unknown config key"):
        expand(_edited(single_cfg, {"sweep.grid": {"optimizer.lr": [1e-3]}}))


def test_wrong_typed_grid_value_is_named(single_cfg):
    # the same grid given on the command line composes (grid values are untyped) and fails here
    with pytest.raises(ConfigError, match=r"^optim\.lr: .*'abc'.*sweep grid"):
        expand(compose(["sweep=single", "sweep.grid={optim.lr:[1e-3,abc]}"]))
    with pytest.raises(ConfigError, match=r"^model\.n_layer: .*'two'"):
        expand(_edited(single_cfg, {"sweep.grid": {"model.n_layer": ["two"]}}))


def test_store_and_sweep_keys_cannot_vary_in_a_grid(single_cfg):
    with pytest.raises(ConfigError, match=r"^sweep\.grid: 'store\.root' cannot vary"):
        expand(_edited(single_cfg, {"sweep.grid": {"store.root": ["a", "b"]}}))
    with pytest.raises(ConfigError, match=r"^sweep\.grid: 'sweep\.max_runs' cannot vary"):
        expand(_edited(single_cfg, {"sweep.grid": {"sweep.max_runs": [1, 2]}}))


def test_grid_points_are_validated(single_cfg):
    with pytest.raises(ConfigError, match=r"^model\.d_model: 64 is not divisible by model\.n_head=3"):
        expand(_edited(single_cfg, {"sweep.grid": {"model.n_head": [2, 3]}}))


def test_grid_can_supply_a_required_field(single_cfg):
    cfg = _edited(single_cfg, {"model.d_model": "???", "sweep.grid": {"model.d_model": [32, 64]}})
    assert OmegaConf.is_missing(cfg.model, "d_model")
    specs = expand(cfg)
    assert [s.config["model"]["d_model"] for s in specs] == [32, 64]


def test_required_field_left_missing_is_named(single_cfg):
    with pytest.raises(ConfigError, match=r"^model\.n_layer: required value is missing"):
        expand(_edited(single_cfg, {"model.n_layer": "???"}))


def test_unknown_top_level_key_is_rejected(single_cfg):
    cfg = copy.deepcopy(single_cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.fit = {"x": 1}
    with pytest.raises(ConfigError, match=r"^fit: unknown top-level config key"):
        expand(cfg)


# ------------------------------------------------------------------ run_id

def test_run_id_is_stable_across_expansions(single_specs, tiny_cfg):
    again = expand(compose(["sweep=single"]))  # a fresh composition, as in a second CLI call
    assert again[0].run_id == single_specs[0].run_id
    assert len(single_specs[0].run_id) == 12 and int(single_specs[0].run_id, 16) >= 0
    tiny_a, tiny_b = expand(tiny_cfg), expand(copy.deepcopy(tiny_cfg))
    assert [s.run_id for s in tiny_a] == [s.run_id for s in tiny_b]


@pytest.mark.parametrize("key, value", [
    ("optim.lr", 1e-3), ("train.seed", 1), ("model.d_model", 128), ("train.tokens", 1e6),
    ("schedule.name", "wsd"), ("model.mlp", "swiglu"), ("train.batch_size", 8), ("data.languages", ["en"]),
])
def test_run_id_changes_with_what_the_run_computes(single_cfg, single_specs, key, value):
    (spec,) = expand(_edited(single_cfg, {key: value}))
    assert spec.run_id != single_specs[0].run_id


@pytest.mark.parametrize("key, value", [
    ("store.root", "/somewhere/else"), ("train.device", "cpu"), ("train.log_interval", 7), ("train.threads", 2),
    ("train.checkpoint_interval", 3), ("train.compile", True), ("sweep.name", "renamed"),
])
def test_run_id_ignores_where_and_how_a_run_is_executed(single_cfg, single_specs, key, value):
    (spec,) = expand(_edited(single_cfg, {key: value}))
    assert spec.run_id == single_specs[0].run_id


def test_grid_and_override_give_the_same_run_id(single_cfg):
    via_grid = expand(_edited(single_cfg, {"sweep.grid": {"optim.lr": [1e-3]}}))[0]
    via_override = expand(compose(["sweep=single", "optim.lr=1e-3"]))[0]
    assert via_grid.run_id == via_override.run_id


# ------------------------------------------------------------------ counting vs the real model

def _real_counts(cfg: ModelConfig) -> tuple[int, int]:
    model = GPT(cfg)
    total = sum(p.numel() for p in model.parameters())  # a tied weight is listed once
    embed_and_output = model.embed.weight.numel() + (0 if cfg.tied_embeddings else model.lm_head.weight.numel())
    return total, total - embed_and_output


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("qk_layernorm", [False, True])
def test_count_params_equals_the_real_model(mlp, tied, qk_layernorm):
    # d_model 40 with mlp_ratio 2.5 makes the MLP width need rounding (100 -> 104; swiglu 66.7 -> 72)
    cfg = ModelConfig(d_model=40, n_layer=2, n_head=4, seq_len=16, vocab_size=300, mlp=mlp, mlp_ratio=2.5,
                      tied_embeddings=tied, qk_layernorm=qk_layernorm)
    counts = count_params(cfg)
    total, nonembed = _real_counts(cfg)
    assert (counts.total, counts.nonembed) == (total, nonembed)
    assert counts.embedding == 300 * 40
    assert counts.output == (0 if tied else 300 * 40)


def test_spec_params_match_the_model_it_would_train(single_specs):
    cfg = ModelConfig(**single_specs[0].config["model"])
    assert (single_specs[0].params, single_specs[0].params_nonembed) == _real_counts(cfg)


def test_flops_per_token_by_hand_gelu():
    cfg = ModelConfig(d_model=64, n_layer=2, n_head=2, seq_len=128, vocab_size=2048)
    # hidden = 4 * 64 = 256; per block 4*64*64 + 2*64*256 = 16384 + 32768 = 49152
    # matmul params = 2 * 49152 + 64 * 2048 = 98304 + 131072 = 229376
    # 6 * 229376 + 6 * 2 * 128 * 64 = 1376256 + 98304
    assert flops_per_token(cfg) == 1_474_560


def test_flops_per_token_by_hand_swiglu():
    cfg = ModelConfig(d_model=48, n_layer=3, n_head=4, seq_len=64, vocab_size=512, mlp="swiglu")
    # hidden = 8 * ceil((2/3 * 4 * 48) / 8) = 128; per block 4*48*48 + 3*48*128 = 9216 + 18432 = 27648
    # matmul params = 3 * 27648 + 48 * 512 = 82944 + 24576 = 107520
    # 6 * 107520 + 6 * 3 * 64 * 48 = 645120 + 55296
    assert flops_per_token(cfg) == 700_416


@pytest.mark.parametrize("mlp, tied", [("gelu", True), ("swiglu", False)])
def test_flops_count_every_matmul_weight_of_the_real_model(mlp, tied):
    cfg = ModelConfig(d_model=40, n_layer=2, n_head=4, seq_len=16, vocab_size=300, mlp=mlp, mlp_ratio=2.5,
                      tied_embeddings=tied, qk_layernorm=True)
    model = GPT(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(cfg) == 6 * linear + 6 * cfg.n_layer * cfg.seq_len * cfg.d_model
