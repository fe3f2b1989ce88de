"""Learning-rate schedules as per-step multipliers of the peak learning rate.

The whole schedule is computed up front as an array (one entry per optimizer step), so the
trainer, the planner (`sweep --dry-run`, WSD branch points) and `predict --schedule` all see the
same numbers; it sits beside config.py, upstream of all three, so none reaches into another.
Warmup is linear from lr/W to lr over W steps.
"""

from __future__ import annotations

import numpy as np

from scaling_cli.config import ScheduleConfig


def length_in_steps(value: float, total: int) -> int:
    """A length given as a fraction of the run (< 1) or as a step count (>= 1)."""
    return int(round(value * total)) if value < 1 else int(value)


def decay_start(total_steps: int, cfg: ScheduleConfig) -> int:
    """First step of a WSD run's decay: the step a decay branch leaves the stable run at."""
    warmup = min(length_in_steps(cfg.warmup, total_steps), total_steps)
    decay = min(max(1, length_in_steps(cfg.decay, total_steps)), total_steps - warmup) or 1
    return total_steps - decay


def lr_multipliers(total_steps: int, cfg: ScheduleConfig) -> np.ndarray:
    """Multiplier of the peak learning rate at each step 0..total_steps-1."""
    step = np.arange(total_steps, dtype=np.float64)
    warmup = min(length_in_steps(cfg.warmup, total_steps), total_steps)
    floor = cfg.min_lr_ratio
    if cfg.name == "constant":
        mult = np.ones(total_steps)
    elif cfg.name in ("cosine", "linear"):
        # progress runs from 0 at the end of warmup to exactly 1 at the last step
        progress = np.clip((step - warmup) / max(1, total_steps - 1 - warmup), 0.0, 1.0)
        if cfg.name == "cosine":
            mult = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress))
        else:
            mult = 1 - (1 - floor) * progress
    elif cfg.name == "wsd":
        start = decay_start(total_steps, cfg)
        decay = total_steps - start
        progress = np.clip((step - start + 1) / decay, 0.0, 1.0)  # reaches 1 at the last step
        shape = {
            "linear": progress,
            "cosine": 0.5 * (1 - np.cos(np.pi * progress)),
            "sqrt": np.sqrt(progress),  # "1 - sqrt" cooldown of Hagele et al. (2024)
        }[cfg.decay_shape]
        mult = 1 - (1 - floor) * shape
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    if warmup > 0:
        mult = np.where(step < warmup, mult * (step + 1) / warmup, mult)
    return mult
