"""The fused linear + cross-entropy as two ``torch.library`` custom ops, so ``torch.compile`` sees
one opaque op (with its backward op and fake implementations) and never traces launch code.

    lse, tgt = torch.ops.scaling_kernels.lce_forward(h, w, targets, ignore_index, softcap, impl, scheme)
    dh, dw = torch.ops.scaling_kernels.lce_backward(h, w, targets, lse, dlse, dtgt, ignore_index,
                                                     softcap, impl, scheme)

Shapes: h [K, T, d], w [K, V, d] (K independent heads; K = 1 for a single loss), targets [K, T]
(any integer dtype; ``ignore_index`` marks tokens without a target). The forward returns the
per-token log-sum-exp and target logit, both fp32 [K, T] (target logit 0 at ignored tokens), and
is differentiable in both: the backward op takes their incoming gradients ``dlse`` and ``dtgt`` and
returns dh and dw through

    d loss / d logit_tv = dlse_t * softmax_tv + dtgt_t * [v == y_t]   (times 1 - tanh^2 when capped)

Everything else of the loss (z-loss, ignore masking, reductions) is ordinary tensor math in
``linear_cross_entropy``, which autograd differentiates into ``dlse`` and ``dtgt``. So the ops
take no per-head coefficients: a per-head z-loss is just a [K, 1] device tensor in that math, its
values never specialise a compiled graph, and no host-side tensor is created anywhere in the op.

``impl`` picks the backend ('triton' or 'torch', already resolved from 'auto'); ``scheme`` picks
the Triton backward scheme ('auto', 'supertile', 'owners', 'fused'; see ``lce_plan``) and is
ignored by the torch reference. Both are plain strings in the op schema, so they are compile-time
constants of a graph. Autocast is switched off inside the ops: their inputs arrive already cast,
and the backends' own fp32 matmuls must not be re-cast.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from . import lce_plan, lce_reference

__all__ = ["lce_forward", "lce_backward", "IMPLS", "SCHEMES"]

IMPLS = ("triton", "torch")
SCHEMES = ("auto", *lce_plan.SCHEMES)


def _backend(impl: str) -> ModuleType:
    if impl == "torch":
        return lce_reference
    if impl != "triton":
        raise ValueError(f"impl must be one of {IMPLS} inside the op, got {impl!r}")
    # Imported lazily: @triton.jit fixes interpreted-vs-compiled at import time, so
    # TRITON_INTERPRET must be set before this first import.
    from . import lce_triton

    return lce_triton


def _class_ids(targets: Tensor, ignore_index: int, vocab: int) -> Tensor:
    """int64 class ids with every ignored token as -1, which no kernel ever matches as a class.

    On CPU, targets outside [0, vocab) that are not ignore_index raise here (inside the op, so the
    check needs no host sync in a traced graph on any device). On CUDA they are not checked: that
    would wait for the GPU every step; the kernels then treat them as ignored."""
    valid = targets != ignore_index
    if not targets.is_cuda:
        bad = valid & ((targets < 0) | (targets >= vocab))
        if bool(bad.any()):
            raise ValueError(f"targets must be in [0, {vocab}) or equal ignore_index={ignore_index}")
    return torch.where(valid, targets.long(), -1).contiguous()


@torch.library.custom_op("scaling_kernels::lce_forward", mutates_args=())
def lce_forward(h: Tensor, w: Tensor, targets: Tensor, ignore_index: int, softcap: float, impl: str,
                scheme: str) -> tuple[Tensor, Tensor]:
    y = _class_ids(targets, ignore_index, w.shape[1])
    with torch.autocast(device_type=h.device.type, enabled=False):
        return _backend(impl).lse_forward(h, w, y, softcap)


@lce_forward.register_fake
def _lce_forward_fake(h, w, targets, ignore_index, softcap, impl, scheme):
    shape = targets.shape
    return h.new_empty(shape, dtype=torch.float32), h.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op("scaling_kernels::lce_backward", mutates_args=())
def lce_backward(h: Tensor, w: Tensor, targets: Tensor, lse: Tensor, dlse: Tensor, dtgt: Tensor,
                 ignore_index: int, softcap: float, impl: str, scheme: str) -> tuple[Tensor, Tensor]:
    y = _class_ids(targets, ignore_index, w.shape[1])
    dlse, dtgt = dlse.float().contiguous(), dtgt.float().contiguous()
    with torch.autocast(device_type=h.device.type, enabled=False):
        if impl == "torch":
            return lce_reference.grads(h, w, y, lse, dlse, dtgt, softcap)
        return _backend(impl).grads(h, w, y, lse, dlse, dtgt, softcap, scheme=scheme)


@lce_backward.register_fake
def _lce_backward_fake(h, w, targets, lse, dlse, dtgt, ignore_index, softcap, impl, scheme):
    return torch.empty_like(h), torch.empty_like(w)


def _setup_context(ctx, inputs, output) -> None:
    h, w, targets, ignore_index, softcap, impl, scheme = inputs
    lse, _ = output
    ctx.save_for_backward(h, w, targets, lse)
    ctx.options = (ignore_index, softcap, impl, scheme)


def _backward(ctx, dlse: Tensor | None, dtgt: Tensor | None):
    h, w, targets, lse = ctx.saved_tensors
    dlse = torch.zeros_like(lse) if dlse is None else dlse
    dtgt = torch.zeros_like(lse) if dtgt is None else dtgt
    dh, dw = lce_backward(h, w, targets, lse, dlse, dtgt, *ctx.options)
    return dh, dw, None, None, None, None, None


lce_forward.register_autograd(_backward, setup_context=_setup_context)
