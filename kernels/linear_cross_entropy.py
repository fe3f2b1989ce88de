"""Fused ``cross_entropy(hidden @ weight.T, targets)`` without materialising logits.

Public entry point of the kernel triple (DESIGN.md section 4, STYLE.md
"What scaling-cli should absorb" 1): one function, one signature, and an
``impl`` switch between the Triton kernels (``lce_triton``) and the chunked
pure-PyTorch reference (``lce_reference``). Both backends return only
per-token log-sum-exp and target logit from the forward; the loss, its
reductions, ignore_index handling and z-loss are assembled here once, in fp32,
so the two backends cannot disagree on them.

    from scaling_kernels import linear_cross_entropy
    loss = linear_cross_entropy(h, lm_head.weight, targets, z_loss=1e-4, softcap=30.0)

Per non-ignored token t with (soft-capped) logits s_t = cap * tanh(h_t W^T / cap):
    loss_t = lse(s_t) - s_t[y_t] + z_loss * lse(s_t)^2
and loss_t = 0 at ignored tokens. 'mean' divides by the number of non-ignored
tokens (all ignored -> 0 loss, zero gradients). The loss is returned in fp32.

dtype: under ``torch.autocast`` both inputs are cast to the autocast dtype
(so an fp32 master weight feeds a bf16 kernel, and its gradient flows back
through the cast as fp32); otherwise to their common dtype. Supported compute
dtypes are fp32 and bf16; fp16 is rejected because the backward's bounded
gradient buffer would underflow in fp16 with 'mean' over many tokens.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor, nn

from . import lce_reference

__all__ = ["linear_cross_entropy", "linear_cross_entropy_heads", "linear_cross_entropy_reference",
           "LinearCrossEntropy", "triton_available"]

_REDUCTIONS = ("mean", "sum", "none")
_IMPLS = ("auto", "triton", "torch")
_DTYPES = (torch.float32, torch.bfloat16)


def triton_available() -> bool:
    """True when the triton package can be imported (it may still lack a GPU)."""
    return importlib.util.find_spec("triton") is not None


def _triton_backend() -> ModuleType:
    # Imported lazily: @triton.jit fixes interpreted-vs-compiled at import
    # time, so TRITON_INTERPRET must be set before this first import.
    from . import lce_triton

    return lce_triton


class _LinearCrossEntropyFn(torch.autograd.Function):
    """Autograd wrapper over K independent heads (K = 1 for a single loss); the backend does the
    heavy (heads x tokens x vocab) work. Inputs: h [K, T, d], w [K, V, d], y and valid [K, T],
    z_loss one float per head. Loss: [K] for 'mean'/'sum', [K, T] for 'none'."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, y: Tensor, valid: Tensor, reduction: str,
                z_loss: tuple[float, ...], softcap: float, backend: ModuleType) -> tuple[Tensor, Tensor]:
        # Our own matmuls must not be re-cast by an enclosing autocast region.
        with torch.autocast(device_type=h.device.type, enabled=False):
            lse, tgt = backend.lse_forward(h, w, y, softcap)
        per_token = torch.where(valid, lse - tgt + _per_head(z_loss, lse) * lse * lse, 0.0)
        n_valid = valid.sum(dim=1)
        if reduction == "none":
            loss = per_token
        elif reduction == "sum":
            loss = per_token.sum(dim=1)
        else:
            loss = per_token.sum(dim=1) / n_valid.clamp(min=1)
        ctx.save_for_backward(h, w, y, valid, lse, n_valid)
        ctx.reduction, ctx.z_loss, ctx.softcap, ctx.backend = reduction, z_loss, softcap, backend
        ctx.mark_non_differentiable(lse)
        return loss, lse

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_lse: Tensor | None):
        h, w, y, valid, lse, n_valid = ctx.saved_tensors
        grad_loss = grad_loss.float()
        if ctx.reduction == "mean":
            grad_loss = grad_loss / n_valid.clamp(min=1)
        if ctx.reduction != "none":
            grad_loss = grad_loss.unsqueeze(1)
        # per-token weight of the loss; 0 kills ignored rows inside the kernels
        g = torch.where(valid, grad_loss.expand(valid.shape), 0.0).contiguous()
        with torch.autocast(device_type=h.device.type, enabled=False):
            dh, dw = ctx.backend.grads(h, w, y, lse, g, ctx.z_loss, ctx.softcap)
        return dh, dw, None, None, None, None, None, None


