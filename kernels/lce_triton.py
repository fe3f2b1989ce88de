"""Triton backend of the fused linear + cross-entropy loss (``impl="triton"``).

Implements the backend contract documented in ``lce_reference`` (same math,
same signatures) without ever materialising the (tokens x vocab) logits.

Design
------
Forward (``_lse_fwd_kernel``): one program owns a tile of BLOCK_T tokens and a
contiguous slice of the vocabulary ("split"). It loops over BLOCK_V vocab
tiles, computes each logits tile with ``tl.dot`` over BLOCK_D slices of the
hidden size (fp32 accumulator), soft-caps it, and folds it into an online
log-sum-exp (running max ``m`` and rescaled sum ``s``), picking out the target
logit on the way. Only (m, s, target) per (split, token) reach memory; a tiny
torch epilogue merges the splits. Splitting the vocabulary keeps the GPU full
when there are few token tiles (small proxies) at the cost of 12 bytes per
token per split. Cost: one GEMM's worth of FLOPs, no HBM traffic for logits.

Backward (recompute; "super-tiles" + two GEMMs): the plane (tokens x vocab) is
walked in super-tiles of ``tc x vc`` (a few thousand each, bounded by
``G_BUFFER_BYTES``). For each super-tile ``_grad_logits_kernel`` recomputes the
logits tile by tile from the saved lse and writes
``G = g_t * (p * (1 + 2 z lse) - onehot) * (1 - tanh^2)`` in the input dtype
into a bounded buffer; two cuBLAS GEMMs then do ``dH[tc] += G @ W[vc]`` and
``dW[vc] += G^T @ H[tc]``. Loop order: tokens outer, vocab inner, so each
token chunk's dH is finished in an fp32 accumulator of ``tc x d`` and written
once; dW is accumulated in fp32 when ``V x d x 4`` fits ``DW_FULL_ACC_BYTES``,
otherwise straight into the (bf16) gradient with cuBLAS beta=1, i.e. one
bf16 rounding per token chunk (fp32 inside each chunk).

Why not a single fused backward with atomics (CCE style) or two owner
kernels? With d up to a few thousand, the per-tile dH/dW partials cannot live
in registers, so any tile-granular scheme moves ~T*V*d*(1/BLOCK_T + 1/BLOCK_V)
fp32 partials through L2 (atomics or read-modify-write): ~26 GB for
(16384, 512, 50304), several times the matmul time. Two owner kernels without
atomics recompute the logits twice (5 GEMMs, >= 1.67x the 3-GEMM floor).
Super-tiles move only G (T*V*2 bytes written once, read twice, largely from
L2 because a G buffer is <= 24 MiB) and leave two of the four GEMMs to cuBLAS:
four GEMM-equivalents plus the G round trip. CCE's gradient filtering (skip
tiles where every p < 2^-12) is deliberately not used: at initialisation of a
from-scratch proxy the softmax is near-uniform (p ~ 1/V < 2^-12), so it would
drop almost all of the "push down" gradient.

Expected cost (a model, not yet measured on an H100): 4 GEMM-equivalents
(forward, recompute, dH, dW) = 1.33x the 3-GEMM floor, plus ~6 bytes of G
traffic per logit, which matters most at small d (d=512: ~+0.3x). Tile
configs are autotuned per (d, softcap, dtype); budgets below are tunable.

Extra memory (beyond inputs and the two gradients), bf16: G buffer (<= 24 MiB)
+ dH fp32 accumulator (<= 10 MiB) + dW fp32 accumulator only when it is
<= 12 MiB + one fp32 GEMM partial (<= 12 MiB) ~= 58 MiB, under the 64 MiB
target for every shape. fp32 inputs accumulate straight into the gradients.
GEMM partials are fp32 via ``torch.mm(out_dtype=)`` (torch >= 2.8, CUDA); on
older torch they are rounded to bf16 once per super-tile.

Heads: every kernel takes a leading axis of K independent heads (a pack of K proxies, each
with its own hidden states, weight, targets and z-loss; K = 1 for a single loss) as a third
grid axis, and the backward's GEMMs are batched over it. One launch covers all heads, so a
pack of K small proxies costs the launches of one: at d = 128 a head's super-tile is only a
few microseconds of GPU work, less than launching it, and per-head calls would leave the GPU
waiting on the host. The G buffer and dH budgets apply per head, up to PACK_G_BUFFER_CAP and
PACK_DH_ACC_CAP in total.

Under ``TRITON_INTERPRET=1`` (CPU tests) the kernels run unautotuned with small
fixed tiles, and the ``INTERP_BF16`` flag works around two interpreter bf16
bugs (``tl.dot`` reads the raw uint16 bits; fp32->bf16 casts truncate). On GPU
the flag is a compile-time False and costs nothing.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["lse_forward", "grads", "INTERPRET"]

# Read once: @triton.jit below decides at decoration time whether to interpret.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Backward workspace budgets (see module docstring); tests shrink them.
G_BUFFER_BYTES = 24 << 20
DH_ACC_BYTES = 10 << 20
DW_FULL_ACC_BYTES = 12 << 20
# A pack of K heads (linear_cross_entropy_heads) gets the G buffer and dH accumulator budgets once
# per head, up to these totals.
PACK_G_BUFFER_CAP = 256 << 20
PACK_DH_ACC_CAP = 128 << 20
MAX_TOKEN_CHUNK = 4096
CHUNK_ALIGN = 128  # chunk edges on multiples of every BLOCK_T / BLOCK_V config

# Forward: vocab split length is a multiple of the largest BLOCK_V so no tile
# straddles two splits.
_SPLIT_ALIGN = 256
_PROGRAMS_PER_SM = 4  # enough resident programs to hide the tile-loop latency

_INTERPRET_TILES = dict(BLOCK_T=16, BLOCK_V=32, BLOCK_D=16)


@triton.jit
def _tanh(x):
    # libdevice.tanh is not available under the interpreter; this form is
    # exact at +-inf and loses only absolute ~1e-7 near 0, far below bf16/fp32
    # logit resolution after multiplying by the cap.
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _rtne_bf16(x):
    # The interpreter's fp32->bf16 cast truncates (and its "rtne" mode is off by
    # an ulp half the time); pre-round to nearest-even on the bits so the cast
    # is exact, matching the GPU's rounding. Finite inputs only.
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _logits_tile(h_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_h, stride_w,
                 BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                 EVEN_D: tl.constexpr, INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    """fp32 (BLOCK_T, BLOCK_V) tile of h[rows] @ w[cols]^T."""
    offs_d = tl.arange(0, BLOCK_D)
    h_ptrs = h_ptr + rows.to(tl.int64)[:, None] * stride_h + offs_d[None, :]
    w_ptrs = w_ptr + cols.to(tl.int64)[:, None] * stride_w + offs_d[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_V), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        if EVEN_D:
            h = tl.load(h_ptrs, mask=row_mask[:, None], other=0.0)
            w = tl.load(w_ptrs, mask=col_mask[:, None], other=0.0)
        else:
            d_mask = (d0 + offs_d) < D
            h = tl.load(h_ptrs, mask=row_mask[:, None] & d_mask[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=col_mask[:, None] & d_mask[None, :], other=0.0)
        if INTERP_BF16:  # interpreter bf16 dot reads raw uint16 bits; fp32 dot of bf16 values is exact
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
        h_ptrs += BLOCK_D
        w_ptrs += BLOCK_D
    return acc


@triton.jit
def _lse_fwd_kernel(h_ptr, w_ptr, y_ptr, part_ptr, T, V, D, V_PER_SPLIT, stride_hk, stride_h, stride_wk,
                    stride_w, softcap, HAS_SOFTCAP: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                    EVEN_D: tl.constexpr, INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_s = tl.program_id(1)
    head = tl.program_id(2)  # heads of a pack: each its own hidden states, weight and targets
    n_split = tl.num_programs(1)
    n_head = tl.num_programs(2)
    h_ptr += head.to(tl.int64) * stride_hk
    w_ptr += head.to(tl.int64) * stride_wk
    y_ptr += head.to(tl.int64) * T
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = rows < T
    y = tl.load(y_ptr + rows, mask=row_mask, other=-1)
    m_i = tl.full((BLOCK_T,), float("-inf"), dtype=tl.float32)
    s_i = tl.zeros((BLOCK_T,), dtype=tl.float32)
    t_i = tl.zeros((BLOCK_T,), dtype=tl.float32)
    v_start = pid_s * V_PER_SPLIT
    v_end = tl.minimum(v_start + V_PER_SPLIT, V)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < v_end
        logits = _logits_tile(h_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_h, stride_w,
                              BLOCK_T, BLOCK_V, BLOCK_D, EVEN_D, INTERP_BF16, PRECISION)
        if HAS_SOFTCAP:
            logits = softcap * _tanh(logits / softcap)
        logits = tl.where(col_mask[None, :], logits, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, axis=1))
        s_i = s_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m_i = m_new
        # col_mask matters: a target in the next split must not pick up -inf here
        is_tgt = (cols[None, :] == y[:, None]) & col_mask[None, :]
        t_i += tl.sum(tl.where(is_tgt, logits, 0.0), axis=1)
    # part is [3, n_split, n_head, T]: (max, rescaled sum, target logit) per split, head and token
    plane = n_split.to(tl.int64) * n_head * T
    out = part_ptr + (pid_s.to(tl.int64) * n_head + head) * T + rows
    tl.store(out, m_i, mask=row_mask)
    tl.store(out + plane, s_i, mask=row_mask)
    tl.store(out + 2 * plane, t_i, mask=row_mask)


@triton.jit
def _grad_logits_kernel(h_ptr, w_ptr, y_ptr, lse_ptr, dlse_ptr, dtgt_ptr, out_ptr,
                        T, t0, t1, v0, v1, D, stride_hk, stride_h, stride_wk, stride_w, stride_ok, stride_out,
                        softcap, HAS_SOFTCAP: tl.constexpr,
                        BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                        EVEN_D: tl.constexpr, INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    # vocab tiles vary fastest: programs resident together share one token
    # tile, and the whole W chunk (vc x d) stays in L2 across token tiles.
    pid_v = tl.program_id(0)
    pid_t = tl.program_id(1)
    head = tl.program_id(2)
    h_ptr += head.to(tl.int64) * stride_hk
    w_ptr += head.to(tl.int64) * stride_wk
    y_ptr += head.to(tl.int64) * T
    lse_ptr += head.to(tl.int64) * T
    dlse_ptr += head.to(tl.int64) * T
    dtgt_ptr += head.to(tl.int64) * T
    out_ptr += head.to(tl.int64) * stride_ok
    rows = t0 + pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = v0 + pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    row_mask = rows < t1
    col_mask = cols < v1
    logits = _logits_tile(h_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_h, stride_w,
                          BLOCK_T, BLOCK_V, BLOCK_D, EVEN_D, INTERP_BF16, PRECISION)
    if HAS_SOFTCAP:
        th = _tanh(logits / softcap)
        logits = softcap * th
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    dlse = tl.load(dlse_ptr + rows, mask=row_mask, other=0.0)
    dtgt = tl.load(dtgt_ptr + rows, mask=row_mask, other=0.0)
    y = tl.load(y_ptr + rows, mask=row_mask, other=-1)
    p = tl.exp(logits - lse[:, None])
    grad = p * dlse[:, None] + tl.where(cols[None, :] == y[:, None], dtgt[:, None], 0.0)
    if HAS_SOFTCAP:
        grad = grad * (1.0 - th * th)
    if INTERP_BF16:
        grad = _rtne_bf16(grad)
    out = out_ptr + (rows - t0).to(tl.int64)[:, None] * stride_out + (cols - v0)[None, :]
    tl.store(out, grad.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


def _configs() -> list[triton.Config]:
    # H100-oriented: 128-wide token tiles and 128/256-wide vocab tiles feed
    # wgmma well; BLOCK_D 64 keeps the (BLOCK_T + BLOCK_V) x BLOCK_D smem stage
    # at <= 48 KiB for bf16 so 3-4 pipeline stages fit.
    return [
        triton.Config({"BLOCK_T": bt, "BLOCK_V": bv, "BLOCK_D": bd}, num_warps=w, num_stages=s)
        for bt, bv, bd, w, s in [
            (128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
            (64, 256, 64, 4, 4), (128, 128, 128, 8, 3), (64, 128, 64, 4, 4),
        ]
    ]


def _even_d(args: dict) -> bool:
    return args["D"] % args["BLOCK_D"] == 0


if INTERPRET:
    _lse_fwd = _lse_fwd_kernel
    _grad_logits = _grad_logits_kernel
else:  # pragma: no cover - needs a GPU
    _lse_fwd = triton.autotune(_configs(), key=["D", "HAS_SOFTCAP"])(
        triton.heuristics({"EVEN_D": _even_d})(_lse_fwd_kernel))
    _grad_logits = triton.autotune(_configs(), key=["D", "HAS_SOFTCAP"])(
        triton.heuristics({"EVEN_D": _even_d})(_grad_logits_kernel))


def _launch_meta(dtype: torch.dtype, dim: int) -> dict:
    """Compile-time flags; tile sizes only when not autotuned."""
    interp_bf16 = INTERPRET and dtype != torch.float32
    # fp32 inputs: true fp32 dot (no TF32) so fp32 results match the fp32 oracle.
    meta = dict(INTERP_BF16=interp_bf16,
                PRECISION="ieee" if (dtype == torch.float32 or interp_bf16) else "tf32")
    if INTERPRET:
        meta.update(_INTERPRET_TILES, EVEN_D=dim % _INTERPRET_TILES["BLOCK_D"] == 0)
    return meta


def _check_device(t: Tensor) -> None:
    if not (t.is_cuda or INTERPRET):
        raise RuntimeError(
            "impl='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton and "
            "scaling_kernels' Triton backend are first imported (CPU interpreter, for tests)")


def _num_splits(num_tokens: int, heads: int, vocab: int, device: torch.device) -> int:
    if INTERPRET:
        return triton.cdiv(vocab, _SPLIT_ALIGN)  # exercise the split merge even on tiny V
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    token_tiles = heads * triton.cdiv(num_tokens, 128)
    return max(1, min(triton.cdiv(_PROGRAMS_PER_SM * sms, token_tiles), triton.cdiv(vocab, 1024)))


def lse_forward(h: Tensor, w: Tensor, y: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    _check_device(h)
    heads, num_tokens, dim = h.shape
    vocab = w.shape[1]
    if num_tokens == 0:
        empty = torch.empty((heads, 0), dtype=torch.float32, device=h.device)
        return empty, empty.clone()
    n_split = _num_splits(num_tokens, heads, vocab, h.device)
    v_per_split = triton.cdiv(triton.cdiv(vocab, n_split), _SPLIT_ALIGN) * _SPLIT_ALIGN
    n_split = triton.cdiv(vocab, v_per_split)
    part = torch.empty((3, n_split, heads, num_tokens), dtype=torch.float32, device=h.device)
    grid = lambda meta: (triton.cdiv(num_tokens, meta["BLOCK_T"]), n_split, heads)  # noqa: E731
    _lse_fwd[grid](h, w, y, part, num_tokens, vocab, dim, v_per_split, h.stride(0), h.stride(1), w.stride(0),
                   w.stride(1), float(softcap), HAS_SOFTCAP=softcap > 0.0, **_launch_meta(h.dtype, dim))
    m, s, tgt = part.unbind(0)
    m_max = m.max(dim=0).values
    lse = m_max + torch.log((s * torch.exp(m - m_max)).sum(dim=0))
    return lse, tgt.sum(dim=0)


def _plan(num_tokens: int, vocab: int, dim: int, elt: int, dh_acc: bool, heads: int = 1) -> tuple[int, int]:
    """Super-tile (tc, vc) per head within the workspace budgets of the module docstring. A pack
    of heads gets each budget once per head, up to the PACK_*_CAP totals: its launches cover
    every head at once, so the number of super-tiles (and launches) per step stays that of one head."""
    def align_down(x: int) -> int:
        return max(CHUNK_ALIGN, x // CHUNK_ALIGN * CHUNK_ALIGN)

    g_budget = min(G_BUFFER_BYTES, max(PACK_G_BUFFER_CAP // heads, 1))
    dh_budget = min(DH_ACC_BYTES, max(PACK_DH_ACC_CAP // heads, 1))
    tc = min(num_tokens, MAX_TOKEN_CHUNK)
    if dh_acc:
        tc = min(tc, align_down(dh_budget // (4 * dim)))
    vc = min(vocab, align_down(g_budget // (tc * elt)))
    return tc, vc


_MM_OUT_DTYPE: bool | None = None  # torch.bmm(..., out_dtype=) on CUDA (torch >= 2.8); probed once


def _bmm_fp32(a: Tensor, b: Tensor) -> Tensor:
    """fp32 a @ b of low-precision [heads, m, k] x [heads, k, n] operands, product not rounded to bf16."""
    global _MM_OUT_DTYPE
    if not a.is_cuda:  # interpreter/tests only: exactness over speed
        return a.float() @ b.float()
    if _MM_OUT_DTYPE is None:
        try:
            torch.bmm(a[:, :1, :1], b[:, :1, :1], out_dtype=torch.float32)
            _MM_OUT_DTYPE = True
        except (TypeError, RuntimeError):
            _MM_OUT_DTYPE = False
    if _MM_OUT_DTYPE:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return (a @ b).float()  # older torch: one bf16 rounding per super-tile partial


def _add_matmul_(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b per head; fused (cuBLAS beta=1) when dtypes agree."""
    if acc.dtype == a.dtype:
        acc.baddbmm_(a, b)
    else:  # fp32 accumulator, bf16 operands; the partial is bounded (<= tc x d or V x d fp32 per head)
        acc += _bmm_fp32(a, b)


