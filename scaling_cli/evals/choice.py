"""Multiple-choice tasks scored by log-likelihood, in the lm-evaluation-harness layout.

An item is {"context": str, "choices": [str, ...], "gold": int}; every choice is scored as the
continuation delimiter + choice after the context. Rows (task = the task's name):

- acc: the choice with the highest summed log-likelihood is the gold one;
- acc_norm: the same after dividing by the choice's length in characters (the harness's acc_norm:
  the choice without the delimiter), which removes the bias towards short choices;
- ce and bpb: the smooth companions, cross-entropy of the gold continuation in nats per token and
  in bits per UTF-8 byte;
- chance: mean of 1/len(choices) (the accuracy of guessing), n: items scored, seconds.

Sources: a task shipped as scaling_cli/data/corpus/<name>.jsonl (built by
scaling_cli/data/build_tasks.py from the held-out test split), or one declared in
eval.choice_tasks: a local .jsonl/.json read with `datasets`' json builder, or a hub dataset.
Common field spellings are accepted: context|query|ctx|question|prompt, choices|endings|options
(or {"text": [...]}), gold|label|answer|answerKey (an index, a digit or a letter A-Z).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from scaling_cli.errors import UserError
from scaling_cli.evals.tokens import encode, fingerprint, memo

CORPUS_DIR = Path(__file__).resolve().parent.parent / "data" / "corpus"

# Context tokens kept at least when a long continuation forces cutting the context from the left;
# an item whose longest choice leaves fewer is skipped (it would be scored nearly context-free).
MIN_CONTEXT_TOKENS = 8

_CONTEXT_KEYS = ("context", "query", "ctx", "question", "prompt")
_CHOICE_KEYS = ("choices", "endings", "options")
_GOLD_KEYS = ("gold", "label", "answer", "answerKey")


@dataclass
class Item:
    context: str
    choices: list[str]
    gold: int


def shipped_tasks() -> dict[str, Path]:
    """Task name -> JSONL file shipped in scaling_cli/data/corpus/."""
    return {p.stem: p for p in sorted(CORPUS_DIR.glob("*.jsonl"))}


def to_item(record: dict, where: str) -> Item:
    """An Item from one record in any of the accepted field spellings; UserError if malformed."""
    # `datasets` gives every record every column of the file (None where absent): take the first set one.
    context = next((record[k] for k in _CONTEXT_KEYS if record.get(k) is not None), None)
    choices = next((record[k] for k in _CHOICE_KEYS if record.get(k) is not None), None)
    gold = next((record[k] for k in _GOLD_KEYS if record.get(k) is not None), None)
    if isinstance(choices, dict):
        choices = choices.get("text")
    if not isinstance(context, str) or not isinstance(choices, (list, tuple)) or len(choices) < 2 or gold is None:
        raise UserError(f"{where}: an item needs context (str), choices (list of >= 2 strings) and gold "
                        f"(index); got keys {sorted(record)}")
    if isinstance(gold, str):
        gold = gold.strip()
        gold = int(gold) if gold.isdigit() else (ord(gold.upper()) - ord("A") if len(gold) == 1 else -1)
    gold = int(gold)
    if not 0 <= gold < len(choices):
        raise UserError(f"{where}: gold index {gold} is outside the {len(choices)} choices")
    return Item(context, [str(c) for c in choices], gold)


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@lru_cache(maxsize=16)
def _load(name: str, source: str, hub_config: str | None, split: str) -> tuple[Item, ...]:
    if not source:
        path = shipped_tasks().get(name)
        if path is None:
            raise UserError(f"eval.tasks: no shipped task {name!r}; declare it under eval.choice_tasks")
        records = _read_jsonl(path)  # shipped files: plain reader, no datasets cache writes per run
        where = str(path)
    else:
        import datasets

        path = Path(source).expanduser()
        try:
            if path.exists():
                data = datasets.load_dataset("json", data_files=str(path), split=split)
            else:
                data = datasets.load_dataset(source, hub_config, split=split)
        except Exception as err:  # datasets raises many types; all mean the same to the user
            raise UserError(f"eval.choice_tasks.{name}: could not load {source!r} split {split!r} "
                            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        records = list(data)
        where = source
    return tuple(to_item(r, f"{where} item {i}") for i, r in enumerate(records))


def load_items(name: str, cfg: Any) -> list[Item]:
    """Items of task `name` under eval config `cfg` (declared tasks shadow shipped ones)."""
    spec = (cfg.choice_tasks or {}).get(name)
    if spec is None:
        return list(_load(name, "", None, "train"))
    return list(_load(name, spec.source, spec.hub_config, spec.split))


def delimiter(name: str, cfg: Any) -> str:
    spec = (cfg.choice_tasks or {}).get(name)
    return " " if spec is None else spec.delimiter


def evaluate(model: Any, tokenizer: Any, name: str, cfg: Any, autocast: Any) -> list[dict]:
    """acc, acc_norm, ce, bpb, chance and n of task `name` on its first cfg.choice_items usable items."""
    from scaling_cli.evals.generate import score_continuations

    started = time.perf_counter()
    seq_len = model.cfg.seq_len
    sep = delimiter(name, cfg)
    kept = usable_items(tokenizer, name, cfg, seq_len)
    if not kept:
        return [{"task": name, "metric": "n", "value": 0.0}]
    pairs = [(ctx, c) for _, ctx, conts in kept for c in conts]
    scores = score_continuations(model, pairs, cfg.batch_size, autocast)
    correct = correct_norm = 0
    nats = tokens = n_bytes = chance = 0.0
    offset = 0
    for it, _, conts in kept:
        s = scores[offset:offset + len(conts)]
        offset += len(conts)
        loglik = [lp for lp, _, _ in s]
        norm = [lp / max(len(c), 1) for lp, c in zip(loglik, it.choices)]  # lm-eval: the choice, not the delimiter
        correct += int(max(range(len(s)), key=loglik.__getitem__) == it.gold)
        correct_norm += int(max(range(len(s)), key=norm.__getitem__) == it.gold)
        nats -= loglik[it.gold]
        tokens += s[it.gold][1]
        n_bytes += len((sep + it.choices[it.gold]).encode("utf-8"))
        chance += 1.0 / len(it.choices)
    n = len(kept)
    rows = {"acc": correct / n, "acc_norm": correct_norm / n, "ce": nats / tokens,
            "bpb": nats / math.log(2) / n_bytes, "chance": chance / n, "n": float(n),
            "seconds": time.perf_counter() - started}
    return [{"task": name, "metric": k, "value": float(v)} for k, v in rows.items()]


def fits(context: list[int], continuations: list[list[int]], seq_len: int) -> bool:
    """Whether an item is scored: context and every choice have tokens, and the longest choice fits
    the context window beside at least MIN_CONTEXT_TOKENS of context (a shorter context whole).
    The lm-eval tasks (evals/harness.py, harness_tasks/) select their documents by this rule too."""
    if not context or min(len(c) for c in continuations) < 1:
        return False
    return max(len(c) for c in continuations) + min(len(context), MIN_CONTEXT_TOKENS) <= seq_len


def usable_items(tokenizer: Any, name: str, cfg: Any, seq_len: int) -> list[tuple[Item, list[int], list[list[int]]]]:
    """The first cfg.choice_items items (file order) whose every choice fits the context with at
    least MIN_CONTEXT_TOKENS of context, tokenized (remembered per tokenizer in this process)."""
    spec = (cfg.choice_tasks or {}).get(name)
    source = None if spec is None else (spec.source, spec.hub_config, spec.split, spec.delimiter)
    key = ("choice", fingerprint(tokenizer), name, source, cfg.choice_items, seq_len)
    return memo(key, lambda: _usable_items(tokenizer, name, cfg, seq_len))


def _usable_items(tokenizer: Any, name: str, cfg: Any, seq_len: int) -> list[tuple[Item, list[int], list[list[int]]]]:
    sep = delimiter(name, cfg)
    kept: list[tuple[Item, list[int], list[list[int]]]] = []
    items = load_items(name, cfg)
    step = max(cfg.choice_items, 16)
    for begin in range(0, len(items), step):
        chunk = items[begin:begin + step]
        contexts = encode(tokenizer, [it.context for it in chunk])
        flat = encode(tokenizer, [sep + c for it in chunk for c in it.choices])
        offset = 0
        for it, ctx in zip(chunk, contexts):
            conts = flat[offset:offset + len(it.choices)]
            offset += len(it.choices)
            if not fits(ctx, conts, seq_len):
                continue
            kept.append((it, ctx, conts))
            if len(kept) == cfg.choice_items:
                break
        if len(kept) == cfg.choice_items:
            break
    return kept
