"""Downstream evaluation of proxies during a sweep (translation BLEU, multiple choice).

`downstream_evals(model, tokenizer, cfg, device, autocast)` returns rows
{"task": ..., "metric": ..., "value": ...} that the trainer appends to the run's evals table.

Protocol (the Hydra `eval` group, scaling_cli/evals/config.py): when eval.finetune_steps > 0 a
copy of the model is finetuned on translation pairs (finetune.py; Isik et al. 2024) and every task
is measured on that copy; then each task in eval.tasks runs: 'translation' (translation.py: greedy
decoding with a KV cache, sacrebleu BLEU/chrF, reference cross-entropy) or a multiple-choice task
(choice.py: log-likelihood accuracy, length-normalised accuracy, gold cross-entropy). Every
accuracy and BLEU has a smooth companion (ce, bpb) so laws can be fitted in two stages. Then the
lm-evaluation-harness tasks of eval.harness run on the same model (harness.py).
"""

from __future__ import annotations

import time
from typing import Any

from scaling_cli.evals.config import TRANSLATION_TASK, EvalConfig, validate_eval


def downstream_evals(model: Any, tokenizer: Any, cfg: Any, device: Any, autocast: Any) -> list[dict]:
    """Every configured downstream task's metrics for `model` (the model itself is not modified)."""
    if isinstance(cfg, dict):
        cfg = EvalConfig(**cfg)
    if not cfg.tasks and not cfg.harness:
        return []
    validate_eval(cfg)
    from scaling_cli.evals import choice, finetune, translation

    rows: list[dict] = []
    target = model
    if cfg.finetune_steps > 0:
        started = time.perf_counter()
        target, info = finetune.finetune(model, tokenizer, cfg, device, autocast)
        if "loss" in info:
            rows.append({"task": "finetune", "metric": "loss", "value": info["loss"]})
        rows.append({"task": "finetune", "metric": "seconds", "value": time.perf_counter() - started})
    for name in cfg.tasks:
        if name == TRANSLATION_TASK:
            rows += translation.evaluate(target, tokenizer, cfg.translation, cfg.batch_size, autocast)
        else:
            rows += choice.evaluate(target, tokenizer, name, cfg, autocast)
    if cfg.harness:
        from scaling_cli.evals import harness

        rows += harness.evaluate(target, tokenizer, cfg, autocast)
    return rows
