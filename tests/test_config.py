"""Tests for scaling_cli/config.py (schemas, validate) and scaling_cli/compose.py (Hydra composition).

    pytest tests/test_config.py

Every compose error must reach the user as a UserError with a one-line message that names
the offending field; every semantic check in validate() raises a ConfigError naming its field.
"""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from scaling_cli.compose import compose, normalise_overrides
from scaling_cli.config import Config, ConfigError, ModelConfig, TrainConfig, validate
from scaling_cli.errors import UserError
from scaling_cli.plan import expand


@pytest.fixture(scope="module")
def base_cfg():
    """The composed default config with a one-run sweep; tests deep-copy it before editing."""
    return compose(["sweep=single"])


def _one_line_user_error(overrides, sweeps_dir=None) -> str:
    with pytest.raises(UserError) as info:
        compose(overrides, sweeps_dir=sweeps_dir)
    message = str(info.value)
    assert "\n" not in message, f"multi-line message: {message!r}"
    return message


# ------------------------------------------------------------------ compose: defaults and groups

def test_compose_defaults_pick_the_cpu_groups_and_the_tiny_sweep():
    cfg = compose()
    # conf/model/tiny.yaml
    assert (cfg.model.d_model, cfg.model.n_layer, cfg.model.n_head) == (64, 2, 2)
    assert (cfg.model.seq_len, cfg.model.mlp) == (128, "gelu")
    # conf/data/bible.yaml, conf/train/cpu.yaml, conf/store/local.yaml
    assert cfg.data.source == "embedded" and list(cfg.data.languages) == ["en", "es"]
    assert cfg.train.tokens == 5e5 and cfg.train.steps is None
    assert cfg.optim.lr == 3e-3
    assert cfg.store.root == "runs"
    # sweeps/tiny.yaml is the default sweep: 6 zipped sizes, each a WSD family of 4 token budgets,
    # and it sets the schedule (wsd, 25 warmup steps), the byte-level vocabulary and untied embeddings
    assert cfg.sweep.name == "tiny"
    assert (cfg.schedule.name, cfg.schedule.warmup, cfg.schedule.min_lr_ratio) == ("wsd", 25, 0.0)
    assert (cfg.model.vocab_size, cfg.model.tied_embeddings, cfg.train.batch_size) == (257, False, 8)
    assert list(cfg.sweep.wsd_branches) == [0.25, 0.5, 0.75, 1.0] and len(cfg.sweep.grid) == 0
    assert list(cfg.sweep.zip[0]["model.d_model"]) == [16, 24, 32, 48, 64, 96]
    validate(cfg)  # the shipped default is valid


