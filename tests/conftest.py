"""Shared test setup: an isolated, session-wide data cache and small-config helpers.

The BPE tokenizer and token arrays of the embedded corpus are built once per test session
(a few seconds) in a temporary cache, never in the user's ~/.cache.
"""

from __future__ import annotations

import os

import pytest
import torch

# Tiny proxies are faster on one thread, and two test processes must not fight over cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Without a GPU the Triton kernels run under the interpreter. This must be set before triton is
# first imported anywhere in the session, so it lives here rather than in one test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

def triton_interpreting() -> bool:
    """True on a CPU whose Triton kernels run under the interpreter (TRITON_INTERPRET=1, set above
    before triton's first import): then the Triton code paths are testable here."""
    from scaling_kernels import triton_available

    if torch.cuda.is_available() or not triton_available():
        return False
    from scaling_kernels import lce_triton

    return lce_triton.INTERPRET


# Overrides that make a run train in about a second on one CPU core.
TINY_OVERRIDES = [
    "model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.seq_len=32", "model.vocab_size=512",
    "train.tokens=7680", "train.batch_size=8", "train.eval_interval=10", "train.eval_tokens=2048",
    "train.log_interval=5", "train.checkpoint_interval=10",
]


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("scaling-cli-cache"))
    os.environ["SCALING_CLI_CACHE"] = path
    return path


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """One 30-step run (TINY_OVERRIDES, sweep=single) into a fresh store in this test's folder."""
    return ["sweep=single", *TINY_OVERRIDES, "eval=none", f"store.root={tmp_path / 'runs'}"]
