"""Benchmark the fused linear + cross-entropy (forward + backward) against its peers, on one GPU.

    python benchmarks/bench_linear_cross_entropy.py                       # default shapes, all rows
    python benchmarks/bench_linear_cross_entropy.py --profile             # + forward/backward split
    python benchmarks/bench_linear_cross_entropy.py --shapes 16x16384x128x32768 --impls floor,ours \\
        --schemes fused,owners

Shapes are KxTxDxV (K heads of T tokens, through ``linear_cross_entropy_heads``: a pack) or
TxDxV (one head). Rows per shape, measured side by side in one process:

* ``floor``: the three bf16 GEMMs alone (logits, dH = G W, dW = G^T H), the issue's 3-matmul floor;
* ``eager`` / ``compile``: logits, then F.cross_entropy in fp32 (torch.compile'd for the second);
* ``ours:SCHEME``: scaling_kernels with each backward scheme (``lce_plan``); the label shows the
  scheme that ran when the asked one does not apply at this d (``fused>supertile``);
* ``liger`` / ``cce``: Liger-Kernel's fused linear CE and Apple's cut-cross-entropy, when
  installed (pip install liger-kernel cut-cross-entropy); per head in a loop for packs.

Columns: median ms of fwd+bwd over --rep runs; x floor; extra MiB = peak allocated beyond the
inputs and the two gradients, in a run after warm-up (our kernels are autotuned beforehand by
prepare_linear_cross_entropy, so tuning's buffers are excluded); loss, dH and dW error relative to
an fp32 reference (our chunked PyTorch reference on fp32 copies of the same bf16 inputs), as
|a - b| / |b| for the loss and ||a - b|| / ||b|| (Frobenius) for the gradients. A failing row
prints its error and the run goes on. --profile adds, for ours, fwd and bwd ms (CUDA events) and
the heaviest kernels (torch.profiler). The loss is the mean over tokens per head, summed over heads.

The peers, the timer and the fp32 reference live in ``scaling_kernels.lce_bench`` (shared with
``scaling-cli doctor``). Needs CUDA (``--help`` works anywhere). Budget: the defaults take a few minutes on an H100, most
of it compiling (torch.compile and our autotuning); trim with --impls / --schemes / --shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback

import torch

from scaling_kernels.lce_bench import PEERS, Fn, extra_mib, make_fn, ours_fn, reference, rel_err, time_ms

# (K, T, d, V): the four shapes, the pack of 16 d128 proxies, and one d128 proxy
DEFAULT_SHAPES = [(1, 16384, 256, 32768), (1, 16384, 512, 50304), (1, 32768, 768, 50304), (1, 8192, 2304, 256000),
                  (16, 16384, 128, 32768), (1, 16384, 128, 32768)]
DEVICE = "cuda"
SCHEMES = ("fused", "owners", "supertile")
MIB = 2**20


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        parts = [int(x) for x in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (3, 4) or min(parts, default=0) <= 0:
        raise argparse.ArgumentTypeError(f"shape must look like 16384x512x50304 or 16x16384x128x32768, got {text!r}")
    return tuple(parts) if len(parts) == 4 else (1, *parts)  # type: ignore[return-value]


def _label(shape: tuple[int, int, int, int]) -> str:
    k, t, d, v = shape
    return f"{t}x{d}x{v}" if k == 1 else f"{k}x({t},{d},{v})"


def _clear(*tensors: torch.Tensor) -> None:
    for t in tensors:
        t.grad = None


def profile_ours(fn: Fn, h, w, y, reps: int = 3, top: int = 8) -> None:
    """Print forward and backward ms (CUDA events), then the heaviest kernels per fwd+bwd
    (torch.profiler), for one of our rows."""
    fwd_ms, bwd_ms = [], []
    for _ in range(reps):
        _clear(h, w)
        e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        e0.record()
        loss = fn.forward_only(h, w, y)  # type: ignore[attr-defined]
        e1.record()
        loss.backward()
        e2.record()
        torch.cuda.synchronize()
        fwd_ms.append(e0.elapsed_time(e1))
        bwd_ms.append(e1.elapsed_time(e2))
    print(f"      forward {statistics.median(fwd_ms):.3f} ms, backward {statistics.median(bwd_ms):.3f} ms", flush=True)
    from torch.profiler import ProfilerActivity, profile

    def device_us(event) -> float:
        return getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            _clear(h, w)
            fn(h, w, y)
        torch.cuda.synchronize()
    events = sorted((e for e in prof.key_averages() if device_us(e) > 0), key=lambda e: -device_us(e))
    for e in events[:top]:
        print(f"      {device_us(e) / 1000 / reps:8.3f} ms/step {e.count / reps:6.1f} calls  {e.key[:90]}", flush=True)


# ------------------------------------------------------------------------------------ main

def _plan_note(shape, scheme: str, dtype: torch.dtype) -> tuple[str, str]:
    """(label of the scheme that runs, a short plan description)."""
    from scaling_kernels import lce_plan

    k, t, d, v = shape
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    elt = torch.empty((), dtype=dtype).element_size()
    fwd = lce_plan.plan_forward(k, t, d, v, sms)
    bwd = lce_plan.plan_backward(k, t, d, v, elt, sms, scheme)
    label = scheme if bwd.scheme == scheme else f"{scheme}>{bwd.scheme}"
    ws = lce_plan.workspace_bytes(fwd, bwd, k, t, d, v, elt) / MIB
    note = (f"fwd splits {fwd.n_split} {'resident' if fwd.resident else 'stream'}; bwd {bwd.scheme} "
            f"heads/launch {bwd.head_group} chunk {bwd.token_chunk}x{bwd.vocab_chunk} dh_splits {bwd.dh_splits}; "
            f"planned workspace {ws:.1f} MiB")
    return label, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=DEFAULT_SHAPES,
                        help="KxTxDxV or TxDxV (default: the issue's four shapes, the 16-head pack, a d128 head)")
    parser.add_argument("--impls", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--schemes", default=",".join(SCHEMES),
                        help=f"backward schemes of ours to time, subset of {','.join(SCHEMES)} or 'auto'")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row (compilation, autotuning)")
    parser.add_argument("--rep", type=int, default=10, help="timed runs per row; the median is reported")
    parser.add_argument("--profile", action="store_true", help="forward/backward split and top kernels of ours")
    parser.add_argument("--no-errors", action="store_true", help="skip the fp32 reference and error columns")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.impls.split(",") if n.strip()]
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if sorted(set(names) - set(PEERS)):
        parser.error(f"unknown impls {sorted(set(names) - set(PEERS))}; choose from {PEERS}")
    if sorted(set(schemes) - set(SCHEMES) - {"auto"}):
        parser.error(f"unknown schemes {sorted(set(schemes) - set(SCHEMES))}; choose from {SCHEMES} or auto")
    if not torch.cuda.is_available():
        print("bench_linear_cross_entropy: no CUDA device; this benchmark needs a GPU "
              "(the CPU path is covered by tests/test_kernels.py and tests/test_kernel_op.py).", file=sys.stderr)
        return 2
    import triton

    from scaling_kernels import prepare_linear_cross_entropy

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name} ({props.multi_processor_count} SMs) | torch {torch.__version__} | triton "
          f"{triton.__version__} | {args.dtype} | median of {args.rep} fwd+bwd runs after {args.warmup} warm-up")
    header = (f"{'shape':>22} {'impl':>20} {'ms':>9} {'x floor':>8} {'extra MiB':>10} {'loss err':>9} "
              f"{'dH err':>9} {'dW err':>9} {'s':>5}")
    print(header)
    print("-" * len(header), flush=True)
    for shape in args.shapes:
        k, t, d, v = shape
        label = _label(shape)
        try:
            gen = torch.Generator(device=DEVICE).manual_seed(0)
            h = torch.randn(k, t, d, device=DEVICE, generator=gen).to(dtype).requires_grad_()
            w = (torch.randn(k, v, d, device=DEVICE, generator=gen) * d**-0.5).to(dtype).requires_grad_()
            y = torch.randint(0, v, (k, t), device=DEVICE, generator=gen)
            ref = None if args.no_errors else reference(h, w, y)
        except torch.OutOfMemoryError:
            print(f"{label:>22} {'inputs':>20} {'OOM':>9}", flush=True)
            torch.cuda.empty_cache()
            continue
        rows: list[tuple[str, Fn | None, str | None]] = []
        for name in names:
            if name == "ours":
                rows += [(f"ours:{s}", ours_fn(s), s) for s in schemes]
            else:
                rows.append((name, None, None))
        floor_ms = None
        for row, fn, scheme in rows:
            started = time.perf_counter()
            note = None
            try:
                if fn is None:
                    fn = make_fn(row)
                if fn is None:
                    print(f"{label:>22} {row:>20} {'not installed':>13}", flush=True)
                    continue
                if scheme is not None:
                    shown, note = _plan_note(shape, scheme, dtype)
                    row = f"ours:{shown}"
                    prepare_linear_cross_entropy([shape], dtype=dtype, scheme=scheme)  # autotune outside the step
                ms = time_ms(fn, h, w, y, args.warmup, args.rep)
                extra, loss, dh, dw = extra_mib(fn, h, w, y)
            except Exception as err:  # noqa: BLE001 - a failing implementation is a row, not the end
                _clear(h, w)
                torch.cuda.empty_cache()
                kind = "OOM" if isinstance(err, torch.OutOfMemoryError) else f"{type(err).__name__}: {err}"
                print(f"{label:>22} {row:>20} failed: {kind.splitlines()[0][:100]}", flush=True)
                if not isinstance(err, torch.OutOfMemoryError):
                    traceback.print_exc(limit=2, file=sys.stderr)
                continue
            if row == "floor":
                floor_ms = ms
            ratio = f"{ms / floor_ms:.2f}" if floor_ms else "-"
            if ref is None or row == "floor":
                errs = ("-", "-", "-")
            else:
                errs = (f"{(abs(loss - ref[0]) / abs(ref[0])).item():.2e}", f"{rel_err(dh, ref[1]):.2e}",
                        f"{rel_err(dw, ref[2]):.2e}")
            print(f"{label:>22} {row:>20} {ms:9.3f} {ratio:>8} {extra:10.1f} {errs[0]:>9} {errs[1]:>9} {errs[2]:>9} "
                  f"{time.perf_counter() - started:5.0f}", flush=True)
            if note:
                print(f"{'':>22} {'':>20} {note}", flush=True)
            if args.profile and scheme is not None:
                try:
                    profile_ours(fn, h, w, y)
                except Exception as err:  # noqa: BLE001
                    print(f"      profile failed: {type(err).__name__}: {err}", flush=True)
            _clear(h, w)
        del h, w, y, ref
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
