"""μP (maximal update parametrization): the width rules that let a narrow proxy's best learning
rate transfer to wider models (`model.parametrization=mup`).

Source: Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
Hyperparameter Transfer" (arXiv:2203.03466). Table 3 gives μP for Adam; we implement its
equivalent Table 8 form (an output multiplier instead of a 1/fan_in^2 output init), written
relative to a base width as the `mup` package does: with the width multiplier
m = d_model / mup_base_width every fan-in ratio to the base shape is m (all hidden fan-ins,
the MLP's included, are multiples of d_model), so

    parameter class           init std                   Adam LR      forward
    input (token embedding)   init_std                   lr           x 1
    vector-like (norm gains)  1                          lr           x 1
    hidden matrices           init_std / sqrt(m)         lr / m       x 1
    output (lm_head)          init_std                   lr           logits x 1/m
    attention scores          -                          -            q.k / d_head instead of / sqrt(d_head)

- hidden init: variance 1/fan_in (Table 8), i.e. the base std shrunk by sqrt(m); GPT-2's
  1/sqrt(2 n_layer) on residual projections is kept (depth is not what μP transfers).
- output: Table 8 puts the 1/fan_in on the logits as a multiplier, initialises the weight with a
  width-independent variance (the base width's init_std) and trains it with an unscaled Adam LR.
  App. D.2 also suggests a zero readout; we do not use it: in our short CPU runs it cost ~0.5
  nats (d_model 64 = base, 2.5e5 tokens: 5.63 vs 5.07), because Adam's first step turns a zero
  matrix into +-lr x sign(first gradient), identical rows for every token absent from the batch.
  The multiplier is applied to the final norm's output (`OutputScaledRMSNorm`), so logits are
  never materialised and every consumer of `hidden_states`/`final_norm` (losses, scoring,
  decoding) sees it.
- attention: Sec. 4 / App. B: q.k grows like d_head once q and k are correlated by training, so
  μP scales scores by 1/d_head. We use alpha/d_head with alpha = sqrt(base head dim) (the base
  shape has the same n_head at mup_base_width), which equals 1/sqrt(d_head) at the base width.
  Widths are therefore meant to be swept at a fixed n_head (head dim grows with d_model).
- AdamW's decoupled weight decay is applied as lr x wd, so it scales with the LR multiplier
  (the `mup` package's MuAdamW does the same).

At d_model = mup_base_width every rule reduces to the standard parametrization (same init, LRs
and scales, so the same run); under 'standard' nothing here changes the model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scaling_cli.config import ModelConfig


def is_mup(cfg: ModelConfig) -> bool:
    return cfg.parametrization == "mup"


def width_mult(cfg: ModelConfig) -> float:
    """m = d_model / mup_base_width under μP; 1 under the standard parametrization."""
    return cfg.d_model / cfg.mup_base_width if is_mup(cfg) else 1.0


def hidden_init_std(cfg: ModelConfig) -> float:
    """Init std of hidden matrices (before GPT-2's residual depth factor): init_std / sqrt(m)."""
    return cfg.init_std / math.sqrt(width_mult(cfg))


def output_multiplier(cfg: ModelConfig) -> float:
    """Factor on the output logits: 1/m (Table 8's 1/fan_in, relative to the base width)."""
    return 1.0 / width_mult(cfg)


def attention_scale(cfg: ModelConfig) -> float | None:
    """Softmax scale of q.k: None (SDPA's default 1/sqrt(d_head)) under the standard
    parametrization; sqrt(d_head / m) / d_head = 1/sqrt(d_head * m) under μP."""
    if not is_mup(cfg):
        return None
    head_dim = cfg.d_model // cfg.n_head
    return 1.0 / math.sqrt(head_dim * width_mult(cfg))


def param_class(name: str, param: Tensor) -> str:
    """'input', 'output', 'hidden' or 'vector' for a named parameter of GPT."""
    if name == "embed.weight":
        return "input"
    if name == "lm_head.weight":
        return "output"
    return "hidden" if param.dim() >= 2 else "vector"


def lr_multiplier(cfg: ModelConfig, name: str, param: Tensor) -> float:
    """Adam learning rate of a parameter as a multiple of optim.lr: 1/m for hidden matrices, else 1."""
    return 1.0 / width_mult(cfg) if param_class(name, param) == "hidden" else 1.0


@torch.no_grad()
def init_parameters(model: nn.Module, cfg: ModelConfig) -> None:
    """μP initialisation of a GPT (the table in the module docstring); norms keep their ones."""
    depth_scale = 1 / math.sqrt(2 * cfg.n_layer)  # GPT-2 residual-projection scaling, as in standard
    for name, param in model.named_parameters():
        kind = param_class(name, param)
        if kind in ("input", "output"):  # width-independent variance (Table 8); output has the 1/m multiplier
            nn.init.normal_(param, mean=0.0, std=cfg.init_std)
        elif kind == "hidden":
            scale = depth_scale if name.endswith(("proj.weight", "down.weight")) else 1.0
            nn.init.normal_(param, mean=0.0, std=hidden_init_std(cfg) * scale)


class OutputScaledRMSNorm(nn.RMSNorm):
    """The final RMSNorm times a constant: μP's output multiplier on the logits, applied to the
    [tokens, d_model] hidden states instead of the [tokens, vocab] logits. State-dict compatible
    with nn.RMSNorm (same single `weight`)."""

    def __init__(self, d_model: int, multiplier: float) -> None:
        super().__init__(d_model)
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * self.multiplier

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, multiplier={self.multiplier:.4g}"


def final_norm(cfg: ModelConfig) -> nn.Module:
    """The model's final norm: plain RMSNorm (standard), or with μP's output multiplier."""
    return OutputScaledRMSNorm(cfg.d_model, output_multiplier(cfg)) if is_mup(cfg) else nn.RMSNorm(cfg.d_model)
