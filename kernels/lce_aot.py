"""Ahead-of-time compilation of the fused loss's Triton kernels for GPUs that are not here
(sm_80 = A100, sm_90 = H100), with the CUDA tools bundled in triton's wheel: no GPU, no driver.

For one kernel variant, one tile config and one target, ``compile_case`` reports what the CPU
interpreter cannot see: whether the kernel lowers to GPU code at all, registers per thread,
register spills (ptxas -v), the shared memory one block asks for at launch against the target's
opt-in limit, and whether every offset that scales with a stride or a length is computed in
64-bit arithmetic (``offset_widths``, read off Triton's IR).

The variants are the ones the launch code produces: ``planned_variants`` walks lce_plan's
decisions for given shapes (forward variant, vocab splits, each backward scheme) into the kernel
flags lce_triton passes, and ``kept_configs`` asks lce_triton's own autotune pruning which tile
configs it would try for each. ``benchmarks/compile_lce_sm90.py`` prints the table;
``tests/test_kernels_aot.py`` asserts on it.

Compilation needs real @triton.jit functions, and a process that imported triton under
TRITON_INTERPRET=1 (the test suite on a CPU) only has interpreted ones: ``compile_isolated`` runs
the compiler in a fresh interpreter without that variable (``python -m scaling_kernels.lce_aot``).
Planning the cases needs neither and works in any process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from . import lce_plan, lce_triton

__all__ = ["Target", "TARGETS", "Variant", "Case", "AotResult", "OffsetWidths", "planned_variants",
           "kept_configs", "kernel_cases", "compile_case", "compile_isolated", "offset_widths",
           "occupancy", "toolchain_missing", "GPU_DEFAULT_SHAPES", "LARGE_VOCAB_SHAPES"]


@dataclass(frozen=True)
class Target:
    name: str
    arch: int               # compute capability as triton's GPUTarget takes it (80, 90)
    gpu: str
    smem_per_block: int     # opt-in maximum of dynamic shared memory per block, bytes
    smem_per_sm: int        # shared memory per SM, bytes (occupancy)
    sms: int                # SMs of the named part, for planning (splits, scheme choice)
    regs_per_sm: int = 65536


# NVIDIA's limits: A100 has 164 KiB of shared memory per SM and lets one block opt in to 163 KiB;
# H100 has 228 KiB per SM and 227 KiB per block (CUDA reserves 1 KiB per block in both).
TARGETS = {t.name: t for t in (
    Target("sm_80", 80, "A100", 163 << 10, 164 << 10, 108),
    Target("sm_90", 90, "H100", 227 << 10, 228 << 10, 132),
)}

# Shapes (heads K, tokens per head T, d, vocab V) the GPU default trains: sweeps/small.yaml's
# widths at batch 32 x 1024 tokens, alone or in a pack of 16, at its 8k vocabulary and at 32k;
# and a large-vocabulary loss (T = 32768 tokens x V = 256000: T*V = 8.4e9 > 2^31) at a resident
# and a streamed d, and at a head too long for the fused scheme's dH buffer (token chunks, dW
# summed across them).
GPU_DEFAULT_SHAPES = tuple((k, 32768, d, v) for k in (1, 16) for d in (128, 192, 256, 320, 384, 512)
                           for v in (8192, 32768))
LARGE_VOCAB_SHAPES = ((1, 32768, 256, 256000), (1, 32768, 4096, 256000), (1, 65536, 256, 256000))

KERNELS = {"fwd": "_fwd_kernel", "dh": "_dh_kernel", "dw": "_dw_kernel", "g": "_g_tile_kernel"}
# pointer arguments whose element type is fixed, whatever the inputs' dtype
_FIXED_POINTERS = {"y_ptr": "i64", "lse_ptr": "fp32", "tgt_ptr": "fp32", "m_ptr": "fp32", "l_ptr": "fp32",
                   "dlse_ptr": "fp32", "dtgt_ptr": "fp32"}
# integer arguments the launch code passes as multiples of 16 (d, V and every stride at training
# shapes), so the JIT specialises them as such and so do we
_DIVISIBLE = re.compile(r"^(D|V|stride_\w+)$")
# integer arguments whose products address memory: every stride, and T (tokens per head, which
# scales the head index into [K, T] arrays). Such a product must be formed in 64 bits.
OFFSET_SCALES = re.compile(r"^(stride_\w+|T)$")


@dataclass(frozen=True)
class Variant:
    """One compiled form of a kernel: everything but the autotuned tiles."""
    kernel: str                         # a key of KERNELS, or "module:function" for any other kernel
    label: str
    dtype: str                          # "bf16" or "fp32": the inputs h, w and outputs in their dtype
    flags: tuple[tuple[str, object], ...]       # constexprs other than BLOCK_T, BLOCK_V
    pointers: tuple[tuple[str, str], ...] = ()  # pointer arguments of another dtype (fp32 buffers)

    def constexprs(self) -> dict:
        return dict(self.flags)


@dataclass(frozen=True)
class Case:
    variant: Variant
    block_t: int
    block_v: int
    num_warps: int
    num_stages: int

    @property
    def config(self) -> str:
        return f"{self.block_t}x{self.block_v} w{self.num_warps} s{self.num_stages}"


@dataclass(frozen=True)
class OffsetWidths:
    """Integer products of a stride or length argument in a kernel's IR, by width."""
    wide: tuple[tuple[str, int], ...]   # (argument, number of 64-bit products)
    narrow: tuple[str, ...]             # each 32-bit product: argument and source line
    unscaled: tuple[str, ...]           # strides the kernel uses but never multiplies (a vacuous check)

    @property
    def ok(self) -> bool:
        return bool(self.wide) and not self.narrow and not self.unscaled


