"""The per-GPU plan cache: which backward scheme was timed fastest at which shape, on which GPU.

Pure Python (json, no torch), so every rule here is tested on a CPU. ``lce_tune`` fills it (from
``scaling-cli doctor``, or a sweep's first pack of a shape new to this GPU); ``lce_triton`` reads
it through ``measured_lookup`` and hands that to ``lce_plan.plan_backward``, which falls back to
its default whenever nothing is found.

    identity = {"gpu": "NVIDIA H100 80GB HBM3", "sms": 132, "torch": "2.9.0", "triton": "3.5.0"}
    record_plan(identity, 8, 32768, 128, 8192, 2, {"fused": 1.9, "owners": 2.4}, by="doctor")
    measured_lookup(identity)(8, 32768, 128, 8192, 2)    # -> 'fused'

Where: $SCALING_KERNELS_PLAN_CACHE (a file), else kernels/lce_plans.json under scaling-cli's cache
folder ($SCALING_CLI_CACHE, else ~/.cache/scaling-cli; the same rule as scaling_cli/cache.py, which
this package may not import). Keys: the device (GPU name, SM count, torch and triton versions: a
new driver stack or another GPU measures afresh) and the shape bucket (heads, tokens per head and
vocabulary rounded up to powers of two, as autotuning keys them; d exact; the input dtype). The
soft-cap is not in the key: it adds one tanh per logit to every scheme alike.

The file also keeps the device's last reference check (``record_reference_check``): a GPU whose
kernels failed it trains on the torch path (scaling_cli/train/kernel_plan.py) until a later check
passes. A missing, unreadable or foreign file is never an error: lookups then find nothing.
Writers replace the whole file atomically (read, merge, rename), so readers never see half a file;
two processes writing at the same moment may drop one entry, which the next measurement restores.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .lce_plan import SCHEMES, MeasuredLookup, bucket

__all__ = ["FORMAT", "ENV_PATH", "default_path", "device_key", "shape_key", "read", "lookup", "measured_lookup",
           "record_plan", "record_reference_check", "reference_verdict", "state"]

FORMAT = 1
ENV_PATH = "SCALING_KERNELS_PLAN_CACHE"

_memo: dict[str, tuple[tuple[int, int], dict]] = {}  # path -> ((mtime_ns, size), data): read once per change


def default_path(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_PATH):
        return Path(env[ENV_PATH]).expanduser()
    root = env.get("SCALING_CLI_CACHE") or "~/.cache/scaling-cli"
    return Path(root).expanduser() / "kernels" / "lce_plans.json"


def device_key(identity: dict) -> str:
    return (f"{identity.get('gpu')} ({identity.get('sms')} SMs) | torch {identity.get('torch')} | "
            f"triton {identity.get('triton')}")


def shape_key(heads: int, tokens: int, dim: int, vocab: int, elt: int) -> str:
    dtype = "fp32" if elt >= 4 else "bf16"
    return f"K{bucket(heads)} T{bucket(tokens)} d{dim} V{bucket(vocab)} {dtype}"


def read(path: Path | None = None) -> tuple[dict, str | None]:
    """(contents, problem): problem is None for a good file, else why nothing can be used from it
    ('absent', 'unreadable: ...', 'format ...'), with empty contents."""
    path = Path(path) if path is not None else default_path()
    try:
        stat = path.stat()
    except OSError:
        return {}, "absent"
    stamp = (stat.st_mtime_ns, stat.st_size)
    memo = _memo.get(str(path))
    if memo is not None and memo[0] == stamp:
        return memo[1], None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {}, f"unreadable: {type(err).__name__}: {err}"
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("devices"), dict):
        return {}, f"format: expected {{'format': {FORMAT}, 'devices': {{...}}}}"
    _memo[str(path)] = (stamp, data)
    return data, None


def _device(identity: dict, path: Path | None) -> dict:
    data, _ = read(path)
    found = data.get("devices", {}).get(device_key(identity))
    return found if isinstance(found, dict) else {}


def lookup(identity: dict, heads: int, tokens: int, dim: int, vocab: int, elt: int,
           path: Path | None = None) -> dict | None:
    """This device's measured entry for the shape bucket, or None."""
    plans = _device(identity, path).get("plans")
    entry = plans.get(shape_key(heads, tokens, dim, vocab, elt)) if isinstance(plans, dict) else None
    return entry if isinstance(entry, dict) else None


