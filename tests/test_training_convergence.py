"""Training with the fused kernel follows the plain PyTorch loss step for step, and the CPU
training path reproduces its golden per-step losses (tests/assets/golden_tiny_losses.txt).

A change that alters initialisation, the model, the optimizer or the schedule shows up here
as a moved golden curve; regenerate the file only for an intended change:
    python tests/test_training_convergence.py --write-golden
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_cli.config import ModelConfig, OptimConfig, ScheduleConfig
from scaling_cli.model.gpt import GPT
from scaling_cli.schedule import lr_multipliers
from scaling_cli.train.trainer import build_optimizer

GOLDEN = Path(__file__).parent / "assets" / "golden_tiny_losses.txt"
STEPS = 20


def train_losses(loss_impl: str, steps: int = STEPS) -> np.ndarray:
    """Per-step training losses of a tiny proxy on a fixed random token stream (fp32, CPU)."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layer=2, n_head=2, seq_len=16, vocab_size=300, loss_impl=loss_impl,
                      z_loss=1e-4)
    model = GPT(cfg)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2), torch.device("cpu"))
    lrs = 1e-2 * lr_multipliers(steps, ScheduleConfig(name="cosine", warmup=0.1))
    generator = torch.Generator().manual_seed(1)
    # A learnable stream: each token is the previous plus one, modulo a small alphabet, with noise.
    base = torch.arange(steps * 4 * 17).remainder(37)
    noise = torch.randint(0, 300, base.shape, generator=generator)
    stream = torch.where(torch.rand(base.shape, generator=generator) < 0.2, noise, base).view(steps, 4, 17)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[step])
        loss = model(stream[step, :, :-1], stream[step, :, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return np.array(losses)


def test_fused_kernel_training_matches_torch_loss():
    pytest.importorskip("triton")
    steps = 6  # the Triton interpreter takes seconds per step on a CPU
    torch_losses = train_losses("torch", steps)
    triton_losses = train_losses("triton", steps)
    assert torch_losses[-1] < torch_losses[0] - 0.2  # it really trains
    # fp32 throughout: the curves agree to accumulated float rounding
    np.testing.assert_allclose(triton_losses, torch_losses, rtol=2e-5, atol=2e-5)


def test_cpu_training_reproduces_golden_losses():
    golden = np.loadtxt(GOLDEN)
    assert golden[-1] < golden[0] - 0.5
    np.testing.assert_allclose(train_losses("torch"), golden, rtol=1e-4, atol=1e-4)


if __name__ == "__main__" and "--write-golden" in sys.argv:
    np.savetxt(GOLDEN, train_losses("torch"), fmt="%.7f")
    print(f"wrote {GOLDEN}")