def grads(h: Tensor, w: Tensor, y: Tensor, lse: Tensor, dlse: Tensor, dtgt: Tensor, softcap: float,
          scheme: str = "auto") -> tuple[Tensor, Tensor]:
    _check_device(h)
    heads, num_tokens, dim = h.shape
    vocab = w.shape[1]
    low_precision = h.dtype != torch.float32
    dh = torch.zeros_like(h) if not low_precision else torch.empty_like(h)
    full_dw_acc = low_precision and vocab * dim * 4 <= DW_FULL_ACC_BYTES
    dw_acc = torch.zeros((heads, vocab, dim), dtype=torch.float32, device=w.device) if full_dw_acc \
        else torch.zeros_like(w)
    if num_tokens == 0:
        return dh, dw_acc.to(w.dtype)
    tc, vc = _plan(num_tokens, vocab, dim, h.element_size(), dh_acc=low_precision, heads=heads)
    g_buf = torch.empty((heads, tc, vc), dtype=h.dtype, device=h.device)
    dh_acc = torch.empty((heads, tc, dim), dtype=torch.float32, device=h.device) if low_precision else None
    meta = _launch_meta(h.dtype, dim)
    for t0 in range(0, num_tokens, tc):
        t1 = min(t0 + tc, num_tokens)
        h_c = h[:, t0:t1]
        acc_h = dh_acc[:, : t1 - t0].zero_() if low_precision else dh[:, t0:t1]
        for v0 in range(0, vocab, vc):
            v1 = min(v0 + vc, vocab)
            g_tile = g_buf[:, : t1 - t0, : v1 - v0]
            grid = lambda m: (triton.cdiv(v1 - v0, m["BLOCK_V"]), triton.cdiv(t1 - t0, m["BLOCK_T"]), heads)  # noqa: E731
            _grad_logits[grid](h, w, y, lse, dlse, dtgt, g_buf, num_tokens, t0, t1, v0, v1, dim,
                               h.stride(0), h.stride(1), w.stride(0), w.stride(1), g_buf.stride(0),
                               g_buf.stride(1), float(softcap), HAS_SOFTCAP=softcap > 0.0, **meta)
            _add_matmul_(acc_h, g_tile, w[:, v0:v1])
            _add_matmul_(dw_acc[:, v0:v1], g_tile.transpose(1, 2), h_c)
        if low_precision:
            dh[:, t0:t1] = acc_h
    return dh, dw_acc.to(w.dtype)