@dataclass(frozen=True)
class AotResult:
    case: Case
    target: str
    seconds: float
    error: str | None = None
    registers: int = 0
    spill_bytes: int = 0        # ptxas "bytes spill stores"
    stack_bytes: int = 0        # ptxas "bytes stack frame" (spills live there)
    smem_bytes: int = 0         # dynamic shared memory a block requests at launch
    offsets: OffsetWidths = field(default_factory=lambda: OffsetWidths((), (), ()))

    @property
    def smem_ok(self) -> bool:
        return self.error is None and self.smem_bytes <= TARGETS[self.target].smem_per_block

    @property
    def ok(self) -> bool:
        return self.error is None and self.spill_bytes == 0 and self.smem_ok and self.offsets.ok


# ------------------------------------------------------------------------------- planning cases

def _flags(dtype: str, **flags) -> tuple[tuple[str, object], ...]:
    # what lce_triton._meta passes on a GPU: no interpreter workarounds; fp32 inputs take a true
    # fp32 dot so they match the fp32 oracle
    return tuple(dict(flags, INTERP_BF16=False, PRECISION="ieee" if dtype == "fp32" else "tf32").items())


def _block_d(dim: int, resident: bool) -> tuple[int, bool]:
    """BLOCK_D and EVEN_D as lce_triton's heuristics set them (streamed d: STREAM_BLOCK_D slices)."""
    block_d = lce_triton._block_d({"D": dim, "RESIDENT": resident})
    return block_d, lce_triton._even_d({"D": dim, "BLOCK_D": block_d})


