"""Triton backend of the fused linear + cross-entropy loss (``impl="triton"``): launchers,
autotuning and the warm-up entry point. Kernels live in ``lce_triton_kernels``; every decision
about splits, chunks and backward schemes is made by ``lce_plan`` (pure Python, CPU-tested).

Implements the backend contract documented in ``lce_reference`` (same math, same signatures)
without ever materialising the (tokens x vocab) logits:

* ``lse_forward``: one launch of ``_fwd_kernel`` (token tiles x vocab splits x heads) writes lse
  (or per-split partials merged here) and the target logit (gather-dot, split 0 only).
* ``grads``: the backward scheme of ``lce_plan.plan_backward``: 'fused' (one vocab-owner launch
  per group of heads or token chunk, dH through fp32 atomics), 'owners' (a token-owner dH launch and a vocab-owner
  dW launch) or 'supertile' (G buffer + cuBLAS, see ``_grads_supertile``).

Autotuning and memory. Configs are benchmarked the first time a kernel sees a key: (d, token
bucket, vocab bucket, flags, dtypes), where buckets are powers of two of K*T and V, so a new T
inside a bucket never retunes. Triton's benchmarking allocates a 256 MiB L2-flush buffer, and
kernels that accumulate get their outputs zeroed or copied while configs are tried; call
``prepare(...)`` (exported as ``scaling_kernels.prepare_linear_cross_entropy``) with the shapes a
run will use, before the step whose memory is measured or planned, so none of that lands in it.
Under ``TRITON_INTERPRET=1`` (CPU tests) nothing is autotuned: small fixed tiles run instead.

Plans. Each backward asks ``lce_plan`` for its scheme, passing the per-GPU plan cache's lookup
(``lce_plan_cache``, keyed by ``device_identity``): a scheme measured on this GPU at this shape wins
over the default. ``plans_used()`` lists, per shape bucket, the plan this process followed and
where its scheme came from (measured / default / requested).

Tile configs below are ASSUMPTIONS AWAITING A GPU: per GPU family (Hopper: sizes that suit wgmma,
128-wide M tiles, 64-256 wide N, 2-4 pipeline stages; Ampere: smaller tiles at d <= 256) and d
class, each checked ahead of time for sm_90 and sm_80 by tests/test_kernels_aot.py (compiles, no
register spills, shared memory within the target's limit, 64-bit offsets).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
from torch import Tensor

from . import lce_plan, lce_plan_cache
from .lce_plan import BackwardPlan
from .lce_triton_kernels import _dh_kernel, _dw_kernel, _fwd_kernel, _g_tile_kernel

__all__ = ["lse_forward", "grads", "prepare", "backward_plan", "shape_plan", "device_identity", "plans_used",
           "tuned_configs", "INTERPRET"]

# Read once: @triton.jit decides at decoration time whether to interpret.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Under the interpreter: small tiles, and small split / chunk granularity so that tiny test
# shapes still exercise vocab splits, tails and atomics.
_INTERPRET_TILES = dict(BLOCK_T=16, BLOCK_V=32)
_INTERPRET_STREAM_D = 16
_INTERPRET_SMS = 1  # a one-SM "GPU": the default scheme stays fused on tiny vocabularies, splits still happen
_INTERPRET_SPLIT = 128
STREAM_BLOCK_D = 64  # d slice of the streaming (large-d) kernels


def _pow2(n: int) -> int:
    return lce_plan.bucket(max(n, 16))


def _block_d(args: dict) -> int:
    if args.get("RESIDENT", True):
        return _pow2(args["D"])
    return STREAM_BLOCK_D


def _even_d(args: dict) -> bool:
    return args["D"] % args["BLOCK_D"] == 0


def _dim_class(dim: int, resident: bool) -> str:
    if not resident or dim > lce_plan.MAX_RESIDENT_D:
        return "stream"
    return "128" if dim <= 128 else "256"


def config_family(major: int) -> str:
    """Which config table column a GPU of compute capability ``major``.x takes: '90' where Triton
    lowers tl.dot to wgmma or tcgen05 (Hopper; Blackwell data-centre parts, unchecked), '80' where
    it lowers to mma.sync (Ampere, Ada, consumer Blackwell), where the same tiles need more
    registers: most configs checked for sm_90 at d <= 256 spill when compiled for sm_80."""
    return "90" if major in (9, 10) else "80"


@functools.lru_cache(maxsize=None)
def _device_limits(device_index: int) -> tuple[str, int]:
    """(config family, opt-in shared memory per block in bytes) of a CUDA device."""
    major, _ = torch.cuda.get_device_capability(device_index)
    props = triton.runtime.driver.active.utils.get_device_properties(device_index)
    return config_family(major), props["max_shared_mem"]


def offered_configs(configs, table: list[tuple], owned: str, dim: int, elt: int, family: str, smem_limit: int,
                    resident: bool = True, fused: bool = False) -> list:
    """The configs a kernel's autotuner tries on one GPU: those its table offers to this GPU family
    and d class, then those whose on-chip tiles fit: the owned [tile, d] operand plus num_stages
    buffers of the streamed one within ``smem_limit`` (this matters for fp32 inputs, twice the bytes
    of the bf16 the tables were checked with). ``owned``: 'BLOCK_T' or 'BLOCK_V', the tile a program
    keeps for its whole loop; '' when all of d streams. ``fused``: the fused scheme's dW kernel."""
    meant_for = {tuple(entry[:4]): set(entry[4].get(family, "").split()) for entry in table}
    cls = _dim_class(dim, bool(owned) and resident) + ("f" if fused else "")
    kept = []
    for cfg in configs:
        bt, bv = cfg.kwargs["BLOCK_T"], cfg.kwargs["BLOCK_V"]
        if cls not in meant_for[(bt, bv, cfg.num_warps, cfg.num_stages)]:
            continue
        if cls == "stream":
            smem = cfg.num_stages * (bt + bv) * STREAM_BLOCK_D * elt
        else:
            own, other = (bt, bv) if owned == "BLOCK_T" else (bv, bt)
            smem = (own + cfg.num_stages * other) * _pow2(dim) * elt
        if smem <= smem_limit:
            kept.append(cfg)
    if elt == 4 or not kept:
        # fp32 inputs are the exactness path (tests), not the fast one: a true-fp32 dot does not
        # use tensor cores, and unrolled it compiles for minutes per config, so one small config
        return [min(kept or configs, key=lambda c: c.kwargs["BLOCK_T"] * c.kwargs["BLOCK_V"] * c.num_stages)]
    return kept


