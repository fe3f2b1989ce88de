"""Chunked pure-PyTorch reference for the fused linear + cross-entropy loss.

This is the ``impl="torch"`` backend of :func:`scaling_kernels.linear_cross_entropy`
and the CPU training path. It is the *math* spec the Triton kernels are tested
against, written to be read: every step is done in fp32 whatever the input dtype.

Memory: the (tokens x vocab) logits are never held in full. Both passes walk
over token chunks sized so one fp32 logits chunk is about ``CHUNK_BYTES``;
the backward recomputes each chunk's logits from the saved per-token
log-sum-exp instead of keeping them from the forward. Peak extra memory is a
few chunks plus an fp32 copy of the weight (none when it already is fp32) and
an fp32 dW accumulator, so CPU training of a vocab-50k proxy stays small.

Backend contract (shared with ``lce_triton``), for contiguous inputs with a leading
axis of K independent heads (K = 1 for a single loss; K runs of a pack otherwise):

* ``lse_forward(h[K, T, d], w[K, V, d], y[K, T], softcap) -> (lse[K, T], target_logit[K, T])``,
  both fp32; ``target_logit`` is 0 where ``y`` is outside ``[0, V)`` (ignored).
* ``grads(h, w, y, lse, dlse[K, T], dtgt[K, T], softcap) -> (dh, dw)`` in the input dtypes,
  where ``dlse`` and ``dtgt`` are the fp32 gradients of the loss with respect to the forward's
  two outputs (0 at ignored tokens), so d loss / d logit_tv = dlse_t * p_tv + dtgt_t * [v == y_t],
  times (1 - tanh^2) when soft-capping. z-loss, masking and reductions live in that upstream
  math (``linear_cross_entropy``), not in the backends.

Here the heads are simply done one after another.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lse_forward", "grads", "CHUNK_BYTES"]

# One fp32 logits chunk is about this big. The backward holds ~3 such chunks
# (logits/probabilities, tanh for soft-capping, the gradient), so 16 MiB keeps
# the transient peak near 50 MiB. Tests shrink it to exercise chunking.
CHUNK_BYTES = 16 << 20


def _token_chunk(vocab: int) -> int:
    return max(1, CHUNK_BYTES // (4 * vocab))


def _capped_logits(h_chunk: Tensor, w32: Tensor, softcap: float) -> tuple[Tensor, Tensor | None]:
    """fp32 logits of one token chunk, soft-capped; also returns tanh for the backward."""
    raw = h_chunk.float() @ w32.T
    if softcap > 0.0:
        th = torch.tanh(raw.div_(softcap))
        return th * softcap, th
    return raw, None


def lse_forward(h: Tensor, w: Tensor, y: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    lse, tgt = zip(*(_lse_forward_head(h[k], w[k], y[k], softcap) for k in range(h.shape[0])))
    return torch.stack(lse), torch.stack(tgt)


def grads(h: Tensor, w: Tensor, y: Tensor, lse: Tensor, dlse: Tensor, dtgt: Tensor,
          softcap: float) -> tuple[Tensor, Tensor]:
    dh, dw = zip(*(_grads_head(h[k], w[k], y[k], lse[k], dlse[k], dtgt[k], softcap) for k in range(h.shape[0])))
    return torch.stack(dh), torch.stack(dw)


def _lse_forward_head(h: Tensor, w: Tensor, y: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    num_tokens, vocab = h.shape[0], w.shape[0]
    w32 = w.float()
    lse = torch.empty(num_tokens, dtype=torch.float32, device=h.device)
    tgt = torch.empty(num_tokens, dtype=torch.float32, device=h.device)
    step = _token_chunk(vocab)
    for t0 in range(0, num_tokens, step):
        t1 = min(t0 + step, num_tokens)
        logits, _ = _capped_logits(h[t0:t1], w32, softcap)
        lse[t0:t1] = torch.logsumexp(logits, dim=-1)
        yc = y[t0:t1]
        in_range = (yc >= 0) & (yc < vocab)
        picked = logits.gather(1, yc.clamp(0, vocab - 1).unsqueeze(1)).squeeze(1)
        tgt[t0:t1] = torch.where(in_range, picked, 0.0)
    return lse, tgt


def _grads_head(
    h: Tensor, w: Tensor, y: Tensor, lse: Tensor, dlse: Tensor, dtgt: Tensor, softcap: float
) -> tuple[Tensor, Tensor]:
    num_tokens, vocab = h.shape[0], w.shape[0]
    w32 = w.float()
    # fp32 accumulation of dW over chunks; when w is fp32 this is the output itself.
    dw32 = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
    dh = torch.empty_like(h)
    step = _token_chunk(vocab)
    for t0 in range(0, num_tokens, step):
        t1 = min(t0 + step, num_tokens)
        logits, th = _capped_logits(h[t0:t1], w32, softcap)
        lse_c = lse[t0:t1].unsqueeze(1)
        # softmax recomputed from the saved lse, in place to keep one chunk alive
        grad = logits.sub_(lse_c).exp_().mul_(dlse[t0:t1].unsqueeze(1))
        yc = y[t0:t1]
        rows = torch.nonzero((yc >= 0) & (yc < vocab)).squeeze(1)
        grad[rows, yc[rows]] += dtgt[t0:t1][rows]
        if th is not None:
            grad.mul_(1.0 - th.square_())
        dh[t0:t1] = (grad @ w32).to(h.dtype)
        dw32.addmm_(grad.T, h[t0:t1].float())
    return dh, dw32.to(w.dtype)