def planned_variants(shapes, target: Target, dtype: str = "bf16", softcap: tuple[bool, ...] = (False,),
                     schemes: tuple[str, ...] = lce_plan.SCHEMES) -> list[Variant]:
    """Every kernel variant lce_triton launches for these (K, T, d, V) shapes on ``target``: the
    forward lce_plan plans there, and the backward under each of ``schemes`` (auto picks one of
    them per shape; SCALING_KERNELS_LCE_BWD any). In first-seen order, without repeats."""
    low_precision = dtype != "fp32"
    elt = 2 if low_precision else 4
    seen: dict[Variant, None] = {}

    def add(kernel, label, pointers=(), **flags):
        seen.setdefault(Variant(kernel, label, dtype, _flags(dtype, **flags), tuple(pointers)))

    for heads, tokens, dim, vocab in shapes:
        for cap in softcap:
            cap_label = " softcap" if cap else ""
            fwd = lce_plan.plan_forward(heads, tokens, dim, vocab, target.sms, env={})
            block_d, even_d = _block_d(dim, fwd.resident)
            form = f"resident d<={block_d}" if fwd.resident else "stream"
            add("fwd", f"{form}{'' if even_d else ' odd d'} {'1 split' if fwd.n_split == 1 else 'splits'}{cap_label}",
                HAS_SOFTCAP=cap, RESIDENT=fwd.resident, SINGLE_SPLIT=fwd.n_split == 1, BLOCK_D=block_d, EVEN_D=even_d)
            for scheme in schemes:
                bwd = lce_plan.plan_backward(heads, tokens, dim, vocab, elt, target.sms, scheme, env={})
                if bwd.scheme == "supertile":
                    block_d, even_d = _block_d(dim, resident=False)
                    add("g", f"supertile{'' if even_d else ' odd d'}{cap_label}", HAS_SOFTCAP=cap, BLOCK_D=block_d,
                        EVEN_D=even_d)
                    continue
                block_d, even_d = _block_d(dim, True)
                shape = f"d<={block_d}{'' if even_d else ' odd d'}"
                if bwd.scheme == "fused":
                    # dH shares land in an fp32 buffer; dW is fp32 while it sums over token chunks
                    dw_type = "fp32" if bwd.dw_fp32_acc else dtype
                    for accumulate in sorted({False, bwd.token_chunk < tokens}):
                        add("dw", f"fused {shape}{' chunk+' if accumulate else ''}{cap_label}",
                            [("dh_ptr", "fp32"), ("dw_ptr", dw_type)], HAS_SOFTCAP=cap, ATOMIC_DH=True,
                            ACCUMULATE=accumulate, BLOCK_D=block_d, EVEN_D=even_d)
                else:  # owners: several vocab splits add dH into fp32
                    atomic = bwd.dh_splits > 1
                    add("dh", f"owners {shape} {'atomic' if atomic else 'store'}{cap_label}",
                        [("dh_ptr", "fp32")] if atomic and low_precision else (), HAS_SOFTCAP=cap, ATOMIC=atomic,
                        BLOCK_D=block_d, EVEN_D=even_d)
                    add("dw", f"owners {shape}{cap_label}", [("dh_ptr", "fp32")], HAS_SOFTCAP=cap,
                        ATOMIC_DH=False, ACCUMULATE=False, BLOCK_D=block_d, EVEN_D=even_d)
    return list(seen)


