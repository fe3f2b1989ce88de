"""Compile every Triton kernel of the fused loss, in every config the autotuner keeps, for an
A100 (sm_80) and an H100 (sm_90a), on any machine: no GPU needed, only triton's bundled CUDA tools.

    python benchmarks/compile_lce_sm90.py                    # sm_90, bf16: the table below
    python benchmarks/compile_lce_sm90.py --target sm_80     # or both: --target sm_80 --target sm_90
    python benchmarks/compile_lce_sm90.py --softcap          # also the logit soft-cap variants

Table: kernel, variant, config (BLOCK_T x BLOCK_V, warps, stages), registers per thread, spill
bytes (ptxas -v), shared memory per block against the target's opt-in limit, blocks per SM,
whether every stride/length product is 64-bit. The variants are those lce_plan picks for the GPU
default's shapes and a 256k vocabulary under every backward scheme (scaling_kernels.lce_aot, which
tests/test_kernels_aot.py asserts on). It catches what the CPU interpreter cannot: code that does
not lower to GPU code, configs that need more shared memory than the SM has (Triton reports it
only at launch), register spills and 32-bit offsets. Timing still needs a GPU:
benchmarks/bench_linear_cross_entropy.py. Must run without TRITON_INTERPRET (it turns the kernels
into interpreted functions).
"""

from __future__ import annotations

import argparse
import os
import sys

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_lce_sm90: unset TRITON_INTERPRET (it turns the kernels into interpreted functions)")

import triton  # noqa: E402

from scaling_kernels import lce_aot  # noqa: E402


def _row(result: lce_aot.AotResult) -> str:
    case = result.case
    head = f"{case.variant.kernel:>4} {case.variant.label:>34} {case.config:>17}"
    if result.error:
        return f"{head}  failed: {result.error}"
    limit = lce_aot.TARGETS[result.target].smem_per_block
    notes = [n for n, bad in (("SPILLS", result.spill_bytes), (f"over {limit / 1024:.0f} KiB", not result.smem_ok),
                              ("32-bit offsets: " + ", ".join(result.offsets.narrow + result.offsets.unscaled),
                               not result.offsets.ok)) if bad]
    return (f"{head} {result.registers:>5} {result.spill_bytes:>7} {result.smem_bytes / 1024:9.1f} "
            f"{lce_aot.occupancy(result):>5} {'yes' if result.offsets.ok else 'NO':>4} {result.seconds:5.1f}  "
            + "; ".join(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", choices=sorted(lce_aot.TARGETS),
                        help="repeatable; default sm_90")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--softcap", action="store_true", help="also compile the HAS_SOFTCAP variants")
    args = parser.parse_args(argv)
    missing = lce_aot.toolchain_missing()
    if missing:
        sys.exit(f"compile_lce_sm90: {missing}")
    shapes = lce_aot.GPU_DEFAULT_SHAPES + lce_aot.LARGE_VOCAB_SHAPES
    failures = 0
    for name in args.target or ["sm_90"]:
        target = lce_aot.TARGETS[name]
        print(f"triton {triton.__version__}, target {name} ({target.gpu}: {target.smem_per_block} B shared memory "
              f"per block), {args.dtype}")
        print(f"{'kern':>4} {'variant':>34} {'config':>17} {'regs':>5} {'spill B':>7} {'smem KiB':>9} {'CTAs':>5} "
              f"{'i64':>4} {'s':>5}  note")
        softcap = (False, True) if args.softcap else (False,)
        for case in lce_aot.kernel_cases(shapes, target, args.dtype, softcap):
            result = lce_aot.compile_case(case, target)
            failures += not result.ok
            print(_row(result), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
