"""Translation on the held-out test split: greedy decoding scored with sacrebleu, plus the smooth
teacher-forced cross-entropy of the reference (Isik et al. 2024 track both BLEU and downstream CE).

Rows (task 'translation'): bleu and chrf (sacrebleu corpus scores, 0-100), ce (nats per reference
token, the reference being ' ' + target after the prompt), bpb (the same in bits per UTF-8 byte,
comparable across tokenizers), n (verses scored), seconds.

Example choice: the test split's verses in a fixed order (sha1 of the reference, so it does not
depend on the corpus layout), keeping the first `n_examples` whose prompt plus reference fit the
model's context. Short contexts therefore favour short verses; with one tokenizer and seq_len per
sweep every run sees the same verses.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from scaling_cli.errors import UserError
from scaling_cli.evals.config import LANGUAGE_NAMES, TranslationConfig
from scaling_cli.evals.tokens import encode, fingerprint, memo

# Tokenized candidates per pass while looking for verses that fit the context: a few times the
# number wanted, since on a short context many verses are too long.
_CANDIDATE_FACTOR = 4


@dataclass
class Example:
    source: str
    reference: str
    prompt_ids: list[int]
    reference_ids: list[int]


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF with sacrebleu's defaults (13a tokenisation, exp smoothing; chrF n=6, beta=2)."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
            "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score)}


@lru_cache(maxsize=4)
def _table(source: str):
    import pandas as pd

    if source == "embedded":
        from scaling_cli.data.sources import EMBEDDED_CORPUS

        return pd.read_parquet(EMBEDDED_CORPUS)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"eval.translation.source: {source!r} does not exist; use 'embedded' or a "
                        ".parquet/.csv/.jsonl with split, en, es columns")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix == ".csv":
        table = pd.read_csv(path)
    elif suffix in (".jsonl", ".json"):
        table = pd.read_json(path, lines=suffix == ".jsonl")
    else:
        raise UserError(f"eval.translation.source: {path} is not .parquet, .csv or .jsonl")
    missing = {"split", *LANGUAGE_NAMES} - set(table.columns)
    if missing:
        raise UserError(f"eval.translation.source: {path} lacks column(s) {sorted(missing)}")
    return table


def language_pair(cfg: TranslationConfig) -> tuple[str, str]:
    src, tgt = cfg.direction.split("-")
    return src, tgt


def prompt_text(cfg: TranslationConfig, source: str) -> str:
    src, tgt = language_pair(cfg)
    return cfg.prompt.format(src=source, src_lang=LANGUAGE_NAMES[src], tgt_lang=LANGUAGE_NAMES[tgt])


def pairs(cfg: TranslationConfig, split: str) -> tuple[list[str], list[str], list[str]]:
    """(keys, sources, targets) of one split, in the table's order."""
    table = _table(cfg.source)
    src, tgt = language_pair(cfg)
    rows = table[table["split"] == split]
    keys = rows["ref"].astype(str).tolist() if "ref" in rows.columns else [str(i) for i in rows.index]
    return keys, rows[src].astype(str).tolist(), rows[tgt].astype(str).tolist()


def select_examples(tokenizer: Any, cfg: TranslationConfig, seq_len: int) -> list[Example]:
    """The first `n_examples` test verses (sha1 order) whose prompt + ' ' + reference fit seq_len
    (remembered per tokenizer for the rest of the process)."""
    key = ("translation", fingerprint(tokenizer), cfg.source, cfg.direction, cfg.prompt, cfg.n_examples, seq_len)
    return memo(key, lambda: _select_examples(tokenizer, cfg, seq_len))


def _select_examples(tokenizer: Any, cfg: TranslationConfig, seq_len: int) -> list[Example]:
    keys, sources, targets = pairs(cfg, "test")
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
    chosen: list[Example] = []
    step = max(cfg.n_examples * _CANDIDATE_FACTOR, 16)
    for begin in range(0, len(order), step):
        batch = order[begin:begin + step]
        prompts = encode(tokenizer, [prompt_text(cfg, sources[i]) for i in batch])
        refs = encode(tokenizer, [" " + targets[i] for i in batch])
        for i, p, r in zip(batch, prompts, refs):
            if p and r and len(p) + len(r) <= seq_len:
                chosen.append(Example(sources[i], targets[i], p, r))
                if len(chosen) == cfg.n_examples:
                    return chosen
    return chosen


def newline_ids(tokenizer: Any) -> list[int]:
    """Ids of tokens whose text contains a newline: the prompt format ends a translation there."""
    def compute() -> list[int]:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        return [i for i, t in enumerate(texts) if "\n" in t]

    return memo(("newline", fingerprint(tokenizer)), compute)


def evaluate(model: Any, tokenizer: Any, cfg: TranslationConfig, batch_size: int, autocast: Any) -> list[dict]:
    """BLEU, chrF, reference CE and bits per byte on the selected test verses (see module doc)."""
    from scaling_cli.evals.generate import greedy_generate, score_continuations

    started = time.perf_counter()
    seq_len = model.cfg.seq_len
    examples = select_examples(tokenizer, cfg, seq_len)
    task = "translation"
    if not examples:
        return [{"task": task, "metric": "n", "value": 0.0}]
    eos = tokenizer.eos_token_id
    stops = newline_ids(tokenizer)
    hypotheses: list[str] = []
    for begin in range(0, len(examples), batch_size):
        chunk = examples[begin:begin + batch_size]
        with autocast:
            outs = greedy_generate(model, [e.prompt_ids for e in chunk], cfg.max_new_tokens, eos, stop_ids=stops)
        for ids in outs:
            hypotheses.append(tokenizer.decode(ids).split("\n")[0].strip())
    references = [e.reference.strip() for e in examples]
    scores = corpus_scores(hypotheses, references)
    scored = score_continuations(model, [(e.prompt_ids, e.reference_ids) for e in examples], batch_size, autocast)
    nats = sum(-lp for lp, _, _ in scored)
    tokens = sum(n for _, n, _ in scored)
    n_bytes = sum(len((" " + e.reference).encode("utf-8")) for e in examples)
    rows = {"bleu": scores["bleu"], "chrf": scores["chrf"], "ce": nats / tokens,
            "bpb": nats / math.log(2) / n_bytes, "n": float(len(examples)),
            "seconds": time.perf_counter() - started}
    return [{"task": task, "metric": k, "value": float(v)} for k, v in rows.items()]