def kept_configs(variant: Variant, target: Target) -> list[tuple[int, int, int, int]]:
    """(BLOCK_T, BLOCK_V, num_warps, num_stages) of every config lce_triton's autotuner tries for
    this variant on ``target``: its own ``offered_configs`` decides. That sees d only through its
    class (resident d <= 128, <= 256, streamed) and its power-of-two size: the variant's BLOCK_D."""
    owned, table = lce_triton.AUTOTUNED[variant.kernel]
    flags = variant.constexprs()
    kept = lce_triton.offered_configs(
        lce_triton._configs(table), table, owned, flags["BLOCK_D"], 2 if variant.dtype == "bf16" else 4,
        lce_triton.config_family(target.arch // 10), target.smem_per_block, resident=flags.get("RESIDENT", True),
        fused=flags.get("ATOMIC_DH", False))
    return [(c.kwargs["BLOCK_T"], c.kwargs["BLOCK_V"], c.num_warps, c.num_stages) for c in kept]


def kernel_cases(shapes, target: Target, dtype: str = "bf16", softcap: tuple[bool, ...] = (False,),
                 kernels: tuple[str, ...] = tuple(KERNELS)) -> list[Case]:
    """Every (variant, kept config) the launch code can compile for these shapes on ``target``."""
    cases = []
    for variant in planned_variants(shapes, target, dtype, softcap):
        if variant.kernel in kernels:
            cases.extend(Case(variant, *cfg) for cfg in kept_configs(variant, target))
    return cases


# ------------------------------------------------------------------------------- compiling

def toolchain_missing() -> str | None:
    """Why triton cannot compile for NVIDIA GPUs here (None when it can): no NVIDIA backend in
    this triton, or no ptxas for it."""
    try:
        from triton import knobs  # noqa: PLC0415
        from triton.backends import backends  # noqa: PLC0415
    except ImportError as err:
        return f"triton is not importable ({err})"
    if "nvidia" not in backends:
        return "this triton has no NVIDIA backend"
    for tool in ("ptxas", "ptxas_blackwell"):
        try:
            path = getattr(knobs.nvidia, tool).path
        except Exception as err:  # noqa: BLE001 - any failure to locate the tool means no tool
            return f"triton's {tool} is unavailable ({err})"
        if not (path and os.access(path, os.X_OK)):
            return f"triton's {tool} is missing ({path})"
    return None


def _kernel_fn(name: str):
    import triton  # noqa: PLC0415

    if name in KERNELS:
        module, attr = "scaling_kernels.lce_triton_kernels", KERNELS[name]
    else:
        module, attr = name.split(":")
    fn = getattr(importlib.import_module(module), attr)
    if not isinstance(fn, triton.runtime.jit.JITFunction):
        raise RuntimeError(f"{name} is not a @triton.jit function here ({type(fn).__name__}): this process "
                           "imported triton with TRITON_INTERPRET=1; use compile_isolated")
    return fn


def _signature(fn, variant: Variant, constexprs: dict) -> tuple[dict, dict]:
    pointers = dict(_FIXED_POINTERS, **dict(variant.pointers))
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + pointers.get(name, variant.dtype)
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "softcap":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"  # every length and stride below 2^31: the products are what can overflow
            if _DIVISIBLE.match(name):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def _ptxas_number(log: str, pattern: str) -> int:
    found = re.search(pattern, log)
    return int(found.group(1)) if found else 0


def compile_case(case: Case, target: Target) -> AotResult:
    """Compile one case for ``target`` in this process (its kernels must be real @triton.jit
    functions: TRITON_INTERPRET unset before triton was imported). Every compile is fresh (an
    empty cache directory), so ptxas runs and its resource report is read."""
    import triton  # noqa: PLC0415
    from triton import knobs  # noqa: PLC0415
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    start = time.perf_counter()
    fn = _kernel_fn(case.variant.kernel)
    tiles = {"BLOCK_T": case.block_t, "BLOCK_V": case.block_v}
    constexprs = dict(case.variant.constexprs(), **{k: v for k, v in tiles.items() if k in fn.arg_names})
    sig, attrs = _signature(fn, case.variant, constexprs)
    ptxas_log = io.StringIO()
    saved = knobs.cache.dir, knobs.nvidia.dump_ptxas_log
    try:
        with tempfile.TemporaryDirectory(prefix="lce-aot-") as cache_dir, contextlib.redirect_stdout(ptxas_log):
            knobs.cache.dir, knobs.nvidia.dump_ptxas_log = cache_dir, True  # triton prints ptxas -v
            compiled = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", target.arch, 32),
                                      options=dict(num_warps=case.num_warps, num_stages=case.num_stages))
    except Exception as err:  # noqa: BLE001 - a kernel that does not compile is a result
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return AotResult(case, target.name, time.perf_counter() - start, error=f"{type(err).__name__}: {first[:300]}")
    finally:
        knobs.cache.dir, knobs.nvidia.dump_ptxas_log = saved
    log = ptxas_log.getvalue()
    if "Used " not in log:
        raise RuntimeError(f"no ptxas resource report for {case.variant.label} {case.config}: {log[:300]!r}")
    widths = _merge(offset_widths(compiled.asm["ttir"]), offset_widths(compiled.asm["ttgir"]))
    return AotResult(case, target.name, time.perf_counter() - start, None,
                     registers=_ptxas_number(log, r"Used (\d+) registers"),
                     spill_bytes=_ptxas_number(log, r"(\d+) bytes spill stores"),
                     stack_bytes=_ptxas_number(log, r"(\d+) bytes stack frame"),
                     smem_bytes=compiled.metadata.shared, offsets=widths)


