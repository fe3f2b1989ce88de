"""Validation loss on a fixed slice of the held-out split (the same tokens at every eval)."""

from __future__ import annotations

import numpy as np
import torch

from scaling_cli.config import TrainConfig
from scaling_cli.data.packing import PackedSequences
from scaling_cli.model.gpt import GPT


@torch.no_grad()
def validation_loss(model: GPT, validation: PackedSequences, cfg: TrainConfig, device: torch.device,
                    autocast) -> float:
    """Mean cross-entropy in nats/token over the first `train.eval_tokens` validation tokens."""
    count = max(1, min(validation.count, cfg.eval_tokens // validation.seq_len))
    model.eval()
    total, tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    for begin in range(0, count, cfg.batch_size):
        inputs, targets = validation.sequences(np.arange(begin, min(begin + cfg.batch_size, count)))
        with autocast:
            total += model(inputs.to(device), targets.to(device), reduction="sum").double()
        tokens += targets.numel()
    return float(total / tokens)
