"""Pretrain-then-finetune (Isik et al. 2024): a short finetuning of a COPY of the proxy on
translation pairs of the train split, in the evaluation's prompt format, before downstream evals.

The pretraining run's model, optimizer state, curve and checkpoint are untouched: the copy is
made with copy.deepcopy, has its own AdamW, and is dropped after the evals. The loss covers the
target side only (' ' + target + EOS after the prompt), so the copy learns the format and when to
stop, not to reproduce prompts. Data order comes from a numpy generator seeded by eval.seed, never
from torch's global generator, so finetuning does not perturb the pretraining run's randomness.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from scaling_cli.evals.config import EvalConfig
from scaling_cli.evals.tokens import encode, fingerprint, memo
from scaling_cli.evals.translation import pairs, prompt_text

# Linear warmup over this fraction of the finetuning steps, then a constant rate: a freshly
# created AdamW takes over-large first steps without it.
WARMUP_FRACTION = 0.1

# Gradient-norm clip, as in pretraining (optim.grad_clip default).
GRAD_CLIP = 1.0

# AdamW betas of pretraining (optim.beta1/beta2 defaults); no weight decay for a short finetune.
BETAS = (0.9, 0.95)

# Pairs drawn per needed pair, and passes at most: some pairs are too long for the context and are
# dropped; on a very short context (seq_len 32) nearly all are, and the finetuning set stays short
# rather than tokenizing the whole split.
_OVERSAMPLE = 2
_PASSES = 3


def training_examples(tokenizer: Any, cfg: EvalConfig, seq_len: int, count: int) -> list[tuple[list[int], list[int]]]:
    """Up to `count` (prompt ids, target ids + EOS) pairs from the train split that fit seq_len + 1
    tokens, drawn with a generator seeded by cfg.seed (remembered per tokenizer in this process)."""
    t = cfg.translation
    key = ("finetune", fingerprint(tokenizer), t.source, t.direction, t.prompt, cfg.seed, seq_len, count)
    return memo(key, lambda: _training_examples(tokenizer, cfg, seq_len, count))


def _training_examples(tokenizer: Any, cfg: EvalConfig, seq_len: int, count: int) -> list[tuple[list[int], list[int]]]:
    _, sources, targets = pairs(cfg.translation, "train")
    if not sources:
        return []
    rng = np.random.default_rng([cfg.seed, 7])
    eos = tokenizer.eos_token_id
    out: list[tuple[list[int], list[int]]] = []
    for _ in range(_PASSES):
        picks = rng.integers(0, len(sources), size=max(count - len(out), 1) * _OVERSAMPLE)
        prompts = encode(tokenizer, [prompt_text(cfg.translation, sources[i]) for i in picks])
        conts = encode(tokenizer, [" " + targets[i] for i in picks])
        for p, c in zip(prompts, conts):
            if p and c and len(p) + len(c) + 1 <= seq_len + 1:
                out.append((p, c + [eos]))
                if len(out) == count:
                    return out
    return out


def _batch(examples: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets; prompt and padding targets are ignore_index (-100)."""
    width = max(len(p) + len(c) for p, c in examples) - 1
    inputs = torch.full((len(examples), width), pad, dtype=torch.long)
    targets = torch.full((len(examples), width), -100, dtype=torch.long)
    for r, (p, c) in enumerate(examples):
        seq = p + c
        inputs[r, :len(seq) - 1] = torch.as_tensor(seq[:-1])
        targets[r, len(p) - 1:len(seq) - 1] = torch.as_tensor(c)
    return inputs, targets


def finetune(model: Any, tokenizer: Any, cfg: EvalConfig, device: torch.device, autocast: Any) -> tuple[Any, dict]:
    """A finetuned copy of `model` (in eval mode) and {'loss': mean target loss of the last 10% of
    steps, 'steps': steps taken}. With finetune_steps == 0 the model itself is returned."""
    steps = cfg.finetune_steps
    if steps <= 0:
        return model, {"steps": 0}
    tuned = copy.deepcopy(model)
    tuned.train()
    examples = training_examples(tokenizer, cfg, model.cfg.seq_len, steps * cfg.finetune_batch_size)
    if not examples:
        tuned.eval()
        return tuned, {"steps": 0}
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=cfg.finetune_lr, betas=BETAS, weight_decay=0.0)
    warmup = max(1, math.ceil(WARMUP_FRACTION * steps))
    losses = []
    b = cfg.finetune_batch_size
    with torch.enable_grad():
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = cfg.finetune_lr * min(1.0, (step + 1) / warmup)
            chunk = [examples[(step * b + i) % len(examples)] for i in range(b)]
            inputs, targets = _batch(chunk, tokenizer.eos_token_id)
            with autocast:
                loss = tuned(inputs.to(device), targets.to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tuned.parameters(), GRAD_CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
    tuned.eval()
    tail = torch.stack(losses[-max(1, steps // 10):]).float().mean()
    return tuned, {"loss": float(tail), "steps": steps}