def occupancy(result: AotResult) -> int:
    """Blocks per SM that registers (allocated per warp in units of 256) and shared memory (with
    the 1 KiB CUDA reserves per block) allow. On Hopper Triton waits for each wgmma right after
    issuing it, so a kernel's exponentials overlap tensor-core work only across co-resident blocks."""
    target = TARGETS[result.target]
    per_warp = -(-result.registers * 32 // 256) * 256
    by_regs = target.regs_per_sm // max(per_warp * result.case.num_warps, 1)
    by_smem = target.smem_per_sm // (result.smem_bytes + 1024)
    return min(by_regs, by_smem, 32)


# ---------------------------------------------------------------------- 64-bit offsets in the IR

_LOC_DEF = re.compile(r"^(#loc\d*) = loc\((.*)\)\s*$")
_OP = re.compile(r"^\s*(%[\w.$-]+) = ([a-z_]+\.[a-z_.]+) (.*)$")
_ATTR_DICT = re.compile(r"\{[^{}]*\}")
_TRAILING_LOC = re.compile(r"\s+loc\((.*)\)\s*$")
_INT_WIDTH = re.compile(r"(?:^|[x<\s])i(\d+)\b")
# ops that carry a value unchanged into another shape, layout or width: an offset argument seen
# through them is still that argument
_PASS_THROUGH = {"arith.extsi", "arith.extui", "tt.splat", "tt.broadcast", "tt.expand_dims", "tt.reshape",
                 "ttg.convert_layout"}


def _source_line(loc: str, locs: dict[str, str], depth: int = 0) -> str:
    """file:line of an MLIR location (named, call-site and aliased locations resolved)."""
    loc = loc.strip()
    if depth > 20:
        return "?"
    found = re.match(r'^"([^"]+)":(\d+):\d+', loc)
    if found:
        return f"{os.path.basename(found.group(1))}:{found.group(2)}"
    found = re.match(r"^callsite\((#loc\d*|.*?) at ", loc)  # the callee's line: where the arithmetic is
    if found:
        return _source_line(found.group(1), locs, depth + 1)
    found = re.match(r'^"[^"]*"\((.*)\)$', loc)
    if found:
        return _source_line(found.group(1), locs, depth + 1)
    if loc in locs:
        return _source_line(locs[loc], locs, depth + 1)
    return "?"


def offset_widths(ir: str) -> OffsetWidths:
    """The width of every integer multiply by an offset argument (OFFSET_SCALES: strides and T) in
    Triton IR (TTIR or TTGIR text). A multiply reaches the argument through ops that only reshape,
    splat or widen it. 32-bit ones are where an offset of more than 2^31 elements would wrap."""
    locs, ops, args = {}, {}, set()
    for line in ir.splitlines():
        found = _LOC_DEF.match(line)
        if found:
            locs[found.group(1)] = found.group(2)
            continue
        if "tt.func" in line:
            args |= {name for name, _ in re.findall(r"%(\w+): (i\d+)", line)}
            continue
        found = _OP.match(line)
        if found:
            value, op, rest = found.groups()
            loc = _TRAILING_LOC.search(rest)
            rest = _ATTR_DICT.sub("", rest[: loc.start()] if loc else rest)
            operands, _, result_type = rest.partition(" : ")
            ops[value] = (op, re.findall(r"%[\w.$-]+", operands), result_type, loc.group(1) if loc else "")
    scales = {a for a in args if OFFSET_SCALES.match(a)}

    def scale_of(value: str, depth: int = 0) -> str | None:
        if value[1:] in scales:
            return value[1:]
        op = ops.get(value)
        if op is None or op[0] not in _PASS_THROUGH or depth > 50:
            return None
        return scale_of(op[1][0], depth + 1)

    wide: dict[str, int] = {}
    narrow = []
    for op, operands, result_type, loc in ops.values():
        if op != "arith.muli":
            continue
        for arg in {s for s in map(scale_of, operands) if s}:
            width = _INT_WIDTH.search(result_type)
            if width and int(width.group(1)) >= 64:
                wide[arg] = wide.get(arg, 0) + 1
            else:
                narrow.append(f"{arg} at {_source_line(loc, locs)}")
    strides = {a for a in scales if a.startswith("stride_") and any(f"%{a}" in o for _, o, _, _ in ops.values())}
    return OffsetWidths(tuple(sorted(wide.items())), tuple(sorted(set(narrow))), tuple(sorted(strides - set(wide))))


def _merge(a: OffsetWidths, b: OffsetWidths) -> OffsetWidths:
    """Both IR levels' findings (TTGIR is what LLVM lowers; TTIR is the kernel as written)."""
    wide = {k: max(v, dict(b.wide).get(k, 0)) for k, v in a.wide}
    wide.update({k: v for k, v in b.wide if k not in wide})
    return OffsetWidths(tuple(sorted(wide.items())), tuple(sorted(set(a.narrow) | set(b.narrow))),
                        tuple(sorted(set(a.unscaled) | set(b.unscaled))))


# ---------------------------------------------------------------------- a process of its own

def _to_json(case: Case) -> dict:
    return dataclasses.asdict(case)


def _case_from_json(data: dict) -> Case:
    v = data["variant"]
    variant = Variant(v["kernel"], v["label"], v["dtype"], tuple(map(tuple, v["flags"])), tuple(map(tuple, v["pointers"])))
    return Case(variant, data["block_t"], data["block_v"], data["num_warps"], data["num_stages"])


def _result_from_json(data: dict) -> AotResult:
    offsets = OffsetWidths(tuple(map(tuple, data["offsets"]["wide"])), tuple(data["offsets"]["narrow"]),
                           tuple(data["offsets"]["unscaled"]))
    return AotResult(**dict(data, case=_case_from_json(data["case"]), offsets=offsets))


def compile_isolated(cases: list[Case], target: Target, timeout: float = 600.0,
                     pythonpath: tuple[str, ...] = ()) -> list[AotResult]:
    """``compile_case`` for each case, in a fresh Python process without TRITON_INTERPRET (so the
    kernels are real @triton.jit functions whatever this process imported). ``pythonpath``: extra
    import roots, for kernels named "module:function"."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix="lce-aot-") as tmp:
        out = os.path.join(tmp, "results.json")
        proc = subprocess.run([sys.executable, "-m", "scaling_kernels.lce_aot", "--target", target.name, "--out", out],
                              input=json.dumps([_to_json(c) for c in cases]), capture_output=True, text=True,
                              env=env, timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"AOT compile process failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        with open(out) as f:
            return [_result_from_json(r) for r in json.load(f)]


def main(argv: list[str] | None = None) -> int:
    """Worker: JSON cases on stdin, JSON results into --out (stdout is left to triton)."""
    parser = argparse.ArgumentParser(prog="python -m scaling_kernels.lce_aot", description=main.__doc__)
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    cases = [_case_from_json(c) for c in json.load(sys.stdin)]
    results = [dataclasses.asdict(compile_case(c, TARGETS[args.target])) for c in cases]
    with open(args.out, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
