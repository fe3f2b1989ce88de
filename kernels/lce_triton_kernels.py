"""@triton.jit kernels of the fused linear + cross-entropy; launched by ``lce_triton``.

Every kernel takes a leading axis of K heads (the last grid axis, or the second for the vocab
owner): head k reads h[k], w[k] and its per-token rows of [K, T] arrays, so one launch covers
a whole pack. Tiles are [BLOCK_T tokens, BLOCK_V vocab, BLOCK_D hidden]; "resident" kernels load
their own [tile, d] operand once (BLOCK_D = d rounded up to a power of two) and loop over the
other axis only. Loops run over full tiles without masks and finish with one masked tail tile.

Softmax math is in base 2 (the attention-kernel trick): logits are scaled by log2(e) inside the
same multiply-add that subtracts the running max, and ``exp2`` maps to one SFU instruction.
Forward partials (m, l) are in log2 units; lse leaves the kernels in natural units.

``INTERP_BF16`` works around two bf16 bugs of the Triton interpreter (``tl.dot`` reads raw uint16
bits; fp32->bf16 casts truncate): operands are widened to fp32 (exact) and every value that the
GPU would round to bf16 is rounded to nearest-even on its bits. On a GPU it is a compile-time
False and costs nothing.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _tanh(x):
    # libdevice.tanh is not available under the interpreter; this form is exact at +-inf and loses
    # only absolute ~1e-7 near 0, far below bf16/fp32 logit resolution after scaling by the cap.
    return 1.0 - 2.0 / (tl.exp2(x * (2.0 * LOG2E)) + 1.0)


@triton.jit
def _rtne_bf16(x):
    # Round fp32 to the nearest bf16 value (ties to even) on the bits, staying fp32. Finite inputs.
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _operand(x, like, INTERP_BF16: tl.constexpr):
    """x (fp32) as a tl.dot operand in the inputs' dtype (bf16 gradients, like cuBLAS would get)."""
    if INTERP_BF16:
        return _rtne_bf16(x)
    return x.to(like.dtype)


@triton.jit
def _load_rows(ptr, idx, idx_mask, offs_d, D, stride, MASK: tl.constexpr, EVEN_D: tl.constexpr,
               INTERP_BF16: tl.constexpr):
    """[len(idx), BLOCK_D] rows idx of a row-major [n, D] matrix; masked rows and columns read 0."""
    ptrs = ptr + idx.to(tl.int64)[:, None] * stride + offs_d[None, :]
    if MASK:
        if EVEN_D:
            x = tl.load(ptrs, mask=idx_mask[:, None], other=0.0)
        else:
            x = tl.load(ptrs, mask=idx_mask[:, None] & (offs_d < D)[None, :], other=0.0)
    else:
        if EVEN_D:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=(offs_d < D)[None, :], other=0.0)
    if INTERP_BF16:
        x = x.to(tl.float32)
    return x


