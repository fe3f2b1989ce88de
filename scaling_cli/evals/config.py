"""Schema of the Hydra `eval` group: which downstream tasks run, how big, how often."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class EvalConfig:
    tasks: List[str] = field(default_factory=list)
    """Downstream tasks to run at the end of every run (and every `interval` steps)."""
    interval: int = 0
    """Also run them every this many steps (0: only at the end of the run)."""