def measured_lookup(identity: dict, path: Path | None = None) -> MeasuredLookup:
    """The lookup ``lce_plan.plan_backward`` takes: the measured scheme of a shape, or None. The
    file is read again only when it changes (one stat per call)."""
    def scheme(heads: int, tokens: int, dim: int, vocab: int, elt: int) -> str | None:
        entry = lookup(identity, heads, tokens, dim, vocab, elt, path)
        chosen = entry.get("scheme") if entry else None
        return chosen if chosen in SCHEMES else None
    return scheme


def _update(path: Path | None, identity: dict, change) -> dict:
    path = Path(path) if path is not None else default_path()
    data, problem = read(path)
    data = data if problem is None else {"format": FORMAT, "devices": {}}
    data = json.loads(json.dumps(data))  # a private copy: the memo must not change under readers
    device = data["devices"].setdefault(device_key(identity), {})
    device["identity"] = dict(identity)
    result = change(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    return result


def record_plan(identity: dict, heads: int, tokens: int, dim: int, vocab: int, elt: int, ms: dict[str, float],
                by: str, seconds: float | None = None, complete: bool = True, configs: dict | None = None,
                path: Path | None = None) -> dict:
    """Keep the timings of one shape bucket (ms per scheme; inf or NaN: that scheme failed) with the
    fastest as its scheme; returns the entry. Raises ValueError when no scheme has a finite time."""
    finite = {s: float(t) for s, t in ms.items() if s in SCHEMES and math.isfinite(t)}
    if not finite:
        raise ValueError(f"no scheme has a finite time among {ms}")
    entry: dict[str, Any] = {"scheme": min(finite, key=finite.get), "ms": {s: float(t) for s, t in ms.items()},
                             "shape": [heads, tokens, dim, vocab], "complete": bool(complete), "by": by,
                             "at": time.time()}
    if seconds is not None:
        entry["seconds"] = float(seconds)
    if configs:
        entry["configs"] = configs

    def change(device: dict) -> dict:
        device.setdefault("plans", {})[shape_key(heads, tokens, dim, vocab, elt)] = entry
        return entry
    return _update(path, identity, change)


def record_reference_check(identity: dict, ok: bool, failures: list[str], by: str,
                           path: Path | None = None) -> dict:
    """Keep this device's latest reference check of the kernels (the last one wins)."""
    verdict = {"ok": bool(ok), "failures": list(failures), "by": by, "at": time.time()}

    def change(device: dict) -> dict:
        device["reference_check"] = verdict
        return verdict
    return _update(path, identity, change)


def reference_verdict(identity: dict, path: Path | None = None) -> dict | None:
    """This device's latest reference check ({'ok', 'failures', 'by', 'at'}), or None."""
    verdict = _device(identity, path).get("reference_check")
    return verdict if isinstance(verdict, dict) and "ok" in verdict else None


def state(identity: dict | None, path: Path | None = None) -> dict:
    """What the cache holds, for `scaling-cli doctor`: path, problem, devices, this device's plans."""
    path = Path(path) if path is not None else default_path()
    data, problem = read(path)
    devices = data.get("devices", {})
    mine = devices.get(device_key(identity), {}) if identity else {}
    plans = mine.get("plans", {}) if isinstance(mine, dict) else {}
    return {"path": str(path), "problem": problem, "devices": sorted(devices),
            "plans_for_this_device": {k: v.get("scheme") for k, v in sorted(plans.items()) if isinstance(v, dict)},
            "reference_check": reference_verdict(identity, path) if identity else None}
