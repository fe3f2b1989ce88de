"""Run claims with leases, so that sweeps sharing a store never train one run twice.

A worker claims a run by creating `lease.<n>` in the run folder with exclusive-create (the
file must not exist), where n is one above the highest lease number already there. Only one
of several workers racing for the same n can succeed. A lease names its owner (host, pid) and
is kept alive by a heartbeat thread that rewrites it every `ttl / 3` seconds. A lease is
stale, and the next number may be taken, when its heartbeat is older than `ttl`, or at once
when its owner was a process on this host that no longer exists (kill -9, a crash, a reboot).

Exclusive create is atomic on local and network filesystems; on object stores without
conditional writes it is best-effort (the write is read back and verified).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from scaling_cli.store import RunStore

DEFAULT_TTL_S = 120.0
_LEASE = re.compile(r"lease\.(\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Lease:
    store: RunStore
    run_id: str
    number: int
    owner: str
    ttl: float
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"lease.{self.number}"

    def _record(self) -> dict:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time(),
                "ttl": self.ttl}

    def start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(self.ttl / 3):
                try:
                    self.store.write_json(self.run_id, self.name, self._record())
                except OSError:
                    pass  # a missed beat is retried; the lease only lapses after a full ttl

        self._thread = threading.Thread(target=beat, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        self.store.remove(self.run_id, self.name)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _leases(store: RunStore, run_id: str) -> list[int]:
    folder = store.run_path(run_id)
    if not store.fs.exists(folder):
        return []
    names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in store.fs.ls(folder, detail=False))
    return sorted(int(m.group(1)) for m in map(_LEASE.match, names) if m)


def holder(store: RunStore, run_id: str) -> dict | None:
    """The live lease on a run, or None if it is free (no lease, or only stale ones)."""
    numbers = _leases(store, run_id)
    if not numbers:
        return None
    try:
        record = store.read_json(run_id, f"lease.{numbers[-1]}")
    except (OSError, ValueError):  # half-visible or just released: treat as held for this round
        return {"owner": "unknown", "heartbeat": time.time()}
    if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", -1))):
        return None
    if time.time() - float(record.get("heartbeat", 0)) > float(record.get("ttl", DEFAULT_TTL_S)):
        return None
    return record


def try_claim(store: RunStore, run_id: str, ttl: float = DEFAULT_TTL_S) -> Lease | None:
    """Claim a run for this process, or None if another live worker holds it."""
    if holder(store, run_id) is not None:
        return None
    numbers = _leases(store, run_id)
    lease = Lease(store, run_id, (numbers[-1] + 1) if numbers else 1, f"{socket.gethostname()}:{os.getpid()}:"
                  f"{uuid.uuid4().hex[:8]}", ttl)
    path = store.run_path(run_id, lease.name)
    store.fs.makedirs(store.run_path(run_id), exist_ok=True)
    try:
        with store.fs.open(path, "xb") as f:
            f.write(json.dumps(lease._record()).encode())
    except (FileExistsError, ValueError, NotImplementedError) as err:
        if isinstance(err, FileExistsError):
            return None  # another worker took this number first
        # the filesystem has no exclusive create: write, then check nobody overwrote us
        store.write_json(run_id, lease.name, lease._record())
        if store.read_json(run_id, lease.name).get("owner") != lease.owner:
            return None
    # Older (stale) lease files are history now; removing them keeps the folder tidy.
    for number in numbers:
        store.remove(run_id, f"lease.{number}")
    lease.start_heartbeat()
    return lease
