"""Downstream evaluation of proxies during a sweep (translation BLEU, multiple choice).

`downstream_evals(model, tokenizer, cfg, device, autocast)` returns rows
{"task": ..., "metric": ..., "value": ...} that the trainer appends to the run's evals table.
"""

from __future__ import annotations

from typing import Any


def downstream_evals(model: Any, tokenizer: Any, cfg: Any, device: Any, autocast: Any) -> list[dict]:
    """Every configured downstream task's metrics for `model` (none are configured yet)."""
    return []
