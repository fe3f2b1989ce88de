"""Units of the numbers people read: a loss in nats per token or per byte, counts with SI prefixes.

The unit of a loss: nats per token, or nats per byte when every token is one byte.
A run's loss is the mean cross-entropy per token. With `data.tokenizer: bpe` and a vocabulary of at
most 257 entries (the 256 bytes and the end-of-text token, so the trainer learns no merges) every
token is one byte of UTF-8 text, except one end-of-text token per document, which counts as a byte
here (one per chapter of the embedded corpus: 0.03% of its tokens). Such a loss is in nats/byte, and bits per byte (the
tokenizer-free measure) is that divided by ln 2. With any merge (vocab_size 259 learns two: 'Ġt',
'he'; 0.966 tokens per byte on the embedded corpus) a token is no longer a byte, so the unit stays
nats/token. A table of runs says nats/token unless its rows carry `tokenizer` and `vocab_size`
columns that show bytes, or `--loss-unit` says otherwise.
"""

from __future__ import annotations

import math
from typing import Iterable

TOKEN, BYTE = "nats/token", "nats/byte"
UNITS = (TOKEN, BYTE)
BYTE_VOCAB = 257
"""The largest vocabulary whose trained byte-level BPE has no merges: 256 bytes + end-of-text."""


def loss_unit(tokenizers: Iterable, vocab_sizes: Iterable) -> str:
    """BYTE when every run's tokenizer is the byte-level BPE with no merges, else TOKEN."""
    tokenizers, vocab_sizes = list(tokenizers), list(vocab_sizes)
    if not tokenizers or len(tokenizers) != len(vocab_sizes):
        return TOKEN
    for tokenizer, vocab in zip(tokenizers, vocab_sizes):
        try:
            vocab = float(vocab)
        except (TypeError, ValueError):
            return TOKEN
        if tokenizer != "bpe" or not vocab <= BYTE_VOCAB:
            return TOKEN
    return BYTE


def unit_of(report: dict) -> str:
    """The loss unit a fit report records (data.loss_unit; a backtest result: loss_unit), nats/token
    for reports without one."""
    unit = (report.get("data") or {}).get("loss_unit") or report.get("loss_unit")
    return unit if unit in UNITS else TOKEN


def with_bits(value: float | None, unit: str, decimals: int = 4) -> str:
    """'1.2340 nats/byte (1.7803 bits/byte)' on byte-level data, '1.2340 nats/token' otherwise."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{decimals}f} {unit}"
    if unit == BYTE:
        text += f" ({value / math.log(2):.{decimals}f} bits/byte)"
    return text


def axis_label(unit: str, what: str = "loss") -> str:
    """An axis label: 'loss (nats/byte)'."""
    return f"{what} ({unit})"


def human(x: float, unit: str = "") -> str:
    """A count with an SI prefix: human(6.8e6) = '6.8M', human(1e13, 'FLOP') = '10TFLOP'."""
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"
