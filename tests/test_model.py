"""Tests for scaling_cli/model/gpt.py: the GPT proxy on CPU (the loss goes through the PyTorch
reference of scaling_kernels.linear_cross_entropy).

    pytest tests/test_model.py
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaling_cli.config import ModelConfig
from scaling_cli.model.gpt import GPT, apply_rope, mlp_hidden_width, rope_tables

VOCAB, SEQ = 300, 16


def _cfg(**kwargs) -> ModelConfig:
    base = dict(d_model=32, n_layer=2, n_head=2, seq_len=SEQ, vocab_size=VOCAB)
    base.update(kwargs)
    return ModelConfig(**base)


def _model(seed: int = 0, **kwargs) -> GPT:
    torch.manual_seed(seed)
    return GPT(_cfg(**kwargs))


def _batch(seed: int = 1, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, SEQ), generator=g), torch.randint(0, VOCAB, (batch, SEQ), generator=g)


def _reference_loss(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy over the materialised logits (soft-capped by logits())."""
    return F.cross_entropy(model.logits(idx).reshape(-1, VOCAB), targets.reshape(-1))


# ------------------------------------------------------------------ loss

def test_loss_at_init_is_near_uniform():
    idx, targets = _batch()
    loss = _model()(idx, targets)
    assert loss.shape == () and loss.dtype == torch.float32
    assert abs(loss.item() - math.log(VOCAB)) < 0.3


@pytest.mark.parametrize("softcap", [0.0, 0.05])
def test_forward_loss_equals_cross_entropy_of_logits(softcap):
    model = _model(logit_softcap=softcap)
    with torch.no_grad():  # make logits large enough for the soft-cap to matter
        model.lm_head.weight.mul_(20)
    idx, targets = _batch()
    expected = _reference_loss(model, idx, targets)
    assert model(idx, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    if softcap:
        assert model.logits(idx).abs().max() <= softcap


def test_reduction_none_is_per_token_and_averages_to_mean():
    model = _model()
    idx, targets = _batch()
    per_token = model(idx, targets, reduction="none")
    assert per_token.numel() == idx.numel()
    expected = F.cross_entropy(model.logits(idx).reshape(-1, VOCAB), targets.reshape(-1), reduction="none")
    torch.testing.assert_close(per_token.reshape(-1), expected, rtol=1e-5, atol=1e-5)
    assert per_token.mean().item() == pytest.approx(model(idx, targets).item(), rel=1e-6)
    assert model(idx, targets, reduction="sum").item() == pytest.approx(per_token.sum().item(), rel=1e-6)


def test_z_loss_adds_coef_times_lse_squared():
    idx, targets = _batch()
    plain, with_z = _model(seed=3), _model(seed=3, z_loss=1e-2)
    with_z.load_state_dict(plain.state_dict())
    base, z = plain(idx, targets), with_z(idx, targets)
    assert z.item() > base.item()
    lse = torch.logsumexp(plain.logits(idx), dim=-1)
    assert (z - base).item() == pytest.approx(1e-2 * (lse ** 2).mean().item(), rel=1e-4)


def test_logits_shape_and_no_grad():
    model = _model()
    idx, _ = _batch(batch=3)
    logits = model.logits(idx)
    assert logits.shape == (3, SEQ, VOCAB) and logits.dtype == torch.float32
    assert not logits.requires_grad
    # shorter inputs than seq_len work (RoPE tables are sliced)
    assert model.logits(idx[:, :5]).shape == (3, 5, VOCAB)


# ------------------------------------------------------------------ causality

def test_changing_token_t_does_not_change_earlier_losses():
    model = _model()
    idx, targets = _batch(batch=2)
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % VOCAB
    before = model(idx, targets, reduction="none").reshape(idx.shape)
    after = model(changed, targets, reduction="none").reshape(idx.shape)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-6)
    # ... and it does change the loss at t and later (the model is not ignoring its input)
    assert (after[:, t] - before[:, t]).abs().min() > 1e-6
    assert (after[:, t:] - before[:, t:]).abs().max() > 1e-6


# ------------------------------------------------------------------ variants

@pytest.mark.parametrize("kwargs", [
    {"mlp": "swiglu"}, {"qk_layernorm": True}, {"mlp": "swiglu", "qk_layernorm": True, "tied_embeddings": False},
    {"z_loss": 1e-4, "logit_softcap": 30.0},
])
def test_variants_run_forward_and_backward(kwargs):
    model = _model(**kwargs)
    idx, targets = _batch()
    loss = model(idx, targets)
    assert torch.isfinite(loss) and abs(loss.item() - math.log(VOCAB)) < 0.5
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name  # every parameter, incl. q/k norms, gets a gradient


def test_qk_layernorm_and_swiglu_change_the_architecture():
    plain, qk, swiglu = _model(), _model(qk_layernorm=True), _model(mlp="swiglu")
    assert isinstance(qk.blocks[0].attn.q_norm, torch.nn.RMSNorm)
    assert isinstance(plain.blocks[0].attn.q_norm, torch.nn.Identity)
    hidden = mlp_hidden_width(_cfg(mlp="swiglu"))
    assert hidden == 88  # 2/3 * 4 * 32 = 85.3, rounded up to a multiple of 8
    assert swiglu.blocks[0].mlp.up.weight.shape == (2 * hidden, 32)
    assert plain.blocks[0].mlp.up.weight.shape == (128, 32)


def test_tied_embeddings_share_one_tensor():
    tied, untied = _model(), _model(tied_embeddings=False)
    assert tied.lm_head.weight is tied.embed.weight
    assert untied.lm_head.weight is not untied.embed.weight


def test_residual_projections_use_the_scaled_init():
    model = _model(n_layer=8, d_model=64, n_head=4, init_std=0.02)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)  # 1/sqrt(2*8)


# ------------------------------------------------------------------ RoPE

def test_apply_rope_preserves_norms():
    cos, sin = rope_tables(SEQ, 8, 10000.0)
    x = torch.randn(2, 3, SEQ, 8)
    rotated = apply_rope(x, cos, sin)
    assert rotated.shape == x.shape
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rotated[..., 0, :], x[..., 0, :])  # position 0 is not rotated
    assert (rotated[..., 1:, :] - x[..., 1:, :]).abs().max() > 1e-3  # later positions are


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_tables(32, 8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def at(vec: torch.Tensor, pos: int) -> torch.Tensor:
        seq = torch.zeros(pos + 1, 8)
        seq[pos] = vec
        return apply_rope(seq, cos, sin)[pos]

    score = lambda m, n: torch.dot(at(q, m), at(k, n)).item()  # noqa: E731
    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-4, abs=1e-5)
    assert score(7, 7) == pytest.approx(torch.dot(q, k).item(), rel=1e-4, abs=1e-5)
    assert abs(score(5, 2) - score(5, 4)) > 1e-4


def test_apply_rope_keeps_the_input_dtype():
    cos, sin = rope_tables(4, 8, 10000.0)
    x = torch.randn(1, 4, 8, dtype=torch.bfloat16)
    assert apply_rope(x, cos, sin).dtype == torch.bfloat16
