"""Fused ``cross_entropy(hidden @ weight.T, targets)`` without materialising logits.

Public entry point of the kernel triple (DESIGN.md section 4, STYLE.md
"What scaling-cli should absorb" 1): one function, one signature, and an
``impl`` switch between the Triton kernels (``lce_triton``) and the chunked
pure-PyTorch reference (``lce_reference``). Both run behind the same
``torch.library`` custom ops (``lce_op``), so eager, compiled, CPU and GPU
calls take one path: the ops return only per-token log-sum-exp and target
logit, and the loss, its reductions, ignore_index handling and z-loss are
assembled here once, in fp32 tensor math that autograd (or a compiled graph)
differentiates, so the two backends cannot disagree on them.

    from scaling_kernels import linear_cross_entropy
    loss = linear_cross_entropy(h, lm_head.weight, targets, z_loss=1e-4, softcap=30.0)

Per non-ignored token t with (soft-capped) logits s_t = cap * tanh(h_t W^T / cap):
    loss_t = lse(s_t) - s_t[y_t] + z_loss * lse(s_t)^2
and loss_t = 0 at ignored tokens. 'mean' divides by the number of non-ignored
tokens (all ignored -> 0 loss, zero gradients). The loss is returned in fp32.

torch.compile: nothing here creates a host tensor or waits for the device, so a
whole model compiles around the ops without graph breaks. A per-head z-loss
given as a device tensor (``linear_cross_entropy_heads``) is an ordinary graph
input: changing its values neither recompiles nor copies from the host.

dtype: under ``torch.autocast`` both inputs are cast to the autocast dtype
(so an fp32 master weight feeds a bf16 kernel, and its gradient flows back
through the cast as fp32); otherwise to their common dtype. Supported compute
dtypes are fp32 and bf16; fp16 is rejected because the backward's bounded
gradient buffer would underflow in fp16 with 'mean' over many tokens.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import lce_op  # noqa: F401  (registers torch.ops.scaling_kernels.*)
from .lce_op import SCHEMES

__all__ = ["linear_cross_entropy", "linear_cross_entropy_heads", "linear_cross_entropy_reference",
           "prepare_linear_cross_entropy", "LinearCrossEntropy", "triton_available"]

_REDUCTIONS = ("mean", "sum", "none")
_IMPLS = ("auto", "triton", "torch")
_DTYPES = (torch.float32, torch.bfloat16)
# Looked up once: a module constant is free to read inside a traced graph.
_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """True when the triton package can be imported (it may still lack a GPU)."""
    return _TRITON_AVAILABLE


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _validate(hidden: Tensor, weight: Tensor, targets: Tensor, reduction: str, z_loss: float | None,
              softcap: float, impl: str, scheme: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
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
    if z_loss is not None and not (z_loss >= 0.0 and z_loss < float("inf")):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss}")
    if not (softcap >= 0.0 and softcap < float("inf")):
        raise ValueError(f"softcap must be a finite number >= 0 (0 disables), got {softcap}")


def _resolve_impl(impl: str, hidden: Tensor) -> str:
    if impl == "torch" or (impl == "auto" and not (hidden.is_cuda and _TRITON_AVAILABLE)):
        return "torch"
    if not _TRITON_AVAILABLE:
        raise RuntimeError("impl='triton' requested but the triton package is not importable")
    return "triton"


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100,
                         reduction: str = "mean", z_loss: float = 0.0, softcap: float = 0.0,
                         impl: str = "auto", return_lse: bool = False,
                         scheme: str = "auto") -> Tensor | tuple[Tensor, Tensor]:
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
        scheme: the Triton backward scheme, 'auto' (chosen per shape by ``lce_plan``, or by the
            SCALING_KERNELS_LCE_BWD environment variable) or one of 'supertile', 'owners', 'fused'.
    """
    _validate(hidden, weight, targets, reduction, z_loss, softcap, impl, scheme)
    dtype = _compute_dtype(hidden, weight)
    if dtype not in _DTYPES:
        raise ValueError(f"compute dtype must be float32 or bfloat16, got {dtype}")
    h = hidden.reshape(1, -1, hidden.shape[-1]).to(dtype).contiguous()
    w = weight.to(dtype).contiguous().unsqueeze(0)
    loss, lse = _apply(h, w, targets.reshape(1, -1), ignore_index, reduction, float(z_loss), softcap,
                       _resolve_impl(impl, hidden), scheme)
    loss = loss[0].reshape(targets.shape) if reduction == "none" else loss[0]
    return (loss, lse[0].reshape(targets.shape)) if return_lse else loss


