"""Tests for μP (scaling_cli/model/mup.py): the multipliers and init scales, the optimizer's
per-group learning rates through the trainer, config validation, and a coordinate check.

Coordinate check (Tensor Programs V, App. D.1 / Fig. 5): train the same proxy at several widths
for a few Adam steps with one fixed learning rate, then measure the mean |coordinate| of each
layer's output. Under μP it stays flat with width; under the standard parametrization it grows
(Adam's updates add Theta(width) to every pre-activation). Measured on CPU at widths 32..256,
LR 3e-3, 5 steps, base width 64, a learnable token stream: widest/narrowest ratios 0.74-0.80
under μP, 6.3-17 under the standard parametrization.

    pytest tests/test_mup.py
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scaling_cli.config import ConfigError, ModelConfig, OptimConfig, validate
from scaling_cli.compose import compose
from scaling_cli.model import mup
from scaling_cli.model.gpt import GPT
from scaling_cli.train.trainer import build_optimizer

VOCAB, SEQ = 256, 16
WIDTHS = (32, 64, 128, 256)
# μP: every layer's activation scale at the widest width is within this factor of the narrowest.
# Flatness holds in the infinite-width limit; at 32..256 finite-width terms (the readout's init
# and the part of an update not aligned with the activations, both Theta(1/sqrt(width)) under μP)
# still shrink each layer by 20-26% from width 32 to 256.
MUP_FLAT_FACTOR = 1.5
# Standard: every layer's activation scale grows by more than this from narrowest to widest.
SP_GROWTH_FACTOR = 3.0


def _cfg(width: int = 64, parametrization: str = "mup", **kwargs) -> ModelConfig:
    base = dict(d_model=width, n_layer=2, n_head=2, seq_len=SEQ, vocab_size=VOCAB, tied_embeddings=False,
                parametrization=parametrization, mup_base_width=64)
    base.update(kwargs)
    return ModelConfig(**base)


# ------------------------------------------------------------------ multipliers and init

def test_multipliers_at_four_times_the_base_width():
    cfg = _cfg(256)  # m = 256 / 64 = 4, head_dim = 128
    assert mup.width_mult(cfg) == 4.0
    assert mup.output_multiplier(cfg) == 0.25
    assert mup.hidden_init_std(cfg) == pytest.approx(0.02 / 2)
    assert mup.attention_scale(cfg) == pytest.approx(1 / math.sqrt(128 * 4))  # = sqrt(32) / 128: alpha / d_head
    assert mup.attention_scale(_cfg(64)) == pytest.approx(1 / math.sqrt(32))  # the base width: SDPA's default


def test_standard_parametrization_has_no_multipliers():
    cfg = _cfg(256, "standard")
    assert mup.width_mult(cfg) == 1.0 and mup.output_multiplier(cfg) == 1.0 and mup.attention_scale(cfg) is None
    model = GPT(cfg)
    assert type(model.final_norm) is nn.RMSNorm and model.blocks[0].attn.scale is None
    opt = build_optimizer(model, OptimConfig(lr=1e-3), torch.device("cpu"))
    assert [(g["weight_decay"], g["lr_mult"]) for g in opt.param_groups] == [(0.1, 1.0), (0.0, 1.0)]


def test_mup_init_scales():
    torch.manual_seed(0)
    model = GPT(_cfg(256))
    std = lambda t: t.detach().std().item()
    assert std(model.embed.weight) == pytest.approx(0.02, rel=0.03)  # input layer: width-independent
    assert std(model.lm_head.weight) == pytest.approx(0.02, rel=0.03)  # Table 8: width-independent, times 1/m
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    assert std(attn.qkv.weight) == pytest.approx(0.01, rel=0.03)  # 0.02 / sqrt(m)
    assert std(mlp.up.weight) == pytest.approx(0.01, rel=0.03)
    depth = 1 / math.sqrt(2 * 2)  # GPT-2's residual-projection factor is kept
    assert std(attn.proj.weight) == pytest.approx(0.01 * depth, rel=0.05)
    assert std(mlp.down.weight) == pytest.approx(0.01 * depth, rel=0.05)
    assert all(torch.all(p == 1) for n, p in model.named_parameters() if p.dim() == 1)


def test_output_multiplier_scales_logits_and_loss_without_materialising():
    torch.manual_seed(0)
    model = GPT(_cfg(256))
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
    idx = torch.randint(0, VOCAB, (2, SEQ))
    targets = torch.randint(0, VOCAB, (2, SEQ))
    x = model.embed(idx)
    for block in model.blocks:
        x = block(x, model.rope_cos, model.rope_sin)
    plain = F.linear(F.rms_norm(x, (256,), model.final_norm.weight, model.final_norm.eps), model.lm_head.weight)
    torch.testing.assert_close(model.logits(idx), plain * 0.25)
    expected = F.cross_entropy(model.logits(idx).reshape(-1, VOCAB), targets.reshape(-1))
    assert model(idx, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mup_attention_uses_one_over_head_dim():
    torch.manual_seed(0)
    cfg = _cfg(128)  # head_dim 64, m = 2
    attn = GPT(cfg).blocks[0].attn
    cos, sin = GPT(cfg).rope_cos, GPT(cfg).rope_sin
    x = torch.randn(2, SEQ, 128)
    q, k, v = attn.project(x, cos, sin)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(64 * 2)
    scores = scores.masked_fill(~torch.ones(SEQ, SEQ, dtype=torch.bool).tril(), float("-inf"))
    expected = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, SEQ, 128))
    torch.testing.assert_close(attn(x, cos, sin), expected, rtol=1e-5, atol=1e-6)


def test_mup_at_the_base_width_is_the_standard_parametrization():
    def losses(parametrization: str) -> list[float]:
        torch.manual_seed(0)
        model = GPT(_cfg(64, parametrization))
        opt = build_optimizer(model, OptimConfig(lr=1e-2), torch.device("cpu"))
        data = torch.randint(0, VOCAB, (3, 4, SEQ + 1), generator=torch.Generator().manual_seed(1))
        out = []
        for batch in data:
            loss = model(batch[:, :-1], batch[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            out.append(loss.item())
        return out

    assert losses("mup") == losses("standard")


def test_optimizer_groups_carry_mup_lr_multipliers():
    model = GPT(_cfg(256))
    opt = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.1), torch.device("cpu"))
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        group = by_id[id(p)]
        kind = mup.param_class(name, p)
        assert group["lr_mult"] == (0.25 if kind == "hidden" else 1.0), name
        assert group["lr"] == pytest.approx(1e-2 * group["lr_mult"])
        assert group["weight_decay"] == (0.1 if kind in ("hidden", "output") else 0.0), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


# ------------------------------------------------------------------ config

def test_mup_with_tied_embeddings_is_a_config_error_naming_the_fix():
    cfg = compose(["sweep=single", "model.parametrization=mup"])
    with pytest.raises(ConfigError, match=r"^model\.tied_embeddings: .*model\.tied_embeddings=false"):
        validate(cfg)
    validate(compose(["sweep=single", "model.parametrization=mup", "model.tied_embeddings=false"]))


@pytest.mark.parametrize("override, field", [("model.parametrization=mupp", "model.parametrization"),
                                             ("model.mup_base_width=0", "model.mup_base_width"),
                                             ("train.diagnostics_interval=-1", "train.diagnostics_interval")])
def test_bad_mup_and_diagnostics_values_are_config_errors(override, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', chr(92) + '.')}: "):
        validate(compose(["sweep=single", "model.tied_embeddings=false", override]))


def test_shipped_transfer_sweep_crosses_lr_width_and_parametrization():
    from scaling_cli.plan import expand

    specs = expand(compose(["sweep=mup_transfer"]))
    cells = {(s.config["model"]["parametrization"], s.config["model"]["d_model"], s.config["optim"]["lr"]) for s in specs}
    assert len(specs) == len(cells) == 36
    assert {s.config["model"]["n_head"] for s in specs} == {2}  # fixed heads: μP's attention rule


def test_standard_runs_keep_their_ids_and_mup_runs_differ():
    from scaling_cli.plan import expand

    base = expand(compose(["sweep=single"]))[0]
    untied = expand(compose(["sweep=single", "model.tied_embeddings=false"]))[0]
    mup_run = expand(compose(["sweep=single", "model.tied_embeddings=false", "model.parametrization=mup"]))[0]
    other_base = expand(compose(["sweep=single", "model.mup_base_width=32"]))[0]
    quiet = expand(compose(["sweep=single", "train.diagnostics_interval=0"]))[0]
    assert base.run_id == other_base.run_id == quiet.run_id  # ignored settings do not change the run
    assert len({base.run_id, untied.run_id, mup_run.run_id}) == 3
    assert mup_run.summary()["parametrization"] == "mup" and base.summary()["parametrization"] == "standard"
    assert base.summary()["qk_layernorm"] is False and base.summary()["z_loss"] == 0.0


# ------------------------------------------------------------------ coordinate check

def learnable_stream(steps: int, batch: int) -> torch.Tensor:
    """[steps, batch, SEQ + 1] tokens: each the previous plus one modulo 37, 20% replaced by noise
    (as in test_training_convergence). Structure makes gradients coherent across tokens, as in text;
    on pure noise the unaligned part of each update dominates narrow widths."""
    g = torch.Generator().manual_seed(1)
    base = torch.arange(steps * batch * (SEQ + 1)).remainder(37)
    noise = torch.randint(0, VOCAB, base.shape, generator=g)
    return torch.where(torch.rand(base.shape, generator=g) < 0.2, noise, base).view(steps, batch, SEQ + 1)


def activation_scales(width: int, parametrization: str, lr: float = 3e-3, steps: int = 5,
                      seed: int = 0) -> dict[str, float]:
    """Mean |x| of each block's output (residual stream) and of the logits after `steps` Adam
    steps at a fixed LR (no schedule, no clipping, no weight decay) on a learnable stream."""
    torch.manual_seed(seed)
    model = GPT(_cfg(width, parametrization))
    opt = build_optimizer(model, OptimConfig(lr=lr, weight_decay=0.0), torch.device("cpu"))
    data = learnable_stream(steps, 8)
    for step in range(steps):
        for group in opt.param_groups:  # as the trainer does
            group["lr"] = lr * group.get("lr_mult", 1.0)
        model(data[step, :, :-1], data[step, :, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    scales: dict[str, float] = {}
    hooks = [block.register_forward_hook(lambda _m, _i, out, key=f"block{j}": scales.__setitem__(key, out.abs().mean().item()))
             for j, block in enumerate(model.blocks)]
    scales["logits"] = model.logits(data[0, :, :-1]).abs().mean().item()
    for hook in hooks:
        hook.remove()
    return scales


@pytest.fixture(scope="module")
def coord_check() -> dict[str, dict[int, dict[str, float]]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster and immune to a busy machine
    try:
        return {p: {w: activation_scales(w, p) for w in WIDTHS} for p in ("standard", "mup")}
    finally:
        torch.set_num_threads(threads)


def test_coordinate_check_mup_is_flat_in_width(coord_check):
    table = coord_check["mup"]
    for layer in table[WIDTHS[0]]:
        ratio = table[WIDTHS[-1]][layer] / table[WIDTHS[0]][layer]
        assert 1 / MUP_FLAT_FACTOR < ratio < MUP_FLAT_FACTOR, (layer, {w: table[w][layer] for w in WIDTHS})


def test_coordinate_check_standard_grows_with_width(coord_check):
    table = coord_check["standard"]
    for layer in table[WIDTHS[0]]:
        ratio = table[WIDTHS[-1]][layer] / table[WIDTHS[0]][layer]
        assert ratio > SP_GROWTH_FACTOR, (layer, {w: table[w][layer] for w in WIDTHS})


# ------------------------------------------------------------------ through the trainer

def test_mup_run_trains_with_per_group_lrs_and_logs_diagnostics(tiny_overrides, tmp_path, monkeypatch):
    from scaling_cli.cli import main
    from scaling_cli.store import RunStore
    from scaling_cli.train import trainer

    built = []
    monkeypatch.setattr(trainer, "build_optimizer", lambda *a, **k: built.append(build_optimizer(*a, **k)) or built[-1])
    threads = torch.get_num_threads()
    try:
        assert main(["sweep", "--no-progress", *tiny_overrides, "model.parametrization=mup", "model.tied_embeddings=false",
                     "model.mup_base_width=16", "train.diagnostics_interval=10", "train.threads=1"]) == 0
    finally:
        torch.set_num_threads(threads)
    store = RunStore(str(tmp_path / "runs"))
    (run_id,) = store.run_ids()
    assert store.status(run_id)["state"] == "done"
    # After the last step every group's LR is the schedule's last LR times its multiplier (1/m = 0.5).
    curve = store.read_table(run_id, "curve")
    last_lr = curve["lr"].iloc[-1]
    assert sorted(g["lr"] / last_lr for g in built[0].param_groups) == pytest.approx([0.5, 1.0, 1.0])
    # Diagnostics at steps 0, 10, 20 -> curve rows 1, 11, 21; NaN elsewhere.
    logged = curve.dropna(subset=["attn_logit_max", "log_z_mean", "update_ratio"])
    assert logged["step"].tolist() == [1, 11, 21]
    assert curve.loc[~curve["step"].isin([1, 11, 21]), "attn_logit_max"].isna().all()
    assert logged["log_z_mean"].iloc[0] == pytest.approx(math.log(512), abs=0.01)  # near-uniform at init: log V
    assert (logged["update_ratio"] > 0).all() and (logged["attn_logit_max"].abs() < 100).all()
    assert curve["loss"].iloc[-5:].mean() < curve["loss"].iloc[:5].mean()  # it learns
