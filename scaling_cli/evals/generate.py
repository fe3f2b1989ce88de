"""Greedy decoding with a key/value cache, and log-likelihood scoring of continuations.

    greedy_generate(model, prompts, max_new_tokens, eos_id)        # KV cache, batched
    greedy_generate_nocache(model, prompt, max_new_tokens, eos_id) # reference: full recompute
    score_continuations(model, pairs)                              # sum log p(cont | ctx), n tokens

The cached decoder runs the GPT's own modules (embedding, norms, qkv/proj, MLP, lm_head) one
block at a time, so it cannot drift from the model's definition; only attention is rewritten, to
read cached keys/values. Prompts of different lengths are left-padded: every row's real tokens
take RoPE positions 0, 1, ... whatever its padding, pad keys are masked out, and a pad query
attends to itself only (a row of -inf would give NaN, and NaN values times zero weight stay NaN).
tests/test_evals_generate.py checks the cached decoder token for token against full recompute.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _rope_at(x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor) -> Tensor:
    """RoPE (the model's Llama/NeoX half-split layout, scaling_cli.model.gpt.apply_rope) at
    per-row positions: x [B, H, T, hd], positions [B, T]."""
    c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).type_as(x)


def _head_logits(model, hidden: Tensor) -> Tensor:
    """Logits from final hidden states, exactly as GPT.logits (fp32, soft-capped when configured)."""
    logits = F.linear(model.final_norm(hidden), model.lm_head.weight).float()
    cap = model.cfg.logit_softcap
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


class KVCache:
    """Per-layer key/value buffers [B, H, T_max, hd], allocated on first write (dtype of the keys)."""

    def __init__(self, n_layer: int, capacity: int) -> None:
        self.k: list[Tensor | None] = [None] * n_layer
        self.v: list[Tensor | None] = [None] * n_layer
        self.capacity = capacity

    def write(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k[layer] is None:
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.k[layer] = k.new_zeros(shape)
            self.v[layer] = v.new_zeros(shape)
        end = start + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def forward_cached(model, idx: Tensor, positions: Tensor, key_valid: Tensor, cache: KVCache, start: int) -> Tensor:
    """Run `idx` [B, T] (slots start..start+T of the cache) through the model; logits of the last
    slot [B, V]. key_valid [B, start+T] marks real (non-pad) slots."""
    batch, steps = idx.shape
    total = start + steps
    q_slot = torch.arange(start, total, device=idx.device)
    k_slot = torch.arange(total, device=idx.device)
    causal = k_slot[None, :] <= q_slot[:, None]                                  # [T, total]
    allowed = causal[None] & key_valid[:, None, :total]                          # [B, T, total]
    allowed = allowed | (k_slot[None, None, :] == q_slot[None, :, None])         # pad queries: self only
    mask = allowed[:, None]                                                      # [B, 1, T, total]
    x = model.embed(idx)
    cos, sin = model.rope_cos, model.rope_sin
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        h = block.attn_norm(x)
        q, k, v = attn.qkv(h).view(batch, steps, 3, attn.n_head, attn.head_dim).permute(2, 0, 3, 1, 4)
        q = _rope_at(attn.q_norm(q), cos, sin, positions)
        k = _rope_at(attn.k_norm(k), cos, sin, positions)
        keys, values = cache.write(layer, start, k, v)
        out = F.scaled_dot_product_attention(q, keys, values.to(q.dtype), attn_mask=mask, scale=attn.scale)
        x = x + attn.proj(out.transpose(1, 2).reshape(batch, steps, -1))
        x = x + block.mlp(block.mlp_norm(x))
    return _head_logits(model, x[:, -1])


@torch.no_grad()
def greedy_generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], eos_id: int,
                    stop_ids: Sequence[int] = (), pad_id: int | None = None) -> list[list[int]]:
    """Greedy continuations of every prompt, batched, with a KV cache.

    A row stops at `eos_id` or any of `stop_ids` (neither is returned) or after its budget:
    max_new_tokens (one int, or one per prompt), capped so that the row never runs past the model's
    RoPE table (model.cfg.seq_len positions). Prompts must be non-empty and shorter than seq_len.
    """
    if not prompts:
        return []
    device = model.embed.weight.device
    seq_len = model.cfg.seq_len
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1 or max(lengths) >= seq_len:
        raise ValueError(f"prompt lengths must be in [1, {seq_len - 1}], got {min(lengths)}..{max(lengths)}")
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    budgets = [max(0, min(b, seq_len - n)) for b, n in zip(budgets, lengths)]
    width, steps = max(lengths), max(budgets)
    pad = eos_id if pad_id is None else pad_id
    batch = len(prompts)
    idx = torch.full((batch, width), pad, dtype=torch.long)
    valid = torch.zeros((batch, width + steps), dtype=torch.bool)
    pos = torch.zeros((batch, width), dtype=torch.long)
    for b, p in enumerate(prompts):
        idx[b, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        valid[b, width - len(p):width] = True
        pos[b, width - len(p):] = torch.arange(len(p))
    idx, valid, pos = idx.to(device), valid.to(device), pos.to(device)
    length = torch.as_tensor(lengths, device=device)
    budget = torch.as_tensor(budgets, device=device)
    stops = torch.as_tensor(sorted({eos_id, *stop_ids}), device=device)
    was_training = model.training
    model.eval()
    cache = KVCache(len(model.blocks), width + steps)
    out = torch.full((batch, steps), -1, dtype=torch.long, device=device)
    done = budget == 0
    try:
        logits = forward_cached(model, idx, pos, valid, cache, 0)
        for t in range(steps):
            nxt = logits.argmax(dim=-1)
            finished = done | torch.isin(nxt, stops)
            out[:, t] = torch.where(finished, torch.full_like(nxt, -1), nxt)
            done = finished | (t + 1 >= budget)
            if bool(done.all()) or t + 1 == steps:
                break
            valid[:, width + t] = ~done
            # A finished row feeds a masked pad at a clamped position; its outputs are never read.
            step_pos = torch.clamp(length + t, max=seq_len - 1)[:, None]
            logits = forward_cached(model, torch.where(done, pad, nxt)[:, None], step_pos, valid, cache, width + t)
    finally:
        model.train(was_training)
    result = []
    for row in out.tolist():
        tokens = []
        for tok in row:
            if tok < 0:
                break
            tokens.append(tok)
        result.append(tokens)
    return result


@torch.no_grad()
def greedy_generate_nocache(model, prompt: Sequence[int], max_new_tokens: int, eos_id: int,
                            stop_ids: Sequence[int] = ()) -> list[int]:
    """Reference greedy decoding: recompute the whole sequence with `model.logits` at every step."""
    device = model.embed.weight.device
    budget = max(0, min(max_new_tokens, model.cfg.seq_len - len(prompt)))
    seq = list(prompt)
    out: list[int] = []
    stops = {eos_id, *stop_ids}
    for _ in range(budget):
        nxt = int(model.logits(torch.as_tensor([seq], device=device))[0, -1].argmax())
        if nxt in stops:
            break
        out.append(nxt)
        seq.append(nxt)
    return out


@torch.no_grad()
def score_continuations(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 32,
                        autocast=None) -> list[tuple[float, int, bool]]:
    """(sum of log p(continuation | context) in nats, continuation tokens, greedy match) per pair.

    The sequence context + continuation is cut from the left to the model's context length
    (seq_len + 1 tokens, since the last token is only a target); a continuation that does not fit
    with one context token raises ValueError (callers skip such items). Logits are computed only at
    the continuation positions. Pairs are batched by length (right padding, which a causal model
    never sees) and returned in input order.
    """
    from contextlib import nullcontext

    device = model.embed.weight.device
    seq_len = model.cfg.seq_len
    seqs, conts = [], []
    for ctx, cont in pairs:
        if len(cont) < 1 or len(ctx) < 1:
            raise ValueError("context and continuation must each have at least one token")
        if len(cont) > seq_len:
            raise ValueError(f"continuation of {len(cont)} tokens does not fit seq_len={seq_len}")
        full = (list(ctx) + list(cont))[-(seq_len + 1):]
        seqs.append(full)
        conts.append(len(cont))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    results: list[tuple[float, int, bool] | None] = [None] * len(seqs)
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(order), batch_size):
            chunk = order[begin:begin + batch_size]
            width = max(len(seqs[i]) for i in chunk) - 1
            inputs = torch.zeros((len(chunk), width), dtype=torch.long)
            rows, cols, targets = [], [], []
            for r, i in enumerate(chunk):
                s = seqs[i]
                inputs[r, :len(s) - 1] = torch.as_tensor(s[:-1])
                first = len(s) - 1 - conts[i]  # input position that predicts the first continuation token
                rows += [r] * conts[i]
                cols += list(range(first, len(s) - 1))
                targets += s[len(s) - conts[i]:]
            with autocast if autocast is not None else nullcontext():
                hidden = model.hidden_states(inputs.to(device))
            picked = hidden[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)]
            logits = F.linear(picked.float(), model.lm_head.weight.float())
            cap = model.cfg.logit_softcap
            if cap > 0:
                logits = cap * torch.tanh(logits / cap)
            logp = torch.log_softmax(logits, dim=-1)
            tgt = torch.as_tensor(targets, device=device)
            token_lp = logp.gather(1, tgt[:, None])[:, 0].double().cpu()
            greedy = (logp.argmax(dim=-1) == tgt).cpu()
            offset = 0
            for i in chunk:
                n = conts[i]
                results[i] = (float(token_lp[offset:offset + n].sum()), n, bool(greedy[offset:offset + n].all()))
                offset += n
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]