@pytest.mark.parametrize("overrides, expected", [
    (["model=gpt_small", "schedule=wsd", "train=gpu", "sweep=single"],
     {"model.d_model": 256, "model.vocab_size": 32768, "model.seq_len": 1024, "model.mlp": "swiglu",
      "schedule.name": "wsd", "schedule.decay_shape": "sqrt", "schedule.min_lr_ratio": 0.0, "schedule.decay": 0.2,
      "train.precision": "bf16", "train.device": "cuda", "train.tokens": 1e8, "train.batch_size": 64,
      "sweep.name": "single", "optim.lr": 3e-3}),
    (["schedule=linear", "sweep=lr_batch", "data=local", "data.source=/my/texts"],
     {"schedule.name": "linear", "schedule.min_lr_ratio": 0.0, "sweep.name": "lr_batch", "train.tokens": 5e5,
      "model.d_model": 64, "data.source": "/my/texts", "data.val_fraction": 0.05}),
    (["schedule=constant", "sweep=single"], {"schedule.name": "constant", "schedule.warmup": 0.05}),
])
def test_compose_group_choices_select_their_yaml(overrides, expected):
    cfg = compose(overrides)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_compose_converts_override_types_through_the_schema():
    cfg = compose(["sweep=single", "optim.lr=1", "model.d_model=128", "train.tokens=null", "train.steps=20"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.d_model == 128 and isinstance(cfg.model.d_model, int)
    assert cfg.train.tokens is None and cfg.train.steps == 20
    validate(cfg)


def test_local_data_group_leaves_source_required():
    cfg = compose(["data=local", "sweep=single"])
    assert OmegaConf.is_missing(cfg.data, "source")
    with pytest.raises(ConfigError, match=r"^data\.source: required value is missing"):
        expand(cfg)


# ------------------------------------------------------------------ compose: one-line UserErrors

def test_unknown_key_names_the_field():
    message = _one_line_user_error(["model.d_modle=3"])
    assert message.startswith("model.d_modle:")
    assert "not in" in message and "--show-config" in message


def test_unknown_top_level_key_names_the_field():
    assert _one_line_user_error(["foo=3"]).startswith("foo:")


def test_wrong_type_names_the_field():
    message = _one_line_user_error(["optim.lr=abc"])
    assert message.startswith("optim.lr:")
    assert "abc" in message


def test_wrong_type_for_int_field():
    message = _one_line_user_error(["model.n_layer=two"])
    assert message.startswith("model.n_layer:") and "two" in message


def test_unknown_group_option_lists_the_real_options_only():
    message = _one_line_user_error(["model=nope"])
    assert "model/nope" in message
    assert "gpt_small" in message and "tiny" in message
    assert "base_model" not in message  # schema entries are not user-facing options


def test_unknown_sweep_lists_the_shipped_sweeps():
    message = _one_line_user_error(["sweep=nope"])
    assert message.startswith("sweep:") and "'nope'" in message
    for name in ("tiny", "isoflop_cpu", "lr_batch", "single", "chinchilla"):
        assert name in message


@pytest.mark.parametrize("override", ["model.d_model", "model.d_model=="])
def test_malformed_override_is_a_user_error_naming_it(override):
    message = _one_line_user_error([override])
    assert message.startswith("model.d_model: cannot parse the override") and repr(override) in message


@pytest.mark.parametrize("override", ["model.d_model=[1,", "model.d_model=${oops"])
def test_malformed_override_value_names_the_field(override):
    message = _one_line_user_error([override])
    assert "model.d_model" in message


def test_plus_sweep_spelling_is_accepted():
    assert normalise_overrides(["+sweep=single", "+model.x=1", "sweep=tiny"]) == ["sweep=single", "+model.x=1",
                                                                                  "sweep=tiny"]
    cfg = compose(["+sweep=single"])
    assert cfg.sweep.name == "single"
    assert len(cfg.sweep.grid) == 0 and len(cfg.sweep.zip) == 0
    assert len(expand(cfg)) == 1
    assert "'nope'" in _one_line_user_error(["+sweep=nope"])


def test_sweep_grid_override_adds_an_axis_to_the_sweep():
    cfg = compose(["sweep.grid={train.seed:[0,1]}"])
    assert OmegaConf.to_container(cfg.sweep.grid) == {"train.seed": [0, 1]}
    specs = expand(cfg)
    assert len(specs) == 61  # tiny's 30 runs (6 stable + 24 branches) x 2 seeds, + its validation target (not crossed)
    assert sorted({s.config["train"]["seed"] for s in specs}) == [0, 1]


def test_sweep_grid_value_must_be_a_list():
    message = _one_line_user_error(["sweep.grid={optim.lr:3}"])
    assert message.startswith("sweep.grid.optim.lr:")


# ------------------------------------------------------------------ --sweeps-dir

def test_user_sweeps_dir_adds_a_sweep(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "sweep:\n  name: mine\n  grid:\n    optim.lr: [1e-3, 2e-3, 4e-3]\ntrain:\n  tokens: 1e5\n")
    cfg = compose(["sweep=mine"], sweeps_dir=str(tmp_path))
    assert cfg.sweep.name == "mine"
    assert cfg.train.tokens == 1e5  # a sweep file may set keys outside `sweep`
    specs = expand(cfg)
    assert [s.config["optim"]["lr"] for s in specs] == [1e-3, 2e-3, 4e-3]
    # the same name given the DESIGN.md way
    assert compose(["+sweep=mine"], sweeps_dir=str(tmp_path)).sweep.name == "mine"


def test_user_sweep_shadows_a_shipped_one_only_while_its_folder_is_given(tmp_path):
    (tmp_path / "tiny.yaml").write_text("sweep:\n  name: my_tiny\n")
    assert compose([], sweeps_dir=str(tmp_path)).sweep.name == "my_tiny"
    # the next composition without the folder is back to the shipped sweep
    assert compose([]).sweep.name == "tiny"


def test_user_sweep_is_not_visible_without_its_folder(tmp_path):
    (tmp_path / "private.yaml").write_text("sweep:\n  name: private\n")
    compose(["sweep=private"], sweeps_dir=str(tmp_path))
    assert "'private'" in _one_line_user_error(["sweep=private"])


def test_user_sweep_with_unknown_key_names_it(tmp_path):
    (tmp_path / "typo.yaml").write_text("sweep:\n  nme: x\n")
    assert _one_line_user_error(["sweep=typo"], sweeps_dir=str(tmp_path)).startswith("sweep.nme:")


def test_malformed_sweep_yaml_is_a_user_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("sweep: [unclosed\n  name: x\n")
    message = _one_line_user_error([], sweeps_dir=str(tmp_path))
    assert message.startswith("sweep=broken:")
    assert str(bad) in message and "not valid YAML" in message


def test_sweeps_dir_must_be_a_folder(tmp_path):
    message = _one_line_user_error([], sweeps_dir=str(tmp_path / "missing"))
    assert message.startswith("--sweeps-dir:")


# ------------------------------------------------------------------ validate()

# (key, bad value, field named at the start of the ConfigError message)
INVALID = [
    ("model.mlp", "relu", "model.mlp"),
    ("model.loss_impl", "cuda", "model.loss_impl"),
    ("schedule.name", "exponential", "schedule.name"),
    ("schedule.decay_shape", "cubic", "schedule.decay_shape"),
    ("train.precision", "fp16", "train.precision"),
    ("model.d_model", 0, "model.d_model"),
    ("model.n_layer", -1, "model.n_layer"),
    ("model.n_head", 0, "model.n_head"),
    ("model.seq_len", 0, "model.seq_len"),
    ("model.vocab_size", -5, "model.vocab_size"),
    ("model.n_head", 3, "model.d_model"),  # 64 % 3 != 0
    ("model.vocab_size", 256, "model.vocab_size"),  # < 256 bytes + end-of-text
    ("model.z_loss", -1e-4, "model.z_loss"),
    ("model.logit_softcap", -1.0, "model.logit_softcap"),
    ("model.mlp_ratio", 0.0, "model.mlp_ratio"),
    ("model.init_std", 0.0, "model.init_std"),
    ("optim.lr", -1e-3, "optim.lr"),
    ("optim.lr", 0.0, "optim.lr"),
    ("optim.beta1", 1.0, "optim.beta1/beta2"),
    ("optim.beta2", -0.1, "optim.beta1/beta2"),
    ("optim.weight_decay", -0.1, "optim.weight_decay"),
    ("optim.grad_clip", -1.0, "optim.grad_clip"),
    ("schedule.warmup", -0.1, "schedule.warmup"),
    ("schedule.min_lr_ratio", 1.5, "schedule.min_lr_ratio"),
    ("schedule.min_lr_ratio", -0.1, "schedule.min_lr_ratio"),
    ("schedule.decay", 0.0, "schedule.decay"),
    ("train.steps", 100, "train.tokens"),  # tokens is already set: both given
    ("train.tokens", None, "train.tokens"),  # steps is None: neither given
    ("train.tokens", -5.0, "train.tokens"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.eval_interval", 0, "train.eval_interval"),
    ("train.eval_tokens", -1, "train.eval_tokens"),
    ("train.log_interval", 0, "train.log_interval"),
    ("train.checkpoint_interval", 0, "train.checkpoint_interval"),
    ("train.divergence_factor", 1.0, "train.divergence_factor"),
    ("train.threads", -1, "train.threads"),
    ("data.val_fraction", 0.0, "data.val_fraction"),
    ("data.val_fraction", 1.0, "data.val_fraction"),
    ("data.languages", [], "data.languages"),
]


@pytest.mark.parametrize("key, value, field", INVALID, ids=[f"{k}={v}" for k, v, _ in INVALID])
def test_validate_rejects_each_bad_value_naming_the_field(base_cfg, key, value, field):
    cfg = copy.deepcopy(base_cfg)
    validate(cfg)  # the copy is valid before the edit, so the edit alone causes the error
    OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message


def test_validate_head_dim_must_be_even(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg.model.d_model, cfg.model.n_head = 6, 2  # head dim 3
    with pytest.raises(ConfigError, match=r"^model\.n_head: head dim d_model/n_head=3 must be even"):
        validate(cfg)


def test_validate_steps_must_be_positive(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg.train.tokens, cfg.train.steps = None, 0
    with pytest.raises(ConfigError, match=r"^train\.steps: must be > 0"):
        validate(cfg)


@pytest.mark.parametrize("edits", [
    {"schedule.min_lr_ratio": 0.0}, {"schedule.min_lr_ratio": 1.0}, {"schedule.warmup": 0.0},
    {"optim.beta1": 0.0}, {"optim.grad_clip": 0.0}, {"model.vocab_size": 257}, {"train.threads": 0},
    {"train.tokens": None, "train.steps": 1}, {"model.d_model": 66, "model.n_head": 3},
])
def test_validate_accepts_boundary_values(base_cfg, edits):
    cfg = copy.deepcopy(base_cfg)
    for key, value in edits.items():
        OmegaConf.update(cfg, key, value, merge=False)
    validate(cfg)


def test_validate_works_on_dataclasses_too():
    cfg = Config(model=ModelConfig(d_model=64, n_layer=2, n_head=2), train=TrainConfig(tokens=1e5))
    validate(cfg)
    cfg.model.mlp = "relu"
    with pytest.raises(ConfigError, match=r"^model\.mlp: got 'relu'; choose one of gelu, swiglu"):
        validate(cfg)
    cfg.model.mlp = "swiglu"
    cfg.optim.lr = -1.0
    with pytest.raises(ConfigError, match=r"^optim\.lr: must be > 0, got -1.0"):
        validate(cfg)


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)