def _prune(owned: str, table: list[tuple]):
    """The autotuner's early pruning: ``offered_configs`` for the GPU holding the inputs."""
    def prune(configs, named_args, **kwargs):
        h = named_args["h_ptr"]
        family, smem_limit = _device_limits(h.device.index)
        return offered_configs(configs, table, owned, named_args["D"], h.element_size(), family, smem_limit,
                               resident=kwargs.get("RESIDENT", True), fused=kwargs.get("ATOMIC_DH", False))
    return prune


def _configs(entries) -> list[triton.Config]:
    return [triton.Config({"BLOCK_T": bt, "BLOCK_V": bv}, num_warps=w, num_stages=s) for bt, bv, w, s, _ in entries]


# (BLOCK_T, BLOCK_V, num_warps, num_stages, {GPU family: d classes}). Families: see config_family.
# Classes: '128' = resident d <= 128, '256' = resident d <= 256, 'stream' = d sliced by
# STREAM_BLOCK_D; the fused scheme's dW kernel, which also holds a dH share on chip, has its own
# '128f' and '256f'. Each config offered to a family compiles for its target (sm_80 = A100,
# sm_90 = H100) in bf16 without register spills, in every form the planner launches (soft-cap,
# odd d, vocab splits), within that target's shared memory per block: tests/test_kernels_aot.py
# checks each in its most demanding form, benchmarks/compile_lce_sm90.py --softcap compiles every
# form and prints the table. On Hopper some are there because
# they leave room for 2-3 blocks per SM, which is how a block's exponentials overlap another's
# tensor-core work (Triton waits for each wgmma right after issuing it). At 128 < d <= 256 the
# fused dW kernel spills on both at larger tiles (Hopper: 64 x 64 spilled 4 B in one of its six
# forms; Ampere: every tile tried above 32 x 16 or 16 x 32 with 8 warps), and on Ampere the other
# d <= 256 kernels need smaller tiles or more warps than on Hopper. Few per family
# and class, so tuning a new bucket takes seconds. Which is fastest is the autotuner's call on
# the GPU: these are candidates, not measurements. The smallest configs are there for fp32
# inputs, whose tiles take twice the shared memory.
_FWD_CONFIGS = [
    (128, 128, 8, 3, {"90": "128 stream", "80": "stream"}),
    (128, 64, 8, 3, {"90": "128 256", "80": "128 stream"}),
    (64, 128, 4, 3, {"90": "128 stream", "80": "stream"}),
    (128, 256, 8, 2, {"90": "stream"}),
    (64, 64, 4, 3, {"90": "128 256", "80": "128 stream"}),
    (128, 64, 8, 4, {"90": "256"}),
    (64, 32, 4, 2, {"90": "128 256", "80": "128 256"}),
    (64, 128, 8, 3, {"80": "128"}),
    (64, 64, 8, 3, {"80": "128 256"}),
    (128, 32, 8, 3, {"80": "128 256"}),
    (64, 64, 8, 4, {"80": "256"}),
    (64, 32, 8, 3, {"80": "256"}),
]
_DH_CONFIGS = [
    (128, 64, 8, 3, {"90": "128", "80": "128"}),
    (64, 64, 4, 3, {"90": "128"}),
    (128, 32, 8, 3, {"90": "256", "80": "128"}),
    (64, 32, 4, 2, {"90": "128 256"}),
    (64, 64, 8, 3, {"90": "128 256", "80": "128"}),
    (64, 32, 8, 3, {"90": "256", "80": "128"}),
    (32, 64, 4, 3, {"80": "128"}),
    (32, 64, 8, 3, {"80": "256"}),
    (32, 128, 8, 2, {"80": "256"}),
    (32, 32, 8, 3, {"80": "256"}),
]
# the vocab owner keeps [BLOCK_V, d] of W and of dW (fused: also a [BLOCK_T, d] dH share) on chip
_DW_CONFIGS = [
    (64, 128, 8, 3, {"90": "128 128f"}),
    (64, 64, 8, 3, {"90": "128 128f", "80": "128"}),
    (32, 64, 8, 3, {"90": "128 128f 256", "80": "128"}),
    (32, 128, 8, 3, {"90": "128 128f", "80": "128 128f"}),
    (32, 64, 4, 3, {"90": "128 128f"}),
    (64, 32, 4, 2, {"90": "128 128f", "80": "128"}),
    (64, 32, 8, 3, {"90": "256", "80": "128f"}),
    (32, 128, 8, 2, {"90": "256", "80": "128f"}),
    (16, 64, 8, 3, {"90": "256f"}),
    (16, 64, 8, 2, {"90": "256f"}),
    (32, 16, 8, 3, {"90": "256f"}),
    (32, 32, 8, 3, {"80": "128f"}),
    (32, 32, 4, 3, {"80": "128"}),
    (32, 32, 4, 2, {"80": "128f 256"}),
    (16, 128, 8, 3, {"80": "128f"}),
    (32, 32, 8, 2, {"80": "256"}),
    (64, 32, 8, 2, {"80": "256"}),
    (16, 32, 8, 3, {"80": "256"}),
    (16, 32, 8, 2, {"80": "256f"}),
    (32, 16, 8, 2, {"80": "256f"}),
    (16, 16, 8, 2, {"80": "256f"}),
]
_G_CONFIGS = [
    (128, 128, 8, 4, {"90": "stream", "80": "stream"}),
    (64, 128, 4, 4, {"90": "stream", "80": "stream"}),
    (64, 256, 8, 3, {"90": "stream", "80": "stream"}),
    (128, 128, 8, 3, {"80": "stream"}),
]
# per kernel: the tile it keeps for its whole loop (as offered_configs takes it) and its table
AUTOTUNED = {"fwd": ("BLOCK_T", _FWD_CONFIGS), "dh": ("BLOCK_T", _DH_CONFIGS), "dw": ("BLOCK_V", _DW_CONFIGS),
             "g": ("", _G_CONFIGS)}
