"""The baseline a user would otherwise run: a plain nanoGPT-style model and step in PyTorch.

    step = plain_step(d_model=128, n_layer=4, vocab=32768, seq_len=1024, batch=64, device=torch.device("cuda"))
    step()   # one training step: bf16 autocast forward, logits + F.cross_entropy, backward, fused AdamW

LayerNorm (with bias), learned positions, causal SDPA, a 4x GELU MLP, tied embeddings, logits
materialised and fed to F.cross_entropy, torch.compile of the whole model, gradient clipping and a
fused AdamW: what the 70-line scripts everyone has do, so the pack table's speed-ups are against it.
Heads of 64. Not used for training: the baseline that `scaling-cli doctor`'s pack probe and
benchmarks/bench_pack_throughput.py time the pack step against.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, d: int, n_layer: int, vocab: int, seq_len: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(Block(d, max(1, d // 64)) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def plain_step(d_model: int, n_layer: int, vocab: int, seq_len: int, batch: int, device: torch.device,
               compile_model: bool = True) -> Callable[[], None]:
    """One training step of the plain model on a fixed random batch (timing only)."""
    torch.manual_seed(0)
    model = PlainGPT(d_model, n_layer, vocab, seq_len).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=3e-3, betas=(0.9, 0.95), fused=device.type == "cuda")
    forward = torch.compile(model) if compile_model else model
    x = torch.randint(0, vocab, (batch, seq_len), device=device)
    y = torch.randint(0, vocab, (batch, seq_len), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