def _per_head(values: tuple[float, ...], like: Tensor) -> float | Tensor:
    """A per-head coefficient as a [K, 1] tensor on like's device, or a float when all heads share
    it (the usual case, and no host-to-device copy). The copy is from pinned memory, so it never
    waits for the GPU."""
    if len(set(values)) == 1:
        return values[0]
    column = torch.tensor(values, dtype=torch.float32).unsqueeze(1)
    if like.is_cuda:
        column = column.pin_memory()
    return column.to(like.device, non_blocking=True)


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _validate(hidden: Tensor, weight: Tensor, targets: Tensor, reduction: str, z_loss: float,
              softcap: float, impl: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [vocab, d], got shape {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden [..., d] must end in d={weight.shape[1]} (weight {tuple(weight.shape)}), "
                         f"got shape {tuple(hidden.shape)}")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets shape {tuple(targets.shape)} must equal hidden's leading shape "
                         f"{tuple(hidden.shape[:-1])}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor (int64), got {targets.dtype}")
    if not (hidden.device == weight.device == targets.device):
        raise ValueError(f"hidden, weight and targets must share a device, got {hidden.device}, "
                         f"{weight.device}, {targets.device}")
    if not (z_loss >= 0.0 and z_loss < float("inf")):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss}")
    if not (softcap >= 0.0 and softcap < float("inf")):
        raise ValueError(f"softcap must be a finite number >= 0 (0 disables), got {softcap}")