_KEY = ["D", "TOK_BUCKET", "VOC_BUCKET", "HAS_SOFTCAP"]

if INTERPRET:
    _fwd, _dh, _dw, _g_tile = _fwd_kernel, _dh_kernel, _dw_kernel, _g_tile_kernel
else:  # pragma: no cover - needs a GPU
    _fwd = triton.autotune(_configs(_FWD_CONFIGS), key=_KEY + ["RESIDENT", "SINGLE_SPLIT"],
                           prune_configs_by={"early_config_prune": _prune(*AUTOTUNED["fwd"])})(
        triton.heuristics({"BLOCK_D": _block_d, "EVEN_D": _even_d})(_fwd_kernel))
    # kernels that add into their outputs get them zeroed (or restored) around each tried config
    _dh = triton.autotune(_configs(_DH_CONFIGS), key=_KEY + ["ATOMIC"], reset_to_zero=["dh_ptr"],
                          prune_configs_by={"early_config_prune": _prune(*AUTOTUNED["dh"])})(
        triton.heuristics({"BLOCK_D": _block_d, "EVEN_D": _even_d})(_dh_kernel))
    _dw = triton.autotune(_configs(_DW_CONFIGS), key=_KEY + ["ATOMIC_DH", "ACCUMULATE"], reset_to_zero=["dh_ptr"],
                          restore_value=["dw_ptr"],
                          prune_configs_by={"early_config_prune": _prune(*AUTOTUNED["dw"])})(
        triton.heuristics({"BLOCK_D": _block_d, "EVEN_D": _even_d})(_dw_kernel))
    _g_tile = triton.autotune(_configs(_G_CONFIGS), key=_KEY,
                              prune_configs_by={"early_config_prune": _prune(*AUTOTUNED["g"])})(
        triton.heuristics({"BLOCK_D": lambda args: STREAM_BLOCK_D, "EVEN_D": _even_d})(_g_tile_kernel))


