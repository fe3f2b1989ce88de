"""Tests for scaling_cli/train/diagnostics.py: each stability diagnostic against a direct
computation, and that nothing runs on non-diagnostic steps.

    pytest tests/test_diagnostics.py
"""

from __future__ import annotations

import math

import pytest
import torch

from scaling_cli.config import ModelConfig, OptimConfig
from scaling_cli.model.gpt import GPT
from scaling_cli.train import diagnostics
from scaling_cli.train.trainer import build_optimizer

VOCAB, SEQ = 300, 16


def _model(**kwargs) -> GPT:
    torch.manual_seed(0)
    cfg = dict(d_model=32, n_layer=2, n_head=2, seq_len=SEQ, vocab_size=VOCAB)
    cfg.update(kwargs)
    return GPT(ModelConfig(**cfg))


def _batch(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (batch, SEQ), generator=g), torch.randint(0, VOCAB, (batch, SEQ), generator=g)


def _explicit_peak(model: GPT, idx: torch.Tensor) -> float:
    """Max causal attention logit from materialised scores, captured by hooks on a normal forward."""
    peaks = []

    def hook(attn, args, _out):
        x, cos, sin = args
        q, k, _ = attn.project(x, cos, sin)
        scale = attn.scale if attn.scale is not None else 1 / math.sqrt(attn.head_dim)
        scores = (q @ k.transpose(-2, -1)) * scale
        causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
        peaks.append(scores[..., causal].max().item())

    handles = [block.attn.register_forward_hook(hook) for block in model.blocks]
    model.logits(idx)
    for h in handles:
        h.remove()
    return max(peaks)


@pytest.mark.parametrize("kwargs", [{}, {"qk_layernorm": True},
                                    {"parametrization": "mup", "tied_embeddings": False, "mup_base_width": 16}])
def test_forward_diagnostics_match_explicit_scores_and_logsumexp(kwargs, monkeypatch):
    model = _model(**kwargs)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.3)  # logits far from uniform
        model.blocks[0].attn.qkv.weight.mul_(8)  # sharp attention
    idx, targets = _batch()
    monkeypatch.setattr(diagnostics, "MAX_SCORE_ELEMENTS", 2 * 2 * SEQ * SEQ)  # batch of 3 in chunks of 2 rows
    out = diagnostics.forward_diagnostics(model, idx, targets)
    assert out["attn_logit_max"].item() == pytest.approx(_explicit_peak(model, idx), rel=1e-5)
    log_z = torch.logsumexp(model.logits(idx), dim=-1).mean().item()
    assert out["log_z_mean"].item() == pytest.approx(log_z, rel=1e-5)


def test_update_ratio_is_the_mean_relative_change_of_the_matrices():
    a, b, zero = torch.ones(2, 2), torch.full((3, 3), 2.0), torch.zeros(2, 2)
    snapshot = [(a, a.clone()), (b, b.clone()), (zero, zero.clone())]
    a.add_(0.1)          # ||dA|| / ||A|| = 0.2 / 2 = 0.1
    b.mul_(1.5)          # 0.5
    zero.add_(1.0)       # zero before the step: left out
    assert diagnostics.update_ratio(snapshot).item() == pytest.approx(0.3)


def test_step_diagnostics_do_nothing_off_diagnostic_steps(monkeypatch):
    model = _model()
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2), torch.device("cpu"))
    calls = []
    real = diagnostics.forward_diagnostics
    monkeypatch.setattr(diagnostics, "forward_diagnostics", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(diagnostics, "snapshot_matrices", lambda m, real=diagnostics.snapshot_matrices: calls.append(2) or real(m))
    diag = diagnostics.StepDiagnostics(model, interval=3)
    idx, targets = _batch()
    for step in range(5):
        diag.begin(step, idx, targets)
        model(idx, targets).backward()
        diag.before_update()
        optimizer.step()
        diag.after_update()
        optimizer.zero_grad(set_to_none=True)
    assert calls == [1, 2, 1, 2]  # steps 0 and 3 only
    rows = [diag.row(s) for s in range(1, 6)]
    assert [not math.isnan(r["attn_logit_max"]) for r in rows] == [True, False, False, True, False]
    assert rows[3]["update_ratio"] > 0 and rows[0]["log_z_mean"] > 0
    assert not diag._pending  # handed over and forgotten
    quiet = diagnostics.StepDiagnostics(model, interval=0)
    quiet.begin(0, idx, targets)
    assert calls == [1, 2, 1, 2] and all(math.isnan(v) for v in quiet.row(1).values())
