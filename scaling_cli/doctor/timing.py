"""The loss kernel timed at the GPU default's shapes: the 3-matmul floor, torch.compile's loss
(logits + F.cross_entropy) and each backward scheme of ours (forward + backward, median ms, CUDA
events; scaling_kernels.lce_bench). Our schemes are timed by scaling_kernels.lce_tune, which keeps
the fastest as this GPU's measured plan for the shape. Needs CUDA."""

from __future__ import annotations

import time
from typing import Iterator

import torch


PEERS = ("floor", "compile")


def time_shape(shape: dict, device: torch.device, warmup: int = 2, rep: int = 5, peers: tuple[str, ...] = PEERS,
               dtype: torch.dtype = torch.bfloat16) -> dict:
    """{'floor_ms', 'compile_ms', 'schemes_ms', 'scheme', 'x_floor', ...} at one shape; a peer that
    fails (out of memory: torch.compile's logits of a big pack are K x T x V floats) is None with
    its error. (`peers` and `dtype` let a CPU test run the plumbing without inductor's C++ build.)"""
    from scaling_kernels import lce_tune
    from scaling_kernels.lce_bench import make_fn, random_inputs, time_ms

    k, t, d, v = shape["heads"], shape["tokens"], shape["dim"], shape["vocab"]
    row: dict = {key: shape[key] for key in ("arch", "heads", "tokens", "dim", "vocab")}
    started = time.perf_counter()
    errors = {}
    h, w, y = random_inputs((k, t, d, v), dtype, device)
    for name in peers:
        try:
            row[f"{name}_ms"] = time_ms(make_fn(name), h, w, y, warmup, rep)
        except Exception as err:  # noqa: BLE001 - a peer that fails is a row, not the end
            row[f"{name}_ms"] = None
            errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            h.grad = w.grad = None
            _release(device)
    del h, w, y
    _release(device)
    tuned = lce_tune.tune_shape(k, t, d, v, dtype, device, warmup=warmup, rep=rep, by="scaling-cli doctor")
    errors.update(tuned["errors"])
    row.update(schemes_ms=tuned["ms"], scheme=tuned["scheme"], complete=tuned["complete"],
               configs=tuned.get("configs", {}), errors=errors, seconds=round(time.perf_counter() - started, 2))
    floor = row.get("floor_ms")
    if floor:
        timed = [(name, row.get(f"{name}_ms")) for name in peers if name != "floor"] + list(tuned["ms"].items())
        row["x_floor"] = {name: ms / floor for name, ms in timed if ms is not None and ms != float("inf")}
    return row


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_shapes(shapes: list[dict], device: torch.device, deadline: float) -> Iterator[dict]:
    """time_shape for each shape, one row at a time, until time.perf_counter() passes `deadline`
    (the first is always timed); later shapes are listed as skipped for the time budget."""
    for index, shape in enumerate(shapes):
        if index and time.perf_counter() > deadline:
            yield {**{key: shape[key] for key in ("arch", "heads", "tokens", "dim", "vocab")},
                   "skipped": "over doctor's time budget (--budget-s)"}
        else:
            yield time_shape(shape, device)
