"""Parameter and FLOP counts of a proxy, from its config alone (the planner cannot build models).

Conventions (DESIGN.md §3; Kaplan et al. 2020, Hoffmann et al. 2022):
- params: every trainable parameter, a tied embedding counted once.
- params_nonembed: params minus the token embedding and the output projection (Kaplan's N).
- training FLOPs per token: 6 x (non-embedding matmul params + the output layer d x V)
  + 6 x n_layer x seq_len x d_model for attention scores and values. The output layer is
  counted because at proxy scale it is a large share of compute; leaving it out biases
  IsoFLOP minima towards small models.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling_cli.config import ModelConfig
from scaling_cli.model.gpt import mlp_hidden_width


@dataclass(frozen=True)
class ParamCounts:
    total: int
    nonembed: int
    embedding: int
    output: int


def count_params(cfg: ModelConfig) -> ParamCounts:
    d, v = cfg.d_model, cfg.vocab_size
    hidden = mlp_hidden_width(cfg)
    attention = 4 * d * d
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * hidden
    norms = 2 * d + (2 * (d // cfg.n_head) if cfg.qk_layernorm else 0)
    per_block = attention + mlp + norms
    nonembed = cfg.n_layer * per_block + d  # + final norm
    embedding = v * d
    output = 0 if cfg.tied_embeddings else v * d
    return ParamCounts(total=nonembed + embedding + output, nonembed=nonembed, embedding=embedding, output=output)


def flops_per_token(cfg: ModelConfig) -> float:
    """Training (forward + backward) FLOPs per token."""
    d = cfg.d_model
    per_block = 4 * d * d + (3 if cfg.mlp == "swiglu" else 2) * d * mlp_hidden_width(cfg)
    matmul_params = cfg.n_layer * per_block + d * cfg.vocab_size  # norms do no matmuls
    attention = 6 * cfg.n_layer * cfg.seq_len * cfg.d_model
    return 6.0 * matmul_params + attention
