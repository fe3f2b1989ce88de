"""Shared test setup: an isolated, session-wide data cache and small-config helpers.

The BPE tokenizer and token arrays of the embedded corpus are built once per test session
(a few seconds) in a temporary cache, never in the user's ~/.cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `python -m pytest` puts the repository root on sys.path, where the folder kernels/ (installed as
# scaling_kernels) would shadow Hugging Face's `kernels` package, which transformers imports when it
# is installed (transformers >= 5 requires it). The tests import the installed packages only.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]
os.environ.setdefault("PYTHONSAFEPATH", "1")  # and the same for every `python -m` / `-c` a test starts (3.11+)

import pytest  # noqa: E402
import torch  # noqa: E402

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