@triton.jit
def _logits_stream(h_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_h, stride_w,
                   BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                   EVEN_D: tl.constexpr, INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    """fp32 [BLOCK_T, BLOCK_V] logits h[rows] @ w[cols]^T, streaming d in BLOCK_D slices (large d)."""
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
        if INTERP_BF16:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
        h_ptrs += BLOCK_D
        w_ptrs += BLOCK_D
    return acc


@triton.jit
def _target_logit(h_ptr, w_ptr, rows, row_mask, y, V, D, stride_h, stride_w, softcap,
                  HAS_SOFTCAP: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """s[t, y_t] as a gather-dot of h_t with w[y_t]: O(BLOCK_T * d) work, instead of comparing
    every logit of every tile with the target. 0 where there is no target (y outside [0, V))."""
    has_target = row_mask & (y >= 0) & (y < V)
    yc = tl.where(has_target, y, 0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        mask = has_target[:, None] & ((d0 + offs_d) < D)[None, :]
        h = tl.load(h_ptr + rows.to(tl.int64)[:, None] * stride_h + d0 + offs_d[None, :], mask=mask, other=0.0)
        w = tl.load(w_ptr + yc[:, None] * stride_w + d0 + offs_d[None, :], mask=mask, other=0.0)
        acc += tl.sum(h.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_SOFTCAP:
        acc = softcap * _tanh(acc / softcap)
    return tl.where(has_target, acc, 0.0)


@triton.jit
def _online_lse(s, cols, v_hi, m_i, l_i, softcap, HAS_SOFTCAP: tl.constexpr, MASK_V: tl.constexpr):
    """Fold a raw logits tile into the running (max, sum) of its rows, both in log2 units."""
    if HAS_SOFTCAP:
        s = softcap * _tanh(s / softcap)
    if MASK_V:
        s = tl.where((cols < v_hi)[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1) * LOG2E)
    p = tl.exp2(s * LOG2E - m_new[:, None])
    l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(p, axis=1)
    return m_new, l_i


@triton.jit
def _fwd_kernel(h_ptr, w_ptr, y_ptr, lse_ptr, tgt_ptr, m_ptr, l_ptr,
                T, V, D, V_PER_SPLIT, stride_hk, stride_h, stride_wk, stride_w, softcap,
                TOK_BUCKET, VOC_BUCKET,
                HAS_SOFTCAP: tl.constexpr, RESIDENT: tl.constexpr, SINGLE_SPLIT: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
                INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    """Program (token tile, vocab split, head): online lse over its vocab range. One split writes
    lse directly; several write (m, l) partials [split, head, T] that the launcher merges. Split 0
    also writes the target logit. TOK_BUCKET and VOC_BUCKET are autotuning keys only."""
    pid_t = tl.program_id(0)
    pid_s = tl.program_id(1)
    head = tl.program_id(2)
    h_ptr += head.to(tl.int64) * stride_hk
    w_ptr += head.to(tl.int64) * stride_wk
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = rows < T
    tok = head.to(tl.int64) * T + rows
    offs_v = tl.arange(0, BLOCK_V)
    offs_d = tl.arange(0, BLOCK_D)
    v_lo = pid_s * V_PER_SPLIT
    v_hi = tl.minimum(v_lo + V_PER_SPLIT, V)
    n_full = (v_hi - v_lo) // BLOCK_V
    v_tail = v_lo + n_full * BLOCK_V
    m_i = tl.full((BLOCK_T,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_T,), dtype=tl.float32)
    if RESIDENT:
        # the token tile stays on chip; only vocab tiles stream (software-pipelined by num_stages)
        h = _load_rows(h_ptr, rows, row_mask, offs_d, D, stride_h, True, EVEN_D, INTERP_BF16)
        for i in range(n_full):
            cols = v_lo + i * BLOCK_V + offs_v
            w = _load_rows(w_ptr, cols, cols < v_hi, offs_d, D, stride_w, False, EVEN_D, INTERP_BF16)
            m_i, l_i = _online_lse(tl.dot(h, tl.trans(w), input_precision=PRECISION), cols, v_hi, m_i, l_i,
                                   softcap, HAS_SOFTCAP, False)
        if v_tail < v_hi:
            cols = v_tail + offs_v
            w = _load_rows(w_ptr, cols, cols < v_hi, offs_d, D, stride_w, True, EVEN_D, INTERP_BF16)
            m_i, l_i = _online_lse(tl.dot(h, tl.trans(w), input_precision=PRECISION), cols, v_hi, m_i, l_i,
                                   softcap, HAS_SOFTCAP, True)
    else:
        for i in range(n_full):
            cols = v_lo + i * BLOCK_V + offs_v
            s = _logits_stream(h_ptr, w_ptr, rows, cols, row_mask, cols < v_hi, D, stride_h, stride_w,
                               BLOCK_T, BLOCK_V, BLOCK_D, EVEN_D, INTERP_BF16, PRECISION)
            m_i, l_i = _online_lse(s, cols, v_hi, m_i, l_i, softcap, HAS_SOFTCAP, False)
        if v_tail < v_hi:
            cols = v_tail + offs_v
            s = _logits_stream(h_ptr, w_ptr, rows, cols, row_mask, cols < v_hi, D, stride_h, stride_w,
                               BLOCK_T, BLOCK_V, BLOCK_D, EVEN_D, INTERP_BF16, PRECISION)
            m_i, l_i = _online_lse(s, cols, v_hi, m_i, l_i, softcap, HAS_SOFTCAP, True)
    if SINGLE_SPLIT:
        tl.store(lse_ptr + tok, (m_i + tl.log2(l_i)) * LN2, mask=row_mask)
    else:
        part = (pid_s.to(tl.int64) * tl.num_programs(2) + head) * T + rows
        tl.store(m_ptr + part, m_i, mask=row_mask)
        tl.store(l_ptr + part, l_i, mask=row_mask)
    if pid_s == 0:
        y = tl.load(y_ptr + tok, mask=row_mask, other=-1)
        tgt = _target_logit(h_ptr, w_ptr, rows, row_mask, y, V, D, stride_h, stride_w, softcap,
                            HAS_SOFTCAP, BLOCK_T, BLOCK_D)
        tl.store(tgt_ptr + tok, tgt, mask=row_mask)


@triton.jit
def _grad_tile(s, is_target, lse2, dlse, dtgt, softcap, HAS_SOFTCAP: tl.constexpr):
    """d loss / d raw logit for a tile of raw logits s; per-token lse2 (lse in log2 units), dlse,
    dtgt arrive broadcastable to s, so one helper serves both tile orientations."""
    if HAS_SOFTCAP:
        th = _tanh(s / softcap)
        s = softcap * th
    g = tl.exp2(s * LOG2E - lse2) * dlse + tl.where(is_target, dtgt, 0.0)
    if HAS_SOFTCAP:
        g = g * (1.0 - th * th)
    return g


@triton.jit
def _g_tile_kernel(h_ptr, w_ptr, y_ptr, lse_ptr, dlse_ptr, dtgt_ptr, out_ptr,
                   T, t0, t1, v0, v1, D, stride_hk, stride_h, stride_wk, stride_w, stride_ok, stride_out,
                   softcap, TOK_BUCKET, VOC_BUCKET, HAS_SOFTCAP: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                   EVEN_D: tl.constexpr, INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    """Supertile scheme: G[t - t0, v - v0] for t in [t0, t1), v in [v0, v1), in the input dtype.
    Vocab tiles vary fastest, so programs resident together share one token tile and the whole
    W chunk stays in L2 across token tiles."""
    pid_v = tl.program_id(0)
    pid_t = tl.program_id(1)
    head = tl.program_id(2)
    h_ptr += head.to(tl.int64) * stride_hk
    w_ptr += head.to(tl.int64) * stride_wk
    out_ptr += head.to(tl.int64) * stride_ok
    rows = t0 + pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = v0 + pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    row_mask = rows < t1
    col_mask = cols < v1
    s = _logits_stream(h_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_h, stride_w,
                       BLOCK_T, BLOCK_V, BLOCK_D, EVEN_D, INTERP_BF16, PRECISION)
    tok = head.to(tl.int64) * T + rows
    lse2 = tl.load(lse_ptr + tok, mask=row_mask, other=0.0) * LOG2E
    dlse = tl.load(dlse_ptr + tok, mask=row_mask, other=0.0)
    dtgt = tl.load(dtgt_ptr + tok, mask=row_mask, other=0.0)
    y = tl.load(y_ptr + tok, mask=row_mask, other=-1)
    g = _grad_tile(s, cols[None, :] == y[:, None], lse2[:, None], dlse[:, None], dtgt[:, None], softcap,
                   HAS_SOFTCAP)
    if INTERP_BF16:
        g = _rtne_bf16(g)
    out = out_ptr + (rows - t0).to(tl.int64)[:, None] * stride_out + (cols - v0)[None, :]
    tl.store(out, g.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _dh_step(h, acc, w_ptr, cols, v_hi, y, lse2, dlse, dtgt, offs_d, D, stride_w, softcap,
             HAS_SOFTCAP: tl.constexpr, MASK: tl.constexpr, EVEN_D: tl.constexpr,
             INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    # vocab rows past v_hi load as 0, so their (finite) gradient adds nothing to dH
    w = _load_rows(w_ptr, cols, cols < v_hi, offs_d, D, stride_w, MASK, EVEN_D, INTERP_BF16)
    s = tl.dot(h, tl.trans(w), input_precision=PRECISION)
    g = _grad_tile(s, cols[None, :] == y[:, None], lse2[:, None], dlse[:, None], dtgt[:, None], softcap,
                   HAS_SOFTCAP)
    return tl.dot(_operand(g, w, INTERP_BF16), w, acc, input_precision=PRECISION)


@triton.jit
def _dh_kernel(h_ptr, w_ptr, y_ptr, lse_ptr, dlse_ptr, dtgt_ptr, dh_ptr,
               T, V, D, V_PER_SPLIT, stride_hk, stride_h, stride_wk, stride_w, stride_dk, stride_d, softcap,
               TOK_BUCKET, VOC_BUCKET,
               HAS_SOFTCAP: tl.constexpr, ATOMIC: tl.constexpr,
               BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
               INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    """Owners scheme, dH: program (token tile, vocab split, head) keeps its token tile and its dH
    [BLOCK_T, d] on chip across its vocab range. One split stores dH; several add into fp32."""
    pid_t = tl.program_id(0)
    pid_s = tl.program_id(1)
    head = tl.program_id(2)
    h_ptr += head.to(tl.int64) * stride_hk
    w_ptr += head.to(tl.int64) * stride_wk
    dh_ptr += head.to(tl.int64) * stride_dk
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = rows < T
    tok = head.to(tl.int64) * T + rows
    offs_v = tl.arange(0, BLOCK_V)
    offs_d = tl.arange(0, BLOCK_D)
    h = _load_rows(h_ptr, rows, row_mask, offs_d, D, stride_h, True, EVEN_D, INTERP_BF16)
    lse2 = tl.load(lse_ptr + tok, mask=row_mask, other=0.0) * LOG2E
    dlse = tl.load(dlse_ptr + tok, mask=row_mask, other=0.0)
    dtgt = tl.load(dtgt_ptr + tok, mask=row_mask, other=0.0)
    y = tl.load(y_ptr + tok, mask=row_mask, other=-1)
    v_lo = pid_s * V_PER_SPLIT
    v_hi = tl.minimum(v_lo + V_PER_SPLIT, V)
    n_full = (v_hi - v_lo) // BLOCK_V
    v_tail = v_lo + n_full * BLOCK_V
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for i in range(n_full):
        acc = _dh_step(h, acc, w_ptr, v_lo + i * BLOCK_V + offs_v, v_hi, y, lse2, dlse, dtgt, offs_d, D,
                       stride_w, softcap, HAS_SOFTCAP, False, EVEN_D, INTERP_BF16, PRECISION)
    if v_tail < v_hi:
        acc = _dh_step(h, acc, w_ptr, v_tail + offs_v, v_hi, y, lse2, dlse, dtgt, offs_d, D,
                       stride_w, softcap, HAS_SOFTCAP, True, EVEN_D, INTERP_BF16, PRECISION)
    out = dh_ptr + rows.to(tl.int64)[:, None] * stride_d + offs_d[None, :]
    mask = row_mask[:, None] & (offs_d < D)[None, :]
    if ATOMIC:
        tl.atomic_add(out, acc, mask=mask, sem="relaxed")
    else:
        if INTERP_BF16:
            acc = _rtne_bf16(acc)
        tl.store(out, acc.to(dh_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dw_step(w, acc, h_ptr, dh_ptr, rows, t_hi, dh_row0, tok0, cols, y_ptr, lse_ptr, dlse_ptr, dtgt_ptr,
             offs_d, D, stride_h, stride_dh, softcap, HAS_SOFTCAP: tl.constexpr, ATOMIC_DH: tl.constexpr,
             MASK: tl.constexpr, EVEN_D: tl.constexpr, INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    # token rows past t_hi load h = 0 and dlse = dtgt = 0, so their gradient is exactly 0
    row_mask = rows < t_hi
    h = _load_rows(h_ptr, rows, row_mask, offs_d, D, stride_h, MASK, EVEN_D, INTERP_BF16)
    tok = tok0 + rows
    if MASK:
        lse2 = tl.load(lse_ptr + tok, mask=row_mask, other=0.0) * LOG2E
        dlse = tl.load(dlse_ptr + tok, mask=row_mask, other=0.0)
        dtgt = tl.load(dtgt_ptr + tok, mask=row_mask, other=0.0)
        y = tl.load(y_ptr + tok, mask=row_mask, other=-1)
    else:
        lse2 = tl.load(lse_ptr + tok) * LOG2E
        dlse = tl.load(dlse_ptr + tok)
        dtgt = tl.load(dtgt_ptr + tok)
        y = tl.load(y_ptr + tok)
    s_t = tl.dot(w, tl.trans(h), input_precision=PRECISION)  # [BLOCK_V, BLOCK_T]: logits transposed
    g_t = _operand(_grad_tile(s_t, cols[:, None] == y[None, :], lse2[None, :], dlse[None, :], dtgt[None, :],
                              softcap, HAS_SOFTCAP), h, INTERP_BF16)
    acc = tl.dot(g_t, h, acc, input_precision=PRECISION)
    if ATOMIC_DH:
        dh_part = tl.dot(tl.trans(g_t), w, input_precision=PRECISION)  # [BLOCK_T, BLOCK_D]
        out = dh_ptr + (rows - dh_row0).to(tl.int64)[:, None] * stride_dh + offs_d[None, :]
        tl.atomic_add(out, dh_part, mask=row_mask[:, None] & (offs_d < D)[None, :], sem="relaxed")
    return acc


@triton.jit
def _dw_kernel(h_ptr, w_ptr, y_ptr, lse_ptr, dlse_ptr, dtgt_ptr, dw_ptr, dh_ptr,
               T, V, D, t_lo, t_hi, dh_row0, head0, stride_hk, stride_h, stride_wk, stride_w,
               stride_dwk, stride_dw, stride_dhk, stride_dh, softcap, TOK_BUCKET, VOC_BUCKET,
               HAS_SOFTCAP: tl.constexpr, ATOMIC_DH: tl.constexpr, ACCUMULATE: tl.constexpr,
               BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
               INTERP_BF16: tl.constexpr, PRECISION: tl.constexpr):
    """Owners and fused schemes, dW: program (vocab tile, head head0 + axis 1) keeps its W tile
    and dW [BLOCK_V, d] on chip while sweeping tokens [t_lo, t_hi). With ATOMIC_DH (fused) it also
    adds each token tile's dH share into an fp32 buffer of the launch's heads (row t at
    t - dh_row0). ACCUMULATE adds to the dW already stored (later token chunks) instead of
    overwriting it."""
    pid_v = tl.program_id(0)
    head = tl.program_id(1) + head0
    h_ptr += head.to(tl.int64) * stride_hk
    w_ptr += head.to(tl.int64) * stride_wk
    dw_ptr += head.to(tl.int64) * stride_dwk
    dh_ptr += (head - head0).to(tl.int64) * stride_dhk
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    col_mask = cols < V
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    # vocab rows past V load as 0: their gradient is finite, never stored, and adds 0 to dH
    w = _load_rows(w_ptr, cols, col_mask, offs_d, D, stride_w, True, EVEN_D, INTERP_BF16)
    tok0 = head.to(tl.int64) * T
    n_full = (t_hi - t_lo) // BLOCK_T
    t_tail = t_lo + n_full * BLOCK_T
    acc = tl.zeros((BLOCK_V, BLOCK_D), dtype=tl.float32)
    for i in range(n_full):
        acc = _dw_step(w, acc, h_ptr, dh_ptr, t_lo + i * BLOCK_T + offs_t, t_hi, dh_row0, tok0, cols, y_ptr,
                       lse_ptr, dlse_ptr, dtgt_ptr, offs_d, D, stride_h, stride_dh, softcap, HAS_SOFTCAP,
                       ATOMIC_DH, False, EVEN_D, INTERP_BF16, PRECISION)
    if t_tail < t_hi:
        acc = _dw_step(w, acc, h_ptr, dh_ptr, t_tail + offs_t, t_hi, dh_row0, tok0, cols, y_ptr,
                       lse_ptr, dlse_ptr, dtgt_ptr, offs_d, D, stride_h, stride_dh, softcap, HAS_SOFTCAP,
                       ATOMIC_DH, True, EVEN_D, INTERP_BF16, PRECISION)
    out = dw_ptr + cols.to(tl.int64)[:, None] * stride_dw + offs_d[None, :]
    mask = col_mask[:, None] & (offs_d < D)[None, :]
    if ACCUMULATE:
        acc += tl.load(out, mask=mask, other=0.0).to(tl.float32)
    if INTERP_BF16:
        if dw_ptr.dtype.element_ty != tl.float32:
            acc = _rtne_bf16(acc)
    tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=mask)