def _meta(dtype: torch.dtype, dim: int, resident: bool = True) -> dict:
    """Compile-time flags; tile sizes only when not autotuned (the interpreter)."""
    interp_bf16 = INTERPRET and dtype != torch.float32
    # fp32 inputs: true fp32 dot (no TF32) so fp32 results match the fp32 oracle.
    meta = dict(INTERP_BF16=interp_bf16, PRECISION="ieee" if (dtype == torch.float32 or interp_bf16) else "tf32")
    if INTERPRET:
        block_d = _pow2(dim) if resident else _INTERPRET_STREAM_D
        meta.update(_INTERPRET_TILES, BLOCK_D=block_d, EVEN_D=dim % block_d == 0)
    return meta


def _check_device(t: Tensor) -> None:
    if not (t.is_cuda or INTERPRET):
        raise RuntimeError(
            "impl='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton and "
            "scaling_kernels' Triton backend are first imported (CPU interpreter, for tests)")


@functools.lru_cache(maxsize=None)
def _sms(device_index: int | None) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_sms(device: torch.device) -> int:
    if INTERPRET:
        return _INTERPRET_SMS
    return _sms(device.index if device.index is not None else torch.cuda.current_device())


def _split_args() -> dict:
    return dict(split_align=_INTERPRET_SPLIT, min_split_v=_INTERPRET_SPLIT) if INTERPRET else {}


# ------------------------------------------------------------------------------------ forward

