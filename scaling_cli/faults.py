"""Fault injection for the crash-recovery tests: kill this process at a named point.

    SCALING_CLI_CRASH_AT=checkpoint:2 scaling-cli sweep ...   # SIGKILL at the 2nd checkpoint

Points: 'step' (after an optimizer step), 'checkpoint' (inside a checkpoint, after the tables
and before the checkpoint file), 'store_write' (inside an atomic write, after the temporary
file and before the rename). Unset in normal use, when each call is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter = Counter()


def crash_point(name: str) -> None:
    target = os.environ.get("SCALING_CLI_CRASH_AT")
    if not target:
        return
    point, _, count = target.partition(":")
    if point != name:
        return
    _seen[name] += 1
    if _seen[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
