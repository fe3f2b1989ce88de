"""Compile every Triton kernel of the fused loss, in every autotune config, for an H100 (sm_90a),
on any machine: no GPU needed, only triton's bundled CUDA tools.

    python benchmarks/compile_lce_sm90.py                # table: kernel, variant, config, regs, spills, smem
    python benchmarks/compile_lce_sm90.py --arch 100     # another target (Blackwell: 100)

It catches what the CPU interpreter cannot: code that does not lower to GPU code, configs that
need more shared memory than the SM has (Triton reports it at launch), and register spills
(cuobjdump -res-usage of the cubin). Must run without TRITON_INTERPRET (the kernels must be real @triton.jit functions).
Timing still needs a GPU: benchmarks/bench_linear_cross_entropy.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_lce_sm90: unset TRITON_INTERPRET (it turns the kernels into interpreted functions)")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from scaling_kernels import lce_triton as lt  # noqa: E402
from scaling_kernels import lce_triton_kernels as k  # noqa: E402

SMEM_LIMIT = 232448  # bytes of shared memory per block on sm_90 (227 KiB opt-in)

# argument name -> signature type; every pointer/int argument is treated as 16-divisible the way
# the JIT specialises typical training shapes (d, V, strides multiples of 16).
POINTER_TYPES = {"y_ptr": "*i64", "lse_ptr": "*fp32", "tgt_ptr": "*fp32", "m_ptr": "*fp32", "l_ptr": "*fp32",
                 "dlse_ptr": "*fp32", "dtgt_ptr": "*fp32"}


def _signature(fn, dtype: str, constexprs: dict, fp32_ptrs=()) -> tuple[dict, dict]:
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = POINTER_TYPES.get(name, "*fp32" if name in fp32_ptrs else f"*{dtype}")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "softcap":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name in ("D", "V", "stride_h", "stride_w", "stride_hk", "stride_wk", "stride_d", "stride_dw",
                        "stride_dh", "stride_out", "stride_ok", "stride_dk", "stride_dwk", "stride_dhk"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def occupancy(regs: int, warps: int, smem: int) -> int:
    """Blocks per SM that registers (64K per SM, allocated per warp in units of 256) and shared
    memory (228 KiB per SM) allow. On Hopper, Triton waits for each wgmma right after issuing it,
    so a kernel's exponentials overlap tensor-core work only across co-resident blocks."""
    per_warp = -(-regs * 32 // 256) * 256
    by_regs = 65536 // (per_warp * warps)
    by_smem = (228 << 10) // max(smem + 1024, 1)
    return min(by_regs, by_smem, 32)


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, local-memory bytes per thread: spills and stack) from cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    regs = int(re.search(r"REG:(\d+)", out).group(1))
    local = int(re.search(r"LOCAL:(\d+)", out).group(1)) + int(re.search(r"STACK:(\d+)", out).group(1))
    return regs, local


class _Arg:
    """Stands in for a tensor argument in the autotuner's config pruning."""

    def __init__(self, elt: int) -> None:
        self.elt = elt

    def element_size(self) -> int:
        return self.elt


def variants(dtype: str):
    """(kernel, fn, variant label, constexprs without tiles, configs, fp32 pointer args): every
    kernel at d = 128 and 256 (resident) and the streaming kernels (d > 256), each with the configs
    lce_triton's autotuner keeps for that d and dtype (its own pruning function decides)."""
    flags = dict(INTERP_BF16=False, PRECISION="tf32" if dtype == "bf16" else "ieee")
    elt = 2 if dtype == "bf16" else 4

    def kept(autotuner, dim, **kwargs):
        configs = autotuner.early_config_prune(autotuner.configs, {"D": dim, "h_ptr": _Arg(elt)}, **kwargs)
        return [(c.kwargs["BLOCK_T"], c.kwargs["BLOCK_V"], c.num_warps, c.num_stages) for c in configs]

    for d in (128, 256):
        for single in (True, False):
            flags_f = dict(HAS_SOFTCAP=False, RESIDENT=True, SINGLE_SPLIT=single)
            yield ("fwd", k._fwd_kernel, f"d{d} resident {'1 split' if single else 'splits'}",
                   dict(flags_f, BLOCK_D=d, EVEN_D=True, **flags), kept(lt._fwd, d, **flags_f), ())
        for atomic in (True, False):
            flags_h = dict(HAS_SOFTCAP=False, ATOMIC=atomic)
            yield ("dh", k._dh_kernel, f"d{d} owners {'atomic' if atomic else 'store'}",
                   dict(flags_h, BLOCK_D=d, EVEN_D=True, **flags), kept(lt._dh, d, **flags_h),
                   ("dh_ptr",) if atomic else ())
        for fused in (True, False):
            flags_w = dict(HAS_SOFTCAP=False, ATOMIC_DH=fused, ACCUMULATE=False)
            yield ("dw", k._dw_kernel, f"d{d} {'fused' if fused else 'owners'}",
                   dict(flags_w, BLOCK_D=d, EVEN_D=True, **flags), kept(lt._dw, d, **flags_w), ("dh_ptr",))
    flags_s = dict(HAS_SOFTCAP=True, RESIDENT=False, SINGLE_SPLIT=True)
    yield ("fwd", k._fwd_kernel, "stream softcap", dict(flags_s, BLOCK_D=lt.STREAM_BLOCK_D, EVEN_D=True, **flags),
           kept(lt._fwd, 768, **flags_s), ())
    yield ("g", k._g_tile_kernel, "supertile", dict(HAS_SOFTCAP=False, BLOCK_D=lt.STREAM_BLOCK_D, EVEN_D=True, **flags),
           kept(lt._g_tile, 768, HAS_SOFTCAP=False), ())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    print(f"triton {triton.__version__}, target sm_{args.arch}, {args.dtype}")
    print(f"{'kernel':>6} {'variant':>26} {'BT':>4} {'BV':>4} {'warps':>5} {'stages':>6} {'regs':>5} {'local B':>8} "
          f"{'smem KiB':>9} {'CTAs':>5}  note")
    failures = 0
    for name, fn, label, constexprs, configs, fp32_ptrs in variants(args.dtype):
        for bt, bv, warps, stages in configs:
            consts = dict(constexprs, BLOCK_T=bt, BLOCK_V=bv)
            sig, attrs = _signature(fn, args.dtype, consts, fp32_ptrs)
            try:
                compiled = triton.compile(ASTSource(fn, sig, consts, attrs), target=target,
                                          options=dict(num_warps=warps, num_stages=stages))
                regs, spills = _resources(compiled.asm["cubin"])
                smem = compiled.metadata.shared
                note = "over smem" if smem > SMEM_LIMIT else ""
                print(f"{name:>6} {label:>26} {bt:>4} {bv:>4} {warps:>5} {stages:>6} {regs:>5} {spills:>8} "
                      f"{smem / 1024:9.1f} {occupancy(regs, warps, smem):>5}  {note}", flush=True)
            except Exception as err:  # noqa: BLE001 - report and go on
                failures += 1
                print(f"{name:>6} {label:>26} {bt:>4} {bv:>4} {warps:>5} {stages:>6} failed: "
                      f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