def lse_forward(h: Tensor, w: Tensor, y: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    _check_device(h)
    heads, tokens, dim = h.shape
    vocab = w.shape[1]
    lse = torch.empty((heads, tokens), dtype=torch.float32, device=h.device)
    tgt = torch.empty((heads, tokens), dtype=torch.float32, device=h.device)
    if tokens == 0:
        return lse, tgt
    plan = lce_plan.plan_forward(heads, tokens, dim, vocab, _num_sms(h.device), **_split_args())
    split = plan.n_split > 1
    m = torch.empty((plan.n_split, heads, tokens), dtype=torch.float32, device=h.device) if split else lse
    l = torch.empty_like(m) if split else lse  # noqa: E741
    grid = lambda meta: (triton.cdiv(tokens, meta["BLOCK_T"]), plan.n_split, heads)  # noqa: E731
    _fwd[grid](h, w, y, lse, tgt, m, l, tokens, vocab, dim, plan.v_per_split, h.stride(0), h.stride(1),
               w.stride(0), w.stride(1), float(softcap), plan.tok_bucket, plan.voc_bucket,
               HAS_SOFTCAP=softcap > 0.0, RESIDENT=plan.resident, SINGLE_SPLIT=not split,
               **_meta(h.dtype, dim, plan.resident))
    if split:  # merge the splits' (max, sum) pairs, both in log2 units
        m_max = m.max(dim=0).values
        lse = (m_max + torch.log2((l * torch.exp2(m - m_max)).sum(dim=0))) * 0.6931471805599453
    return lse, tgt


# ----------------------------------------------------------------------------------- backward

def grads(h: Tensor, w: Tensor, y: Tensor, lse: Tensor, dlse: Tensor, dtgt: Tensor, softcap: float,
          scheme: str = "auto") -> tuple[Tensor, Tensor]:
    _check_device(h)
    heads, tokens, dim = h.shape
    plan = backward_plan(h, w, scheme)
    if tokens == 0:
        return torch.zeros_like(h), torch.zeros_like(w)
    run = {"fused": _grads_fused, "owners": _grads_owners, "supertile": _grads_supertile}[plan.scheme]
    return run(plan, h, w, y, lse, dlse, dtgt, float(softcap))


def backward_plan(h: Tensor, w: Tensor, scheme: str = "auto") -> BackwardPlan:
    """The plan ``grads`` follows for these inputs (benchmarks print its scheme)."""
    heads, tokens, dim = h.shape
    return shape_plan(heads, tokens, dim, w.shape[1], h.dtype, h.device, scheme)


_plans_used: dict[tuple[str, str], BackwardPlan] = {}


def shape_plan(heads: int, tokens: int, dim: int, vocab: int, dtype: torch.dtype, device: torch.device,
               scheme: str = "auto") -> BackwardPlan:
    """The backward plan for a shape on a device: the plan cache's measured scheme when there is
    one (``scheme='auto'`` and no SCALING_KERNELS_LCE_BWD), else the planner's default."""
    elt = dtype.itemsize
    identity = device_identity(device)
    plan = lce_plan.plan_backward(heads, tokens, dim, vocab, elt, _num_sms(device), scheme,
                                  measured=lce_plan_cache.measured_lookup(identity), **_split_args())
    key = (lce_plan_cache.device_key(identity), lce_plan_cache.shape_key(heads, tokens, dim, vocab, elt))
    _plans_used[key] = plan
    return plan


def plans_used() -> dict[str, dict]:
    """{shape bucket: {'scheme', 'source'}} of the latest plan this process made per shape bucket
    (on its latest device)."""
    return {shape: {"scheme": plan.scheme, "source": plan.source} for (_, shape), plan in _plans_used.items()}


def device_identity(device: torch.device | str | None = None) -> dict:
    """What a measured plan is valid for: the GPU (name, SMs), torch and triton. Under the
    interpreter, a GPU of its own ('triton-interpreter'), so CPU tests exercise the cache."""
    if INTERPRET:
        return dict(_identity("triton-interpreter", _INTERPRET_SMS))
    device = torch.device(device if device is not None else "cuda")
    index = device.index if device.index is not None else torch.cuda.current_device()
    return dict(_gpu_identity(index))


@functools.lru_cache(maxsize=None)
def _gpu_identity(index: int) -> tuple:
    return _identity(torch.cuda.get_device_name(index), _sms(index))


def _identity(gpu: str, sms: int) -> tuple:
    return (("gpu", gpu), ("sms", sms), ("torch", torch.__version__), ("triton", triton.__version__))


def tuned_configs() -> dict[str, str]:
    """The tile config the autotuner picked last for each kernel that ran (empty under the
    interpreter, which runs fixed tiles): the block sizes a measured plan was timed with."""
    kernels = {"forward": _fwd, "dh": _dh, "dw": _dw, "g_tile": _g_tile}
    return {name: str(kernel.best_config) for name, kernel in kernels.items()
            if getattr(kernel, "best_config", None) is not None}


def _common(h: Tensor, w: Tensor, softcap: float) -> tuple[tuple, dict]:
    strides = (h.stride(0), h.stride(1), w.stride(0), w.stride(1))
    flags = dict(HAS_SOFTCAP=softcap > 0.0, **_meta(h.dtype, h.shape[2]))
    return strides, flags


def _grads_fused(plan: BackwardPlan, h, w, y, lse, dlse, dtgt, softcap):
    heads, tokens, dim = h.shape
    vocab = w.shape[1]
    strides, flags = _common(h, w, softcap)
    low_precision = h.dtype != torch.float32
    # fp32 inputs: atomics land in dH itself; bf16: in an fp32 buffer for one launch's heads and tokens
    dh = torch.zeros_like(h) if not low_precision else torch.empty_like(h)
    dh_buf = torch.empty((plan.head_group, plan.token_chunk, dim), dtype=torch.float32, device=h.device) \
        if low_precision else dh
    dw = torch.empty_like(w)
    dw_acc = torch.empty(w.shape, dtype=torch.float32, device=w.device) if plan.dw_fp32_acc else dw
    for k0 in range(0, heads, plan.head_group):
        k1 = min(k0 + plan.head_group, heads)
        grid = lambda meta: (triton.cdiv(vocab, meta["BLOCK_V"]), k1 - k0)  # noqa: E731
        for t0 in range(0, tokens, plan.token_chunk):
            t1 = min(t0 + plan.token_chunk, tokens)
            buf = dh_buf[: k1 - k0, : t1 - t0] if low_precision else None
            if buf is not None:
                buf.zero_()
            _dw[grid](h, w, y, lse, dlse, dtgt, dw_acc, dh_buf, tokens, vocab, dim, t0, t1,
                      t0 if low_precision else 0, k0, *strides, dw_acc.stride(0), dw_acc.stride(1),
                      dh_buf.stride(0), dh_buf.stride(1), softcap, plan.tok_bucket, plan.voc_bucket,
                      ATOMIC_DH=True, ACCUMULATE=t0 > 0, **flags)
            if buf is not None:
                dh[k0:k1, t0:t1] = buf
    if dw_acc is not dw:
        dw.copy_(dw_acc)
    return dh, dw


def _grads_owners(plan: BackwardPlan, h, w, y, lse, dlse, dtgt, softcap):
    heads, tokens, dim = h.shape
    vocab = w.shape[1]
    strides, flags = _common(h, w, softcap)
    atomic = plan.dh_splits > 1
    dh = torch.zeros_like(h) if atomic and h.dtype == torch.float32 else torch.empty_like(h)
    dh_out = torch.zeros(h.shape, dtype=torch.float32, device=h.device) if atomic and dh.dtype != torch.float32 else dh
    grid_t = lambda meta: (triton.cdiv(tokens, meta["BLOCK_T"]), plan.dh_splits, heads)  # noqa: E731
    _dh[grid_t](h, w, y, lse, dlse, dtgt, dh_out, tokens, vocab, dim, plan.dh_v_per_split, *strides,
                dh_out.stride(0), dh_out.stride(1), softcap, plan.tok_bucket, plan.voc_bucket,
                ATOMIC=atomic, **flags)
    if dh_out is not dh:
        dh.copy_(dh_out)
    dw = torch.empty_like(w)
    unused = torch.empty(1, dtype=torch.float32, device=h.device)  # dh_ptr: no atomics, and not dH (autotune zeroes it)
    grid_v = lambda meta: (triton.cdiv(vocab, meta["BLOCK_V"]), heads)  # noqa: E731
    _dw[grid_v](h, w, y, lse, dlse, dtgt, dw, unused, tokens, vocab, dim, 0, tokens, 0, 0, *strides,
                dw.stride(0), dw.stride(1), 0, 0, softcap, plan.tok_bucket, plan.voc_bucket,
                ATOMIC_DH=False, ACCUMULATE=False, **flags)
    return dh, dw


# ---------------------------------------------------------------- supertile scheme (large d)

_BADDBMM_FP32_OUT: bool | None = None  # cuBLAS accumulates bf16 products into fp32 in place; probed once


def _probe_baddbmm_fp32_out(device: torch.device) -> bool:
    """torch.baddbmm(acc32, a16, b16, out_dtype=float32, out=acc32) where supported (CUDA, torch >= 2.8),
    checked against a plain product: then no fp32 partial needs allocating per super-tile."""
    try:
        a = torch.randn(2, 8, 16, device=device).bfloat16()
        b = torch.randn(2, 16, 8, device=device).bfloat16()
        acc = torch.ones(2, 8, 8, device=device)
        torch.baddbmm(acc, a, b, out_dtype=torch.float32, out=acc)
        return bool(torch.allclose(acc, 1.0 + a.float() @ b.float(), rtol=1e-3, atol=1e-3))
    except (TypeError, RuntimeError):
        return False


def _add_matmul_(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b per head, the sum inside cuBLAS (beta = 1) whenever the dtypes allow."""
    global _BADDBMM_FP32_OUT
    if acc.dtype == a.dtype:
        acc.baddbmm_(a, b)
        return
    if not a.is_cuda:  # interpreter/tests only: exactness over speed
        acc += a.float() @ b.float()
        return
    if _BADDBMM_FP32_OUT is None:
        _BADDBMM_FP32_OUT = _probe_baddbmm_fp32_out(a.device)
    if _BADDBMM_FP32_OUT:
        torch.baddbmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:  # older torch: the partial is rounded to bf16 once per super-tile
        acc += (a @ b).float()


def _grads_supertile(plan: BackwardPlan, h, w, y, lse, dlse, dtgt, softcap):
    """Super-tiles of tc tokens x vc vocab (``lce_plan``): ``_g_tile_kernel`` writes G in the input
    dtype into a bounded buffer, then two batched cuBLAS GEMMs add dH[tc] += G W[vc] and
    dW[vc] += G^T H[tc]. Tokens outer, vocab inner, so each chunk's dH is complete (fp32) before
    it is written once; dW sums over token chunks in fp32 when that fits, else in its own dtype."""
    heads, tokens, dim = h.shape
    vocab = w.shape[1]
    tc, vc = plan.token_chunk, plan.vocab_chunk
    low_precision = h.dtype != torch.float32
    dh = torch.zeros_like(h) if not low_precision else torch.empty_like(h)
    dw_acc = torch.zeros((heads, vocab, dim), dtype=torch.float32, device=w.device) if plan.dw_fp32_acc \
        else torch.zeros_like(w)
    g_buf = torch.empty((heads, tc, vc), dtype=h.dtype, device=h.device)
    dh_acc = torch.empty((heads, tc, dim), dtype=torch.float32, device=h.device) if low_precision else None
    meta = dict(HAS_SOFTCAP=softcap > 0.0, **_meta(h.dtype, dim, resident=False))
    for t0 in range(0, tokens, tc):
        t1 = min(t0 + tc, tokens)
        acc_h = dh_acc[:, : t1 - t0].zero_() if low_precision else dh[:, t0:t1]
        for v0 in range(0, vocab, vc):
            v1 = min(v0 + vc, vocab)
            g_tile = g_buf[:, : t1 - t0, : v1 - v0]
            grid = lambda m: (triton.cdiv(v1 - v0, m["BLOCK_V"]),  # noqa: E731
                              triton.cdiv(t1 - t0, m["BLOCK_T"]), heads)
            _g_tile[grid](h, w, y, lse, dlse, dtgt, g_buf, tokens, t0, t1, v0, v1, dim, h.stride(0), h.stride(1),
                          w.stride(0), w.stride(1), g_buf.stride(0), g_buf.stride(1), softcap,
                          plan.tok_bucket, plan.voc_bucket, **meta)
            _add_matmul_(acc_h, g_tile, w[:, v0:v1])
            _add_matmul_(dw_acc[:, v0:v1], g_tile.transpose(1, 2), h[:, t0:t1])
        if low_precision:
            dh[:, t0:t1] = acc_h
    return dh, dw_acc.to(w.dtype)


# ------------------------------------------------------------------------------------ warm-up

def prepare(shapes, dtype: torch.dtype = torch.bfloat16, softcap: float = 0.0, scheme: str = "auto",
            device: torch.device | str | None = None) -> int:
    """Autotune, now, every kernel one forward + backward will launch for each (K, T, d, V) in
    ``shapes`` (K heads of T tokens; K = 1 for a single loss), so that a later step of those shapes
    (or any in the same buckets) neither benchmarks configs nor allocates Triton's 256 MiB
    L2-flush buffer. Returns how many shapes were run; 0 without CUDA (nothing to tune)."""
    if INTERPRET or not torch.cuda.is_available():
        return 0
    device = torch.device(device if device is not None else "cuda")
    done = 0
    for heads, tokens, dim, vocab in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        h = torch.randn(heads, tokens, dim, device=device, generator=gen).to(dtype)
        w = (torch.randn(heads, vocab, dim, device=device, generator=gen) * dim**-0.5).to(dtype)
        y = torch.randint(0, vocab, (heads, tokens), device=device, generator=gen)
        lse, _ = lse_forward(h, w, y, softcap)
        weight = torch.full_like(lse, 1.0 / max(tokens, 1))
        grads(h, w, y, lse, weight, -weight, softcap, scheme)
        done += 1
    torch.cuda.synchronize(device)
    return done
