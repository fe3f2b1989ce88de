"""fit.json: write the fit report atomically and read it back for `scaling-cli predict`.

The report is plain JSON (NaN and inf become null, numpy scalars become numbers) so any tool can
read it. Paths may be local or fsspec URLs, like run stores. The file is written to a temporary
name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from scaling_cli.errors import UserError
from scaling_cli.fit import FIT_SCHEMA

FIT_FILENAME = "fit.json"


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy values, tuples and non-finite floats into JSON-safe values."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def join(outdir: str, name: str) -> str:
    return f"{str(outdir).rstrip('/')}/{name}"


def write_bytes(path: str, data: bytes) -> None:
    """Atomic write (temporary file + rename) to a local path or fsspec URL."""
    import fsspec

    fs, fpath = fsspec.core.url_to_fs(path)
    parent = fpath.rsplit("/", 1)[0] if "/" in fpath else "."
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{fpath}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, fpath)


def write_report(report: dict, outdir: str) -> str:
    """Write `report` as OUTDIR/fit.json; returns the path."""
    path = join(outdir, FIT_FILENAME)
    write_bytes(path, json.dumps(to_jsonable(report), indent=1, allow_nan=False).encode())
    return path


def read_report(path: str) -> dict:
    """Read a fit.json (or the fit.json inside a directory); UserError when missing or foreign."""
    import fsspec

    fs, fpath = fsspec.core.url_to_fs(str(path))
    if fs.isdir(fpath):
        fpath = join(fpath, FIT_FILENAME)
    if not fs.exists(fpath):
        raise UserError(f"fit file {path} not found; run `scaling-cli fit RUNS` first (or pass --fit PATH)")
    try:
        with fs.open(fpath, "rb") as f:
            report = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable fit.json ({err}); re-run `scaling-cli fit`") from err
    schema = report.get("schema", "") if isinstance(report, dict) else ""
    if schema != FIT_SCHEMA:
        raise UserError(f"{path}: schema {schema!r} is not {FIT_SCHEMA!r}; re-run `scaling-cli fit` with this version")
    return report
