"""Where scaling-cli keeps what it computes once per machine: $SCALING_CLI_CACHE, else
~/.cache/scaling-cli. Beneath it: token arrays and tokenizers (one folder per data identity),
compile/ (inductor and Triton), packs/memory.json (measured pack peaks), kernels/lce_plans.json
(measured loss-kernel plans, read by scaling_kernels.lce_plan_cache) and doctor/ (doctor reports).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = "~/.cache/scaling-cli"


def cache_root(fallback: str | None = None) -> Path:
    """$SCALING_CLI_CACHE, else `fallback` (a config's own choice, e.g. data.cache_dir), else
    ~/.cache/scaling-cli."""
    return Path(os.environ.get("SCALING_CLI_CACHE") or fallback or DEFAULT_ROOT).expanduser()
