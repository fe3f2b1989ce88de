"""GPT-style proxy: pre-norm decoder with RoPE, SDPA attention and a GELU or SwiGLU MLP.

Llama-shaped on purpose (RMSNorm, no biases, rotary positions) so a trained proxy maps onto a
Llama checkpoint. The output layer never materialises logits in training: the final hidden
states and the unembedding weight go to `scaling_cli.model.loss.lm_loss`, which uses the fused
linear + cross-entropy kernel on CUDA. `model.parametrization=mup` switches init, the attention
scale and the output multiplier to μP's width rules (scaling_cli/model/mup.py).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaling_cli.config import ModelConfig
from scaling_cli.model import mup
from scaling_cli.model.loss import lm_loss


BlockRunner = Callable[..., Tensor]
"""Runs a transformer block: run_block(block, x, *block_args) -> block(x, *block_args), or its compiled twin."""


def mlp_hidden_width(cfg: ModelConfig) -> int:
    """MLP inner width. SwiGLU keeps the parameter count of a GELU MLP at the same ratio
    by using 2/3 of the width (Shazeer 2020), rounded up to a multiple of 8."""
    width = cfg.mlp_ratio * cfg.d_model
    if cfg.mlp == "swiglu":
        width = 2 * width / 3
    return int(8 * math.ceil(width / 8))


def rope_tables(seq_len: int, head_dim: int, theta: float, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of each head, the Llama/NeoX layout."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[: x.shape[-2]], sin[: x.shape[-2]]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        # qk-layernorm (Wortsman et al. 2023) bounds attention logits, which otherwise grow
        # with the learning rate and cause the attention-entropy collapse they describe.
        self.q_norm = nn.RMSNorm(self.head_dim) if cfg.qk_layernorm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if cfg.qk_layernorm else nn.Identity()
        # Softmax scale of q.k: None is SDPA's 1/sqrt(head_dim); μP uses 1/head_dim (mup.py).
        self.scale = mup.attention_scale(cfg)

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries and keys (normalised, rotated) and values, each [batch, head, seq, head_dim]."""
        batch, seq, _ = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        return q, k, v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, seq, width = x.shape
        q, k, v = self.project(x, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, seq, width))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_hidden_width(cfg)
        self.gated = cfg.mlp == "swiglu"
        self.up = nn.Linear(cfg.d_model, 2 * hidden if self.gated else hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = mup.final_norm(cfg)  # carries μP's output multiplier (plain RMSNorm otherwise)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.d_model // cfg.n_head, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, init_std), residual projections scaled by 1/sqrt(2 n_layer)
        so the residual stream's variance does not grow with depth. μP has its own rules (mup.py)."""
        if mup.is_mup(self.cfg):
            mup.init_parameters(self, self.cfg)
            return
        std = self.cfg.init_std
        for name, param in self.named_parameters():
            if param.dim() < 2:
                continue
            scale = 1 / math.sqrt(2 * self.cfg.n_layer) if name.endswith(("proj.weight", "down.weight")) else 1.0
            nn.init.normal_(param, mean=0.0, std=std * scale)

    def trunk(self, idx: Tensor, run_block: BlockRunner | None = None) -> Tensor:
        """The residual stream after the last block [batch, seq, d_model]. `run_block(block, x, cos,
        sin)` runs each block instead of calling it (a compiled block shared by every layer:
        scaling_cli.train.compiled)."""
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.rope_cos, self.rope_sin) if run_block is None else run_block(
                block, x, self.rope_cos, self.rope_sin)
        return x

    def hidden_states(self, idx: Tensor) -> Tensor:
        """Final normalised hidden states [batch, seq, d_model] (times μP's output multiplier)."""
        return self.final_norm(self.trunk(idx))

    def head_loss(self, x: Tensor, targets: Tensor) -> Tensor:
        """Mean loss of `targets` from the residual stream after the last block (`trunk`): the final
        norm and the fused loss, the model's output head."""
        return lm_loss(self.final_norm(x), self.lm_head.weight, targets, self.cfg)

    def forward(self, idx: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Language-modelling loss of `targets` given `idx` (nats per token for 'mean')."""
        hidden = self.hidden_states(idx)
        return lm_loss(hidden, self.lm_head.weight, targets, self.cfg, reduction=reduction)

    @torch.no_grad()
    def logits(self, idx: Tensor) -> Tensor:
        """Full logits, for generation and scoring (never used in the training step)."""
        logits = F.linear(self.hidden_states(idx), self.lm_head.weight).float()
        if self.cfg.logit_softcap > 0:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        return logits
