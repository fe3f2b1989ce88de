"""Tokenizing eval text fast, and remembering it across the runs of a sweep.

Tokenization, not the model, dominates downstream evals of tiny CPU proxies (thousands of verses
per eval at ~50 us each), yet every run of a sweep shares one tokenizer and the same eval text.
`memo(key, fn)` keeps results per tokenizer fingerprint (a hash of its serialised vocabulary and
merges, so two loads of one tokenizer share entries) for the life of the process.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# Entries kept by `memo` (selected examples, finetuning sets, task encodings): a sweep uses a
# handful per tokenizer; the bound only guards long-lived processes against growth.
MEMO_SIZE = 64

_MEMO: "OrderedDict[tuple, Any]" = OrderedDict()
_FINGERPRINTS: dict[int, tuple[Any, str]] = {}


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (the Rust backend directly when there is one:
    the transformers wrapper adds ~15 us per text of Python conversion)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def fingerprint(tokenizer: Any) -> str:
    """Stable identity of a tokenizer's behaviour; falls back to the object's id without a backend."""
    cached = _FINGERPRINTS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        value = hashlib.sha1(backend.to_str().encode()).hexdigest()
    else:
        value = f"object:{id(tokenizer)}"
    _FINGERPRINTS[id(tokenizer)] = (tokenizer, value)
    return value


def memo(key: tuple, compute: Callable[[], T]) -> T:
    """compute() once per key in this process (LRU of MEMO_SIZE entries)."""
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    value = compute()
    _MEMO[key] = value
    if len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value