def _select_backend(impl: str, hidden: Tensor) -> ModuleType:
    if impl == "torch" or (impl == "auto" and not (hidden.is_cuda and triton_available())):
        return lce_reference
    if not triton_available():
        raise RuntimeError("impl='triton' requested but the triton package is not importable")
    return _triton_backend()


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100,
                         reduction: str = "mean", z_loss: float = 0.0, softcap: float = 0.0,
                         impl: str = "auto", return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Cross-entropy of ``hidden @ weight.T`` against ``targets``, logits never materialised.

    Args:
        hidden: [..., d] activations (leading dims are flattened).
        weight: [V, d] output projection (may be the tied embedding).
        targets: [...] integer class ids; ``ignore_index`` entries contribute nothing.
        reduction: 'mean' over non-ignored tokens, 'sum', or 'none' (per-token fp32 losses
            shaped like ``targets``, 0 at ignored tokens).
        z_loss: coefficient of the auxiliary ``lse^2`` term per token (0 disables).
        softcap: logits become ``softcap * tanh(logits / softcap)`` when > 0.
        impl: 'auto' (Triton on CUDA when importable, else the reference), 'triton', 'torch'.
        return_lse: also return the per-token log-sum-exp (fp32, detached, shaped like targets).
    """
    _validate(hidden, weight, targets, reduction, z_loss, softcap, impl)
    dtype = _compute_dtype(hidden, weight)
    if dtype not in _DTYPES:
        raise ValueError(f"compute dtype must be float32 or bfloat16, got {dtype}")
    backend = _select_backend(impl, hidden)
    h = hidden.reshape(1, -1, hidden.shape[-1]).to(dtype).contiguous()
    w = weight.to(dtype).contiguous().unsqueeze(0)
    loss, lse = _apply(h, w, targets.reshape(1, -1), ignore_index, reduction, (float(z_loss),), softcap, backend)
    loss = loss[0].reshape(targets.shape) if reduction == "none" else loss[0]
    return (loss, lse[0].reshape(targets.shape)) if return_lse else loss


def linear_cross_entropy_heads(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100,
                               reduction: str = "mean", z_loss: float | Sequence[float] = 0.0,
                               softcap: float = 0.0, impl: str = "auto",
                               return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """K independent losses in one call: head k is ``linear_cross_entropy(hidden[k], weight[k],
    targets[k])``, with its own ``z_loss[k]``. The kernels cover every head per launch, so a pack
    of K small proxies (scaling_cli.model.packed_gpt) launches as often as one proxy does.

    Args:
        hidden: [K, ..., d]; weight: [K, V, d]; targets: [K, ...] (hidden's shape without d).
        z_loss: one coefficient for all heads, or one per head.
        reduction: 'mean' / 'sum' give [K] (per head); 'none' gives [K, ...].
        Other arguments as in ``linear_cross_entropy``; return_lse gives lse shaped like targets.
    """
    heads = hidden.shape[0] if hidden.dim() >= 2 else 0
    if weight.dim() != 3 or hidden.dim() < 2 or heads != weight.shape[0] or targets.shape[:1] != hidden.shape[:1]:
        raise ValueError(f"heads: hidden [K, ..., d], weight [K, V, d] and targets [K, ...] must share K, got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    z = (float(z_loss),) * heads if isinstance(z_loss, (int, float)) else tuple(float(v) for v in z_loss)
    if len(z) != heads:
        raise ValueError(f"z_loss: {len(z)} values for {heads} heads")
    for value in z:
        _validate(hidden[0], weight[0], targets[0], reduction, value, softcap, impl)
    dtype = _compute_dtype(hidden, weight)
    if dtype not in _DTYPES:
        raise ValueError(f"compute dtype must be float32 or bfloat16, got {dtype}")
    backend = _select_backend(impl, hidden)
    h = hidden.reshape(heads, -1, hidden.shape[-1]).to(dtype).contiguous()
    w = weight.to(dtype).contiguous()
    loss, lse = _apply(h, w, targets.reshape(heads, -1), ignore_index, reduction, z, softcap, backend)
    if reduction == "none":
        loss = loss.reshape(targets.shape)
    return (loss, lse.reshape(targets.shape)) if return_lse else loss


def _apply(h: Tensor, w: Tensor, targets: Tensor, ignore_index: int, reduction: str, z_loss: tuple[float, ...],
           softcap: float, backend: ModuleType) -> tuple[Tensor, Tensor]:
    """Targets [K, T] -> (loss, lse [K, T]) through the autograd function."""
    y = targets.long()
    valid = y != ignore_index
    if not y.is_cuda and bool(((y < 0) | (y >= w.shape[1]))[valid].any()):
        # CPU only: on CUDA this check would force a host sync every step.
        raise ValueError(f"targets must be in [0, {w.shape[1]}) or equal ignore_index={ignore_index}")
    # Ignored rows get -1 so no kernel ever matches them as a class id.
    y = torch.where(valid, y, -1).contiguous()
    return _LinearCrossEntropyFn.apply(h, w, y, valid, reduction, z_loss, float(softcap), backend)


def linear_cross_entropy_reference(hidden: Tensor, weight: Tensor, targets: Tensor, *,
                                   ignore_index: int = -100, reduction: str = "mean",
                                   z_loss: float = 0.0, softcap: float = 0.0,
                                   return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The chunked pure-PyTorch path (fp32 math); same as ``impl='torch'``."""
    return linear_cross_entropy(hidden, weight, targets, ignore_index=ignore_index, reduction=reduction,
                                z_loss=z_loss, softcap=softcap, impl="torch", return_lse=return_lse)


class LinearCrossEntropy(nn.Module):
    """Module form holding the loss options; call as ``loss_fn(hidden, weight, targets)``."""

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean", z_loss: float = 0.0,
                 softcap: float = 0.0, impl: str = "auto") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        self.ignore_index, self.reduction, self.z_loss = ignore_index, reduction, z_loss
        self.softcap, self.impl = softcap, impl

    def forward(self, hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
        return linear_cross_entropy(hidden, weight, targets, ignore_index=self.ignore_index,
                                    reduction=self.reduction, z_loss=self.z_loss, softcap=self.softcap,
                                    impl=self.impl)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, z_loss={self.z_loss}, "
                f"softcap={self.softcap}, impl={self.impl!r}")
