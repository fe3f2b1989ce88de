"""Measuring the fused linear + cross-entropy beside its peers: shared by
benchmarks/bench_linear_cross_entropy.py, ``lce_tune`` (measured plans) and ``scaling-cli doctor``.

Every peer is ``fn(h, w, y) -> loss`` having run the backward, on h [K, T, d], w [K, V, d], y [K, T]
(the loss: per-head mean over tokens, summed over heads):

* ``floor``: the three GEMMs alone (logits, dH = G W, dW = G^T H): the 3-matmul floor;
* ``eager`` / ``compile``: logits, then F.cross_entropy in fp32 (torch.compile'd for the second);
* ``ours_fn(scheme, impl)``: scaling_kernels with one backward scheme;
* ``liger`` / ``cce``: Liger-Kernel's fused linear CE, Apple's cut-cross-entropy, when installed.

``time_ms`` times any of them with CUDA events on a GPU and the wall clock elsewhere (a CPU run
under the Triton interpreter measures the interpreter, not a kernel: plumbing only).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["Fn", "PEERS", "random_inputs", "eager_loss", "floor", "make_fn", "ours_fn", "time_ms", "extra_mib",
           "reference", "rel_err"]

Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
PEERS = ("floor", "eager", "compile", "ours", "liger", "cce")
MIB = 2**20


def random_inputs(shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device | str,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h [K, T, d] (std 1) and w [K, V, d] (std d^-1/2), both requiring grad, and targets y [K, T]."""
    k, t, d, v = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    h = torch.randn(k, t, d, device=device, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(k, v, d, device=device, generator=gen) * d**-0.5).to(dtype).requires_grad_()
    y = torch.randint(0, v, (k, t), device=device, generator=gen)
    return h, w, y


def eager_loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-head mean CE summed over heads, logits materialised; h [K, T, d], w [K, V, d], y [K, T]."""
    logits = torch.bmm(h, w.transpose(1, 2))
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum") / h.shape[1]


def floor(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hd, wd = h.detach(), w.detach()
    logits = torch.bmm(hd, wd.transpose(1, 2))  # stands in for its own gradient G
    torch.bmm(logits, wd)
    torch.bmm(logits.transpose(1, 2), hd)
    return logits.new_zeros(())


def make_fn(name: str) -> Fn | None:
    """A peer's fn(h, w, y) -> loss, having run the backward; None when its package is not installed.
    (Ours, one per backward scheme, comes from ``ours_fn``.)"""
    if name == "floor":
        return floor
    if name in ("eager", "compile"):
        loss_fn = torch.compile(eager_loss) if name == "compile" else eager_loss

        def fn(h, w, y):
            loss = loss_fn(h, w, y)
            loss.backward()
            return loss
        return fn
    if name == "liger":
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            return None
        liger = LigerFusedLinearCrossEntropyLoss()

        def fn(h, w, y):
            loss = sum(liger(w[k], h[k], y[k]) for k in range(h.shape[0]))
            loss.backward()
            return loss
        return fn
    if name == "cce":
        try:
            from cut_cross_entropy import linear_cross_entropy as cce
        except ImportError:
            return None

        def fn(h, w, y):
            loss = sum(cce(h[k], w[k], y[k]) for k in range(h.shape[0]))
            loss.backward()
            return loss
        return fn
    raise ValueError(f"unknown peer {name!r}; choose from {PEERS}")


def ours_fn(scheme: str, impl: str = "triton") -> Fn:
    """scaling_kernels' loss with one backward scheme; ``fn.forward_only`` skips the backward."""
    from .linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_heads

    def forward_only(h, w, y):
        if h.shape[0] == 1:
            return linear_cross_entropy(h[0], w[0], y[0], impl=impl, scheme=scheme)
        return linear_cross_entropy_heads(h, w, y, impl=impl, scheme=scheme).sum()

    def fn(h, w, y):
        loss = forward_only(h, w, y)
        loss.backward()
        return loss

    fn.forward_only = forward_only  # type: ignore[attr-defined]
    return fn


def _clear(*tensors: torch.Tensor) -> None:
    for t in tensors:
        t.grad = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Fn, h, w, y, warmup: int, rep: int) -> float:
    """Median milliseconds of fn's forward + backward over `rep` runs after `warmup` untimed ones
    (compilation, autotuning, allocator warm-up): CUDA events on a GPU, the wall clock elsewhere."""
    for _ in range(warmup):
        _clear(h, w)
        fn(h, w, y)
    _sync(h.device)
    times = []
    for _ in range(rep):
        _clear(h, w)
        if h.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(h, w, y)
            end.record()
            torch.cuda.synchronize(h.device)
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            fn(h, w, y)
            times.append(1e3 * (time.perf_counter() - started))
    return statistics.median(times)


def extra_mib(fn: Fn, h, w, y) -> tuple[float, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(peak CUDA memory beyond inputs and gradients, loss, dH, dW) of one run after warm-up."""
    _clear(h, w)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = fn(h, w, y)
    torch.cuda.synchronize()
    grads = sum(t.grad.nbytes for t in (h, w) if t.grad is not None)
    extra = max(0, torch.cuda.max_memory_allocated() - base - grads)
    return extra / MIB, loss.detach().float(), h.grad, w.grad


def reference(h, w, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 loss and gradients of the same inputs through the chunked torch path (any shape fits)."""
    from . import lce_reference
    from .linear_cross_entropy import linear_cross_entropy_heads

    saved = lce_reference.CHUNK_BYTES
    lce_reference.CHUNK_BYTES = 1 << 30  # fewer, larger chunks: fine on a GPU, much faster
    try:
        h32 = h.detach().float().requires_grad_()
        w32 = w.detach().float().requires_grad_()
        loss = linear_cross_entropy_heads(h32, w32, y, impl="torch").sum()
        loss.backward()
    finally:
        lce_reference.CHUNK_BYTES = saved
    return loss.detach(), h32.grad, w32.grad


def rel_err(a: torch.Tensor | None, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (Frobenius; NaN when a is missing)."""
    if a is None:
        return float("nan")
    a = a.float().reshape(b.shape)
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()
