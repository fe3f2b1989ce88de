"""Token streams packed into fixed-length sequences, and a resumable batch order.

Documents are joined with an EOS token into one stream per split and cut into sequences of
seq_len + 1 tokens that overlap by one (inputs = seq[:-1], targets = seq[1:]), so no token
is wasted on padding. The order of training sequences is a fresh permutation per epoch,
derived from (seed, epoch): the batch at step s is a pure function of s, so a resumed run
sees exactly the data an uninterrupted run would.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from scaling_cli.errors import UserError


class PackedSequences:
    def __init__(self, stream: np.ndarray, seq_len: int, split: str) -> None:
        self.count = (len(stream) - 1) // seq_len
        if self.count < 1:
            raise UserError(f"model.seq_len: {seq_len} is longer than the {split} data "
                            f"({len(stream)} tokens); use a shorter sequence or more data")
        self.stream = stream
        self.seq_len = seq_len

    def windows(self, indices: np.ndarray) -> Tensor:
        """Token windows [len(indices), seq_len + 1] (int64): inputs are [:, :-1], targets [:, 1:]."""
        offsets = indices[:, None] * self.seq_len + np.arange(self.seq_len + 1)[None, :]
        return torch.from_numpy(self.stream[offsets].astype(np.int64))

    def sequences(self, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        """Inputs and targets [len(indices), seq_len] as int64 tensors."""
        window = self.windows(indices)
        return window[:, :-1], window[:, 1:]


class BatchOrder:
    """Which training sequences make up the batch at each step."""

    def __init__(self, num_sequences: int, batch_size: int, seed: int) -> None:
        self.num_sequences = num_sequences
        self.batch_size = batch_size
        self.seed = seed

    @lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_sequences)

    def indices(self, step: int) -> np.ndarray:
        flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, positions = np.divmod(flat, self.num_sequences)
        return np.array([self._permutation(int(e))[p] for e, p in zip(epochs, positions)])

    def epochs(self, steps: int) -> float:
        return steps * self.batch_size / self.num_sequences
