"""The language-modelling loss: final hidden states x unembedding -> cross-entropy.

One function so that every caller (training, validation, scoring) goes through the fused
linear + cross-entropy kernel (`scaling_kernels`), which never materialises the logits:
the Triton path on CUDA, a chunked PyTorch reference elsewhere (`model.loss_impl`).
"""

from __future__ import annotations

from torch import Tensor

from scaling_cli.config import ModelConfig
from scaling_kernels import linear_cross_entropy, linear_cross_entropy_heads


def lm_loss(hidden: Tensor, weight: Tensor, targets: Tensor, cfg: ModelConfig, reduction: str = "mean",
            return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Cross-entropy of `targets` under logits hidden @ weight.T, plus z-loss and soft-capping
    as configured. reduction: 'mean' over non-ignored tokens, 'sum', or 'none' (per token,
    in the shape of `targets`). return_lse: also return the per-token log Z (logsumexp of the
    logits, detached, shaped like `targets`), for stability diagnostics."""
    loss, lse = linear_cross_entropy(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        targets.reshape(-1),
        reduction=reduction,
        z_loss=cfg.z_loss,
        softcap=cfg.logit_softcap,
        impl=cfg.loss_impl,
        return_lse=True,
    )
    loss = loss.view(targets.shape) if reduction == "none" else loss
    return (loss, lse.view(targets.shape)) if return_lse else loss


def lm_loss_heads(hidden: Tensor, weight: Tensor, targets: Tensor, cfgs: list[ModelConfig],
                  reduction: str = "mean", z_loss: Tensor | None = None) -> Tensor:
    """The losses [K] ('mean' or 'sum' over tokens) of K models of one shape (a pack): hidden
    [K, N, d], weight [K, V, d], targets [K, ...], each head with its own config's z-loss, in one
    kernel call for all heads. z_loss: those coefficients as a [K] device tensor the caller keeps
    (PackedGPT's buffer), so a step never copies them from the host and a compiled step never
    specialises on their values; without it they are read from `cfgs`."""
    cfg = cfgs[0]  # soft-capping and the loss implementation are shared by a pack (its shape key)
    return linear_cross_entropy_heads(hidden, weight, targets.reshape(targets.shape[0], -1),
                                      reduction=reduction,
                                      z_loss=[c.z_loss for c in cfgs] if z_loss is None else z_loss,
                                      softcap=cfg.logit_softcap, impl=cfg.loss_impl)