def linear_cross_entropy_heads(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100,
                               reduction: str = "mean", z_loss: float | Sequence[float] | Tensor = 0.0,
                               softcap: float = 0.0, impl: str = "auto", return_lse: bool = False,
                               scheme: str = "auto") -> Tensor | tuple[Tensor, Tensor]:
    """K independent losses in one call: head k is ``linear_cross_entropy(hidden[k], weight[k],
    targets[k])``, with its own ``z_loss[k]``. The kernels cover every head per launch, so a pack
    of K small proxies (scaling_cli.model.packed_gpt) launches as often as one proxy does.

    Args:
        hidden: [K, ..., d]; weight: [K, V, d]; targets: [K, ...] (hidden's shape without d).
        z_loss: one coefficient for all heads, one per head (a sequence), or a [K] float tensor on
            hidden's device. The tensor form is the one for a training loop whose per-head values
            may change: it is read on the device (no host copy per call) and, under torch.compile,
            is a graph input, so new values never recompile. Its values are not checked (that
            would wait for the device); keep them >= 0. A sequence of distinct values is copied
            to the device on every call.
        reduction: 'mean' / 'sum' give [K] (per head); 'none' gives [K, ...].
        Other arguments as in ``linear_cross_entropy``; return_lse gives lse shaped like targets.
    """
    heads = hidden.shape[0] if hidden.dim() >= 2 else 0
    if weight.dim() != 3 or hidden.dim() < 2 or heads != weight.shape[0] or targets.shape[:1] != hidden.shape[:1]:
        raise ValueError(f"heads: hidden [K, ..., d], weight [K, V, d] and targets [K, ...] must share K, got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    values = _z_values(z_loss, heads)
    for value in values:
        _validate(hidden[0], weight[0], targets[0], reduction, value, softcap, impl, scheme)
    z = _heads_z_loss(z_loss, values, hidden.device)
    dtype = _compute_dtype(hidden, weight)
    if dtype not in _DTYPES:
        raise ValueError(f"compute dtype must be float32 or bfloat16, got {dtype}")
    h = hidden.reshape(heads, -1, hidden.shape[-1]).to(dtype).contiguous()
    w = weight.to(dtype).contiguous()
    loss, lse = _apply(h, w, targets.reshape(heads, -1), ignore_index, reduction, z, softcap,
                       _resolve_impl(impl, hidden), scheme)
    if reduction == "none":
        loss = loss.reshape(targets.shape)
    return (loss, lse.reshape(targets.shape)) if return_lse else loss


def _z_values(z_loss: float | Sequence[float] | Tensor, heads: int) -> list[float | None]:
    """The per-head coefficients to validate ([None] for a tensor, whose values stay on the device)."""
    if isinstance(z_loss, Tensor):
        if z_loss.shape != (heads,) or not z_loss.is_floating_point():
            raise ValueError(f"z_loss: a tensor must be [K={heads}] floating point, got "
                             f"{tuple(z_loss.shape)} {z_loss.dtype}")
        return [None]
    if isinstance(z_loss, (int, float)):
        return [float(z_loss)]
    values = [float(v) for v in z_loss]
    if len(values) != heads:
        raise ValueError(f"z_loss: {len(values)} values for {heads} heads")
    return values


def _heads_z_loss(z_loss: float | Sequence[float] | Tensor, values: list[float | None],
                  device: torch.device) -> float | Tensor:
    """One float when every head shares the coefficient (no tensor at all), else a [K, 1] fp32
    column on the heads' device."""
    if isinstance(z_loss, Tensor):
        if z_loss.device != device:
            raise ValueError(f"z_loss: the tensor must be on {device}, got {z_loss.device}")
        return z_loss.float().unsqueeze(1)
    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)


def _apply(h: Tensor, w: Tensor, targets: Tensor, ignore_index: int, reduction: str, z_loss: float | Tensor,
           softcap: float, impl: str, scheme: str) -> tuple[Tensor, Tensor]:
    """Targets [K, T] -> (loss, detached lse [K, T]) through the custom op and plain tensor math."""
    lse, tgt = torch.ops.scaling_kernels.lce_forward(h, w, targets, int(ignore_index), float(softcap), impl, scheme)
    valid = targets != ignore_index
    per_token = lse - tgt
    if isinstance(z_loss, Tensor) or z_loss > 0.0:
        per_token = per_token + z_loss * lse * lse
    per_token = torch.where(valid, per_token, 0.0)
    if reduction == "none":
        loss = per_token
    elif reduction == "sum":
        loss = per_token.sum(dim=1)
    else:
        loss = per_token.sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    return loss, lse.detach()


def prepare_linear_cross_entropy(shapes: Sequence[tuple[int, int, int, int]], *, dtype: torch.dtype = torch.bfloat16,
                                 softcap: float = 0.0, scheme: str = "auto",
                                 device: torch.device | str | None = None) -> int:
    """Autotune the Triton kernels for each (K heads, T tokens per head, d, V) in ``shapes`` now,
    so that no later step pays for it in time or memory (Triton's config benchmarking allocates a
    256 MiB L2-flush buffer). Call it before the step whose memory is measured or planned, with
    the compute dtype and soft-cap the loss will use; shapes within the same power-of-two buckets
    of K*T and V share the tuning. Returns how many shapes ran: 0 where there is nothing to tune
    (no CUDA or no triton), so callers need not check."""
    if not (_TRITON_AVAILABLE and torch.cuda.is_available()):
        return 0
    from . import lce_triton

    return lce_triton.prepare(shapes, dtype=dtype, softcap=softcap, scheme=scheme, device=device)


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
                 softcap: float = 0.0, impl: str = "auto", scheme: str = "auto") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        self.ignore_index, self.reduction, self.z_loss = ignore_index, reduction, z_loss
        self.softcap, self.impl, self.scheme = softcap, impl, scheme

    def forward(self, hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
        return linear_cross_entropy(hidden, weight, targets, ignore_index=self.ignore_index,
                                    reduction=self.reduction, z_loss=self.z_loss, softcap=self.softcap,
                                    impl=self.impl, scheme=self.scheme)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, z_loss={self.z_loss}, "
                f"softcap={self.softcap}, impl={self.impl!r}, scheme={self.scheme!r}")
