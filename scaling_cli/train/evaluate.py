"""Validation loss on a fixed slice of the held-out split (the same tokens at every eval)."""

from __future__ import annotations

import numpy as np
import torch

from scaling_cli.config import TrainConfig
from scaling_cli.data.packing import PackedSequences
from scaling_cli.model.gpt import GPT
from scaling_cli.model.packed_gpt import PackedGPT


def _eval_count(validation: PackedSequences, cfg: TrainConfig) -> int:
    return max(1, min(validation.count, cfg.eval_tokens // validation.seq_len))


@torch.no_grad()
def validation_loss(model: GPT, validation: PackedSequences, cfg: TrainConfig, device: torch.device,
                    autocast) -> float:
    """Mean cross-entropy in nats/token over the first `train.eval_tokens` validation tokens."""
    count = _eval_count(validation, cfg)
    model.eval()
    total, tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    for begin in range(0, count, cfg.batch_size):
        inputs, targets = validation.sequences(np.arange(begin, min(begin + cfg.batch_size, count)))
        with autocast:
            total += model(inputs.to(device), targets.to(device), reduction="sum").double()
        tokens += targets.numel()
    return float(total / tokens)


@torch.no_grad()
def pack_validation_losses(model: PackedGPT, validation: PackedSequences, cfg: TrainConfig, device: torch.device,
                           autocast) -> list[float]:
    """`validation_loss` of every member of a pack at once [K]: the same validation tokens go
    through all K heads in one batched pass, instead of K passes of one small model each."""
    count = _eval_count(validation, cfg)
    members = model.members
    model.eval()
    total, tokens = torch.zeros(members, dtype=torch.float64, device=device), 0
    for begin in range(0, count, cfg.batch_size):
        inputs, targets = validation.sequences(np.arange(begin, min(begin + cfg.batch_size, count)))
        inputs, targets = (t.to(device).expand(members, *t.shape) for t in (inputs, targets))
        with autocast:
            total += model.losses(model.hidden_states(inputs), targets, reduction="sum").double()
        tokens += targets[0].numel()
    model.train()
    return (total / tokens).tolist()
