"""K same-shape GPT proxies as one batched model: every parameter stacked along a leading K axis.

A pack trains K runs that share an architecture but may differ in anything that leaves tensor
shapes alone (lr, schedule, seed, init scale, z-loss, weight decay...). Trained one at a time, a
10M-parameter proxy leaves most of an H100 idle; packed, its matmuls become batched matmuls K
times the size, attention runs over K x B sequences in one SDPA call, and the optimizer touches
K runs per kernel launch.

    packed = PackedGPT.from_states(cfgs, [gpt.state_dict() for gpt in models])
    losses = packed(inputs, targets)          # inputs/targets [K, batch, seq] -> losses [K]
    losses.sum().backward()                    # member k's gradient is that of its own loss
    state_k = packed.member_state(k)          # a plain GPT state dict, loadable into GPT(cfgs[k])

Parameter names mirror `GPT`'s exactly, so a member's slice *is* a GPT state dict: checkpoints,
model.pt and every downstream consumer (evals, fit, finetune) cannot tell a packed run from one
trained alone. The math is GPT's, op for op (scaling_cli/model/gpt.py), with nn.Linear replaced by
bmm over the K axis; no tensor of one member ever feeds another's, so members are independent
(a NaN in one never reaches the rest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaling_cli.config import ModelConfig
from scaling_cli.model import mup
from scaling_cli.model.gpt import GPT, BlockRunner, apply_rope, mlp_hidden_width, rope_tables
from scaling_cli.model.loss import lm_loss_heads

# Model fields that may differ inside a pack: they change values, never shapes or the forward's
# structure. Everything else in ModelConfig must be equal (see `shape_fields`).
PER_MEMBER_FIELDS = ("init_std", "z_loss")


def shape_fields(cfg: ModelConfig | dict) -> tuple:
    """What must be equal for two model configs to share a pack (a hashable key)."""
    fields = cfg if isinstance(cfg, dict) else cfg.__dict__
    return tuple(sorted((k, v) for k, v in fields.items() if k not in PER_MEMBER_FIELDS))


class PackedLinear(nn.Module):
    """K independent bias-free linear maps: x [K, N, in] -> [K, N, out] with weight [K, out, in]."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))

    def forward(self, x: Tensor) -> Tensor:
        return torch.bmm(x, self.weight.transpose(1, 2))


class PackedRMSNorm(nn.Module):
    """K RMSNorms with their own gains; x [K, ..., d]. `multiplier` carries μP's output factor."""

    def __init__(self, members: int, dim: int, multiplier: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, dim))
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        gain = self.weight.view(self.weight.shape[0], *([1] * (x.dim() - 2)), self.weight.shape[1])
        out = F.rms_norm(x, (x.shape[-1],)) * gain
        return out * self.multiplier if self.multiplier != 1.0 else out


class PackedEmbedding(nn.Module):
    """K token embeddings [K, vocab, d]; ids [K, ...] -> [K, ..., d]. One gather over the flattened
    table (ids offset by k x vocab), so the backward is a single index-add, not K of them."""

    def __init__(self, members: int, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, vocab_size, dim))

    def forward(self, ids: Tensor) -> Tensor:
        members, vocab, dim = self.weight.shape
        offsets = torch.arange(members, device=ids.device).view(members, *([1] * (ids.dim() - 1))) * vocab
        return F.embedding(ids + offsets, self.weight.view(members * vocab, dim))


