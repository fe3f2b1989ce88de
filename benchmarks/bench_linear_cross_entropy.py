"""Benchmark fused linear + cross-entropy (forward + backward) against its peers.

    python benchmarks/bench_linear_cross_entropy.py                 # all default shapes
    python benchmarks/bench_linear_cross_entropy.py --shapes 8192x256x32768 --impls floor,ours

For each (tokens T, hidden d, vocab V) it prints the median fwd+bwd time and
the peak memory of every implementation, measured side by side in one
process on one GPU, with ratios to the "3-matmul floor": the bf16 logits
GEMM plus the two gradient GEMMs (dH = G W, dW = G^T H) and nothing else.
The issue's target for ``ours`` is <= 1.4x the floor in time and <= 64 MiB of
extra memory.

Memory columns (MiB): ``peak-in`` is torch.cuda.max_memory_allocated minus
the inputs (hidden, weight, targets); ``extra`` additionally subtracts the two
gradients (hidden.grad, weight.grad), which every implementation must return.

Peers run when importable: Liger-Kernel's LigerFusedLinearCrossEntropyLoss
(pip install liger-kernel) and Apple's cut_cross_entropy.linear_cross_entropy
(pip install cut-cross-entropy). Needs CUDA; it is not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Callable

import torch
import torch.nn.functional as F

DEFAULT_SHAPES = [
    (4096, 128, 2048), (8192, 256, 32768),  # proxy shapes
    (16384, 256, 32768), (16384, 512, 50304), (32768, 768, 50304), (8192, 2304, 256000),
]
IMPLS = ("floor", "eager", "compile", "ours", "liger", "cce")
MIB = 2**20


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        t, d, v = (int(x) for x in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"shape must look like 16384x512x50304, got {text!r}") from exc
    return t, d, v


def _eager_loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ w.T).float(), y)


def _make_impls(names: list[str]) -> dict[str, Callable | None]:
    """name -> fn(h, w, y) that runs forward + backward; None when unavailable."""
    impls: dict[str, Callable | None] = {}
    for name in names:
        fn: Callable | None = None
        if name == "floor":
            def fn(h, w, y):  # the three GEMMs only; logits stand in for their own gradient
                logits = h.detach() @ w.detach().T
                logits @ w.detach()
                logits.T @ h.detach()
        elif name == "eager":
            def fn(h, w, y):
                _eager_loss(h, w, y).backward()
        elif name == "compile":
            compiled = torch.compile(_eager_loss)

            def fn(h, w, y):
                compiled(h, w, y).backward()
        elif name == "ours":
            from scaling_kernels import linear_cross_entropy

            def fn(h, w, y):
                linear_cross_entropy(h, w, y, impl="triton").backward()
        elif name == "liger":
            try:
                from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
            except ImportError:
                fn = None
            else:
                liger = LigerFusedLinearCrossEntropyLoss()

                def fn(h, w, y):
                    liger(w, h, y).backward()
        elif name == "cce":
            try:
                from cut_cross_entropy import linear_cross_entropy as cce_lce
            except ImportError:
                fn = None
            else:
                def fn(h, w, y):
                    cce_lce(h, w, y).backward()
        impls[name] = fn
    return impls


def _measure(fn: Callable, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, warmup: int,
             rep: int) -> tuple[float, float, float]:
    """(median ms, peak-minus-inputs MiB, extra-beyond-grads MiB)."""
    def step():
        h.grad = None
        w.grad = None
        fn(h, w, y)

    for _ in range(warmup):  # also triggers autotuning / compilation
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        h.grad = None
        w.grad = None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(h, w, y)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    h.grad = None
    w.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()  # the inputs (grads were freed above)
    torch.cuda.reset_peak_memory_stats()
    fn(h, w, y)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    grads = sum(t.grad.nbytes for t in (h, w) if t.grad is not None)
    return statistics.median(times), peak / MIB, (peak - grads) / MIB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=_parse_shape, default=DEFAULT_SHAPES,
                        help="TxDxV triples (default: the issue's six shapes)")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs (autotune, compile)")
    parser.add_argument("--rep", type=int, default=10, help="timed runs; the median is reported")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.impls.split(",") if n.strip()]
    unknown = sorted(set(names) - set(IMPLS))
    if unknown:
        parser.error(f"unknown impls {unknown}; choose from {IMPLS}")
    if not torch.cuda.is_available():
        print("bench_linear_cross_entropy: no CUDA device; this benchmark needs a GPU "
              "(the CPU path is covered by tests/test_kernels.py).", file=sys.stderr)
        return 2

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    impls = _make_impls(names)
    print(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | dtype {args.dtype} | "
          f"median of {args.rep} fwd+bwd runs")
    header = f"{'T x d x V':>22} {'impl':>8} {'ms':>9} {'x floor':>8} {'peak-in MiB':>12} {'extra MiB':>10}"
    print(header)
    print("-" * len(header))
    for t, d, v in args.shapes:
        gen = torch.Generator(device="cuda").manual_seed(0)
        h = torch.randn(t, d, device="cuda", generator=gen).to(dtype).requires_grad_()
        w = (torch.randn(v, d, device="cuda", generator=gen) * d**-0.5).to(dtype).requires_grad_()
        y = torch.randint(0, v, (t,), device="cuda", generator=gen)
        floor_ms = None
        for name, fn in impls.items():
            label = f"{t}x{d}x{v}"
            if fn is None:
                print(f"{label:>22} {name:>8} {'not installed':>9}")
                continue
            try:
                ms, peak, extra = _measure(fn, h, w, y, args.warmup, args.rep)
            except torch.OutOfMemoryError:
                h.grad = w.grad = None
                torch.cuda.empty_cache()
                print(f"{label:>22} {name:>8} {'OOM':>9}")
                continue
            if name == "floor":
                floor_ms = ms
            ratio = f"{ms / floor_ms:.2f}" if floor_ms else "-"
            print(f"{label:>22} {name:>8} {ms:9.3f} {ratio:>8} {peak:12.1f} {extra:10.1f}")
        del h, w, y
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
