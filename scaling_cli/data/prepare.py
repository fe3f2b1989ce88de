"""From a data config to packed token sequences, cached on disk.

The first run of a sweep reads the documents, trains (or loads) the tokenizer and tokenizes
both splits; every later run with the same data, vocabulary and tokenizer reuses the cached
arrays (memory-mapped), so a sweep pays for data preparation once.

Cache: $SCALING_CLI_CACHE, else data.cache_dir, else ~/.cache/scaling-cli, one folder per
hash of everything that determines the tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling_cli import cache
from scaling_cli.config import DataConfig
from scaling_cli.data.packing import PackedSequences
from scaling_cli.data.sources import embedded_identity, load_documents
from scaling_cli.data.tokenizer import load_or_train

# Bump when tokenization or packing changes, so stale caches are not reused.
CACHE_VERSION = 1


@dataclass
class PreparedData:
    tokenizer: object
    train: PackedSequences
    validation: PackedSequences
    cache: Path


def cache_root(cfg: DataConfig) -> Path:
    return cache.cache_root(cfg.cache_dir)


def _cache_folder(cfg: DataConfig, vocab_size: int):
    """(cache folder, documents or None): documents are read only when the identity needs them."""
    docs = None
    if cfg.source == "embedded":  # most sweeps: skip reading documents when the cache is warm
        identity = embedded_identity(cfg)
    else:
        docs = load_documents(cfg)
        identity = docs.identity
    key = hashlib.sha1(f"{CACHE_VERSION}|{identity}|{cfg.tokenizer}|{vocab_size}".encode()).hexdigest()[:16]
    return cache_root(cfg) / key, docs


def load_tokenizer(cfg: DataConfig, vocab_size: int):
    """The tokenizer `prepare` gives runs of this data config: the cached one, or trained (and
    cached) from the documents exactly as `prepare` would, without tokenizing the corpus."""
    folder, docs = _cache_folder(cfg, vocab_size)
    if (folder / "tokenizer").exists():
        return load_or_train(cfg.tokenizer, [], vocab_size, folder / "tokenizer")
    docs = docs or load_documents(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    return load_or_train(cfg.tokenizer, docs.train, vocab_size, folder / "tokenizer")


def prepare(cfg: DataConfig, vocab_size: int, seq_len: int) -> PreparedData:
    folder, docs = _cache_folder(cfg, vocab_size)
    arrays = {split: folder / f"{split}.npy" for split in ("train", "validation")}
    if not all(path.exists() for path in arrays.values()) or not (folder / "tokenizer").exists():
        docs = docs or load_documents(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = load_or_train(cfg.tokenizer, docs.train, vocab_size, folder / "tokenizer")
        for split, texts in (("train", docs.train), ("validation", docs.validation)):
            _save_atomic(arrays[split], _tokenize(tokenizer, texts, vocab_size))
    tokenizer = load_or_train(cfg.tokenizer, [], vocab_size, folder / "tokenizer")
    streams = {split: np.load(path, mmap_mode="r") for split, path in arrays.items()}
    return PreparedData(
        tokenizer=tokenizer,
        train=PackedSequences(streams["train"], seq_len, "training"),
        validation=PackedSequences(streams["validation"], seq_len, "validation"),
        cache=folder,
    )


def _tokenize(tokenizer, texts: list[str], vocab_size: int) -> np.ndarray:
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    eos = tokenizer.eos_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=dtype)
    return stream


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
