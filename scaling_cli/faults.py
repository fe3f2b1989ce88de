"""Fault injection for the recovery tests: kill this process, or raise a GPU fault, at a named point.

    SCALING_CLI_CRASH_AT=checkpoint:2 scaling-cli sweep ...   # SIGKILL at the 2nd checkpoint
    SCALING_CLI_FAULT=oom:step:12 scaling-cli sweep ...       # CUDA out of memory in the 12th step

Crash points: 'step' (after an optimizer step), 'checkpoint' (inside a checkpoint, after the tables
and before the checkpoint file), 'store_write' (inside an atomic write, after the temporary
file and before the rename). Fault points: 'step' (a training step, before its forward, where a
real out-of-memory strikes; solo and pack trainers count together). A fault fires once per
process, at the COUNT-th pass (default 1), so the recovery it provokes can finish. Kinds: 'oom'
raises torch.OutOfMemoryError, the very exception CUDA's allocator raises. Unset in normal use,
when each call is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter = Counter()
_faulted: Counter = Counter()


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


def _oom(where: str) -> BaseException:
    import torch

    return torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by {where})")


FAULTS = {"oom": _oom}


def fault_point(name: str) -> None:
    target = os.environ.get("SCALING_CLI_FAULT")
    if not target:
        return
    kind, _, rest = target.partition(":")
    point, _, count = rest.partition(":")
    if kind not in FAULTS:
        raise ValueError(f"SCALING_CLI_FAULT={target}: unknown fault {kind!r}; choose from {', '.join(FAULTS)}")
    if point != name:
        return
    _faulted[name] += 1
    if _faulted[name] == int(count or 1):
        raise FAULTS[kind](f"SCALING_CLI_FAULT={target}")


def reset() -> None:
    """Start counting passes afresh (tests that inject more than once in one process)."""
    _seen.clear()
    _faulted.clear()