class PackedAttention(nn.Module):
    def __init__(self, members: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.qkv = PackedLinear(members, cfg.d_model, 3 * cfg.d_model)
        self.proj = PackedLinear(members, cfg.d_model, cfg.d_model)
        self.q_norm = PackedRMSNorm(members, self.head_dim) if cfg.qk_layernorm else None
        self.k_norm = PackedRMSNorm(members, self.head_dim) if cfg.qk_layernorm else None
        self.scale = mup.attention_scale(cfg)

    def forward(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor) -> Tensor:
        members, tokens, width = x.shape
        seq = tokens // batch
        # [K, B*T, 3d] -> q, k, v [K*B, H, T, hd]: attention runs over all K*B sequences at once
        q, k, v = self.qkv(x).view(members * batch, seq, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None:
            q = self.q_norm(q.unflatten(0, (members, batch))).flatten(0, 1)
            k = self.k_norm(k.unflatten(0, (members, batch))).flatten(0, 1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(members, tokens, width))


class PackedMLP(nn.Module):
    def __init__(self, members: int, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_hidden_width(cfg)
        self.gated = cfg.mlp == "swiglu"
        self.up = PackedLinear(members, cfg.d_model, 2 * hidden if self.gated else hidden)
        self.down = PackedLinear(members, hidden, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class PackedBlock(nn.Module):
    def __init__(self, members: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = PackedRMSNorm(members, cfg.d_model)
        self.attn = PackedAttention(members, cfg)
        self.mlp_norm = PackedRMSNorm(members, cfg.d_model)
        self.mlp = PackedMLP(members, cfg)

    def forward(self, x: Tensor, batch: int, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), batch, cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class PackedGPT(nn.Module):
    """K GPTs of one shape. Parameters are left uninitialised: a pack is always built from its
    members' own GPT state dicts (`from_states`), so each member starts exactly where the same
    run trained alone would (its own seed, init scale and μP rules)."""

    def __init__(self, cfgs: list[ModelConfig]) -> None:
        super().__init__()
        if not cfgs:
            raise ValueError("a pack needs at least one member")
        if len({shape_fields(c) for c in cfgs}) > 1:
            raise ValueError("pack members must share every model field except " + ", ".join(PER_MEMBER_FIELDS))
        self.cfgs = list(cfgs)
        cfg, members = cfgs[0], len(cfgs)
        # What every member shares (shape, soft-cap, loss implementation), for code that a compiled
        # region runs: it must not read the list of members, whose length would specialise the graph.
        self.shape_cfg = cfg
        self.embed = PackedEmbedding(members, cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(PackedBlock(members, cfg) for _ in range(cfg.n_layer))
        self.final_norm = PackedRMSNorm(members, cfg.d_model, mup.output_multiplier(cfg))  # 1 unless μP
        self.lm_head = PackedLinear(members, cfg.d_model, cfg.vocab_size)
        if cfg.tied_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.d_model // cfg.n_head, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # Members' z-loss coefficients on the device: the loss reads them there every step (no host
        # copy), and a compiled step sees a tensor input rather than constants to specialise on.
        self.register_buffer("z_loss", torch.tensor([c.z_loss for c in cfgs], dtype=torch.float32),
                             persistent=False)

    @property
    def members(self) -> int:
        return len(self.cfgs)

    @classmethod
    def from_states(cls, cfgs: list[ModelConfig], states: list[dict[str, Tensor]]) -> "PackedGPT":
        """A pack whose member k holds GPT state dict `states[k]` (on the packed model's device)."""
        packed = cls(cfgs)
        packed.load_member_states(states)
        return packed

    @torch.no_grad()
    def load_member_states(self, states: list[dict[str, Tensor]]) -> None:
        if len(states) != self.members:
            raise ValueError(f"{len(states)} member states for a pack of {self.members}")
        for name, param in self.named_parameters():  # a tied lm_head appears once, as embed.weight
            param.copy_(torch.stack([state[name].to(param.device, param.dtype) for state in states]))

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters as a GPT state dict (copies; a tied weight stays one tensor)."""
        copies: dict[int, Tensor] = {}
        state = {}
        for name, tensor in self.state_dict().items():
            key = tensor.data_ptr()
            if key not in copies:
                copies[key] = tensor[k].detach().clone()
            state[name] = copies[key]
        return state

    @torch.no_grad()
    def keep(self, members: list[int]) -> None:
        """Shrink the pack to `members` (indices into the current pack), e.g. when runs finish.
        Parameters are replaced by new ones (autograd records a leaf's shape), so an optimizer
        must look them up again by name (PackedAdamW.keep does)."""
        index = torch.tensor(members, device=self.rope_cos.device)
        for name, param in list(self.named_parameters()):
            owner, _, attr = name.rpartition(".")
            setattr(self.get_submodule(owner), attr, nn.Parameter(param.index_select(0, index)))
        if self.cfgs[0].tied_embeddings:
            self.lm_head.weight = self.embed.weight
        self.z_loss = self.z_loss.index_select(0, index)
        self.cfgs = [self.cfgs[i] for i in members]

    def trunk(self, idx: Tensor, run_block: BlockRunner | None = None) -> Tensor:
        """The residual stream after the last block [K, batch * seq, d_model] of inputs [K, batch, seq].
        `run_block(block, x, batch, cos, sin)` runs each block instead of calling it (a compiled block
        shared by every layer: scaling_cli.train.compiled)."""
        members, batch, seq = idx.shape
        x = self.embed(idx).view(members, batch * seq, -1)
        for block in self.blocks:
            x = block(x, batch, self.rope_cos, self.rope_sin) if run_block is None else run_block(
                block, x, batch, self.rope_cos, self.rope_sin)
        return x

    def hidden_states(self, idx: Tensor) -> Tensor:
        """Final normalised hidden states [K, batch * seq, d_model] of inputs [K, batch, seq]."""
        return self.final_norm(self.trunk(idx))

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean language-modelling loss of each member [K] (nats/token), each under its own z-loss."""
        return self.losses(self.hidden_states(idx), targets)

    def losses(self, hidden: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Each member's loss [K] ('mean' per token, or 'sum') from its hidden states [K, N, d] and
        targets [K, ...]: the fused
        linear + cross-entropy over all K heads at once (logits never materialised; each kernel
        launch covers every head, so a pack launches as often as one run)."""
        return lm_loss_heads(hidden, self.lm_head.weight, targets, [self.shape_cfg], reduction, z_loss=self.z_loss)

    def member(self, k: int) -> GPT:
        """A standalone GPT holding a copy of member k (for validation, evals and model.pt)."""
        with torch.device("meta"):
            model = GPT(self.cfgs[k])
        model.load_state_dict(self.member_state(k), assign=True)
        if self.cfgs[k].tied_embeddings:
            model.lm_head.weight = model.embed.weight
        model.rope_cos, model.rope_sin = self.rope_cos, self.rope_sin
        return model


def head_losses(model: PackedGPT, x: Tensor, targets: Tensor) -> Tensor:
    """Each member's mean loss [K] from the residual stream after the last block (`trunk`): the
    final norm and the fused loss, the pack's output head (a compiled region of its own when the
    loss is an opaque op: scaling_cli.train.compiled)."""
    return model.losses(model.final_norm(x), targets)
