"""A proxy as a transformers-native model: the same function, in a class `AutoModelForCausalLM` knows.

    hf_model = to_hf(model)                    # in memory, checked against our logits
    save_hf(model, tokenizer, "out/")          # config.json, model.safetensors, tokenizer files

Our GPT (scaling_cli/model/gpt.py) is a pre-norm decoder with RMSNorm everywhere, no biases and
rotary positions (the Llama/NeoX half-split layout); what varies is the MLP (GELU-tanh, two
matrices, or SwiGLU, three), per-head qk-RMSNorm, tied embeddings, a logit soft-cap and μP. Each
combination maps to the one transformers class whose forward is the same function:

    mlp     qk_layernorm  logit_softcap  class
    swiglu  no            0              LlamaForCausalLM
    swiglu  yes           0              Qwen3ForCausalLM      (per-head q/k RMSNorm before RoPE)
    gelu    no            0              ArceeForCausalLM      (Llama with an ungated MLP)
    gelu    yes           0              ApertusForCausalLM    (ungated MLP, per-head q/k RMSNorm)
    swiglu  no            > 0            VaultGemmaForCausalLM (Gemma's final soft-cap, pre-norm only)

Anything else (a soft-cap with a GELU MLP or with qk-norm) has no exact twin and is refused.
Folded into the weights, exactly up to float rounding:
- μP's attention scale 1/sqrt(d_head m) vs the class's 1/sqrt(d_head): queries times 1/sqrt(m),
  on the q projection, or on the q-norm gain when queries are normalised (RoPE is linear, so a
  scalar commutes with it);
- μP's output multiplier 1/m: on the final norm's gain (mup.OutputScaledRMSNorm applies it there);
- Gemma's sqrt(d_model) embedding scale and (1 + w) norm gains (VaultGemma only): the embedding is
  divided by sqrt(d_model) and the gains stored as w - 1; with tied embeddings the final norm gain
  takes the sqrt(d_model) back, so the logits are unchanged.
The z-loss only shapes training (it is not part of the forward) and needs nothing. The RMSNorm
epsilon is torch's default for fp32 inputs (nn.RMSNorm(eps=None) uses finfo(float32).eps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from scaling_cli.config import ModelConfig
from scaling_cli.errors import UserError
from scaling_cli.model import mup
from scaling_cli.model.gpt import GPT, mlp_hidden_width

# A proxy's RMSNorms see fp32 inputs, for which nn.RMSNorm(eps=None) uses the dtype's epsilon.
RMS_EPS = torch.finfo(torch.float32).eps
# The in-memory check after conversion: worst |logit difference| allowed, relative to the logits'
# scale (fp32 rounding in a different operation order is ~1e-6 of it).
VERIFY_RTOL = 1e-4


@dataclass(frozen=True)
class Target:
    """A transformers causal-LM class and how our modules map onto its parameter names."""

    model_class: str
    config_class: str
    since: str
    """First transformers release with the class (a clear error on older installs)."""
    attn_norm: str = "input_layernorm"
    mlp_norm: str = "post_attention_layernorm"
    gated: bool = True
    """act(gate) * up with three matrices; else act(up), two (GELU)."""
    gemma: bool = False
    """Gemma conventions: (1 + w) norm gains, embeddings scaled by sqrt(d_model), final soft-cap."""
    extra: dict = field(default_factory=dict)
    """Config keys this class needs beyond the common ones."""


LLAMA = Target("LlamaForCausalLM", "LlamaConfig", "4.44", extra={"mlp_bias": False})
QWEN3 = Target("Qwen3ForCausalLM", "Qwen3Config", "4.51",
               extra={"use_sliding_window": False, "sliding_window": None})
ARCEE = Target("ArceeForCausalLM", "ArceeConfig", "4.53", gated=False, extra={"mlp_bias": False})
APERTUS = Target("ApertusForCausalLM", "ApertusConfig", "4.56", gated=False,
                 attn_norm="attention_layernorm", mlp_norm="feedforward_layernorm")
VAULTGEMMA = Target("VaultGemmaForCausalLM", "VaultGemmaConfig", "4.57", gemma=True,
                    mlp_norm="pre_feedforward_layernorm", extra={"attn_logit_softcapping": None})


def target_for(cfg: ModelConfig) -> Target:
    """The transformers class computing the same function as a proxy of this config; UserError
    naming the variant when there is none."""
    if cfg.logit_softcap > 0:
        if cfg.mlp != "swiglu" or cfg.qk_layernorm:
            variant = "model.mlp=gelu" if cfg.mlp != "swiglu" else "model.qk_layernorm=true"
            raise UserError(f"model.logit_softcap={cfg.logit_softcap:g} with {variant}: no transformers class has "
                            "this architecture (soft-capped logits exist only in Gemma-style classes, with a SwiGLU "
                            "MLP and no qk-norm), so the proxy cannot be exported exactly")
        return VAULTGEMMA
    if cfg.mlp == "swiglu":
        return QWEN3 if cfg.qk_layernorm else LLAMA
    return APERTUS if cfg.qk_layernorm else ARCEE


def _classes(target: Target, cfg: ModelConfig):
    import transformers

    model_cls = getattr(transformers, target.model_class, None)
    config_cls = getattr(transformers, target.config_class, None)
    if model_cls is None or config_cls is None:
        raise UserError(f"model.mlp={cfg.mlp}, qk_layernorm={cfg.qk_layernorm}: the export needs transformers>="
                        f"{target.since} ({target.model_class}); this install has {transformers.__version__}: "
                        f"pip install 'transformers>={target.since}'")
    return model_cls, config_cls


def _rope_kwargs(theta: float) -> dict:
    """RoPE settings in the installed transformers' terms: transformers 5 reads `rope_parameters`
    (and some classes, Apertus among them, ignore a bare rope_theta and keep their own scaled
    default), transformers 4 reads rope_theta and rope_scaling."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"rope_parameters": {"rope_type": "default", "rope_theta": float(theta)}}
    return {"rope_theta": float(theta), "rope_scaling": None}


def hf_config(cfg: ModelConfig, special_ids: dict | None = None):
    """The transformers config of the twin class of a proxy of this config."""
    target = target_for(cfg)
    _, config_cls = _classes(target, cfg)
    head_dim = cfg.d_model // cfg.n_head
    kwargs = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=mlp_hidden_width(cfg),
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
        head_dim=head_dim, max_position_embeddings=cfg.seq_len, rms_norm_eps=RMS_EPS,
        tie_word_embeddings=cfg.tied_embeddings, attention_bias=False, attention_dropout=0.0,
        initializer_range=cfg.init_std, use_cache=True, **_rope_kwargs(cfg.rope_theta), **target.extra,
        **(special_ids or {}),
    )
    activation = "silu" if target.gated else "gelu_pytorch_tanh"  # F.gelu(approximate="tanh"), as in our MLP
    if target.gemma:
        kwargs.update(hidden_activation=activation, query_pre_attn_scalar=head_dim,
                      final_logit_softcapping=float(cfg.logit_softcap), layer_types=["full_attention"] * cfg.n_layer,
                      sliding_window=cfg.seq_len)  # no layer slides, but the class builds that mask anyway
    else:
        kwargs["hidden_act"] = activation
    if target is QWEN3:
        kwargs["layer_types"] = ["full_attention"] * cfg.n_layer
    return config_cls(**kwargs)


def hf_state_dict(model: GPT, target: Target) -> dict[str, Tensor]:
    """Our parameters under the target class's names, with every multiplier folded in."""
    cfg = model.cfg
    d = cfg.d_model
    head_dim = d // cfg.n_head
    # μP scores q.k with 1/sqrt(d_head m); the class uses 1/sqrt(d_head): queries carry the rest.
    scale = mup.attention_scale(cfg)
    query_factor = 1.0 if scale is None else scale * math.sqrt(head_dim)
    gain_offset = 1.0 if target.gemma else 0.0  # Gemma norms compute x (1 + w)
    embed_scale = math.sqrt(d) if target.gemma else 1.0  # Gemma multiplies embeddings by sqrt(d_model)

    def gain(weight: Tensor, factor: float = 1.0) -> Tensor:
        return weight.detach().float() * factor - gain_offset

    out: dict[str, Tensor] = {"model.embed_tokens.weight": model.embed.weight.detach().float() / embed_scale}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = block.attn.qkv.weight.detach().float().split(d, dim=0)
        out[p + f"{target.attn_norm}.weight"] = gain(block.attn_norm.weight)
        out[p + f"{target.mlp_norm}.weight"] = gain(block.mlp_norm.weight)
        if cfg.qk_layernorm:
            out[p + "self_attn.q_norm.weight"] = gain(block.attn.q_norm.weight, query_factor)
            out[p + "self_attn.k_norm.weight"] = gain(block.attn.k_norm.weight)
        else:
            q = q * query_factor
        out[p + "self_attn.q_proj.weight"] = q
        out[p + "self_attn.k_proj.weight"] = k
        out[p + "self_attn.v_proj.weight"] = v
        out[p + "self_attn.o_proj.weight"] = block.attn.proj.weight.detach().float()
        up = block.mlp.up.weight.detach().float()
        if target.gated:  # our fused up projection is [gate; up] (MLP.forward chunks it in that order)
            gate, up = up.chunk(2, dim=0)
            out[p + "mlp.gate_proj.weight"] = gate
        out[p + "mlp.up_proj.weight"] = up
        out[p + "mlp.down_proj.weight"] = block.mlp.down.weight.detach().float()
    # The final norm carries μP's output multiplier; with Gemma's scaled, tied embedding it also
    # carries sqrt(d_model) back so that the logits hidden . E^T are ours.
    final_factor = mup.output_multiplier(cfg) * (embed_scale if cfg.tied_embeddings else 1.0)
    out["model.norm.weight"] = gain(model.final_norm.weight, final_factor)
    out["lm_head.weight"] = out["model.embed_tokens.weight"] if cfg.tied_embeddings else model.lm_head.weight.detach().float()
    return {name: t.contiguous() for name, t in out.items()}


def to_hf(model: GPT, special_ids: dict | None = None, verify: bool = True):
    """A transformers model (fp32, eval mode, on the proxy's device) computing our model's logits.
    `special_ids`: bos/eos/pad token ids for its config. With `verify`, our logits and its logits
    on a probe sequence are compared and a mismatch raises RuntimeError (a transformers release
    that changed a class's forward would be caught here, not by a user's eval)."""
    cfg = model.cfg
    target = target_for(cfg)
    model_cls, _ = _classes(target, cfg)
    config = hf_config(cfg, special_ids)
    device = model.embed.weight.device
    hf_model = model_cls(config).to(device=device, dtype=torch.float32)
    missing, unexpected = hf_model.load_state_dict(hf_state_dict(model, target), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tied_embeddings)]
    if missing or unexpected:  # our mapping and the class disagree: never save a half-filled model
        raise RuntimeError(f"{target.model_class}: parameters not mapped {missing}, unknown {unexpected}")
    if cfg.tied_embeddings:
        hf_model.tie_weights()
    if special_ids:
        for key, value in special_ids.items():
            setattr(hf_model.generation_config, key, value)
    hf_model.eval()
    if verify:
        check_logits(model, hf_model)
    return hf_model


@torch.no_grad()
def check_logits(model: GPT, hf_model, length: int = 64) -> float:
    """Max |our logits - theirs| on a fixed pseudo-random sequence; RuntimeError beyond tolerance."""
    cfg = model.cfg
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(0, cfg.vocab_size, (1, min(length, cfg.seq_len)), generator=generator)
    idx = idx.to(model.embed.weight.device)
    was_training = model.training
    model.eval()
    try:
        ours = model.logits(idx)
    finally:
        model.train(was_training)
    theirs = hf_model(input_ids=idx).logits.float()
    worst = float((ours - theirs).abs().max())
    if not worst <= VERIFY_RTOL * max(1.0, float(ours.abs().max())):
        raise RuntimeError(f"{type(hf_model).__name__} does not reproduce the proxy: max |logit difference| "
                           f"{worst:.3g}; this transformers release is not supported by the exporter")
    return worst


def hf_tokenizer(tokenizer, seq_len: int):
    """A copy of the run's tokenizer ready to save beside the model: our BPE's one special token,
    <|endoftext|>, separates documents in training, so it is EOS, BOS (what precedes a document)
    and the padding token; model_max_length is the proxy's context."""
    import copy

    tok = copy.deepcopy(tokenizer)
    eos = tok.eos_token
    if eos is None:
        raise UserError("data.tokenizer: the run's tokenizer has no EOS token; it cannot be exported")
    if tok.bos_token is None:
        tok.bos_token = eos
    if tok.pad_token is None:
        tok.pad_token = eos
    tok.model_max_length = seq_len
    return tok


def special_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def save_hf(model: GPT, tokenizer, out: str | Path) -> dict:
    """Write a transformers checkpoint of `model` with `tokenizer` into the folder `out` (which
    must not exist yet; written to a sibling temporary folder and renamed, so it is never half
    there). Returns {"class", "path", "max_logit_diff"}."""
    import shutil
    import uuid

    out = Path(out)
    tok = hf_tokenizer(tokenizer, model.cfg.seq_len)
    hf_model = to_hf(model, special_ids(tok), verify=False)
    worst = check_logits(model, hf_model)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        hf_model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        _portable_config(tmp / "config.json", model.cfg.rope_theta)
        _portable_tokenizer_class(tmp / "tokenizer_config.json")
        tmp.replace(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"class": type(hf_model).__name__, "path": str(out), "max_logit_diff": worst}


def _portable_config(path: Path, theta: float) -> None:
    """RoPE under both spellings, so transformers 4 and 5 read the same model: 5 writes and reads
    `rope_parameters`, 4 writes and reads rope_theta / rope_scaling, and each ignores the other's
    keys, falling back to the class default (Apertus: llama3-scaled RoPE, silently different
    logits). Checked both ways with 4.57 and 5.24."""
    import json

    config = json.loads(path.read_text())
    config.setdefault("rope_theta", float(theta))
    config.setdefault("rope_scaling", None)
    config.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": float(theta)})
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _portable_tokenizer_class(path: Path) -> None:
    """transformers 5 saves a tokenizers-backed tokenizer as 'TokenizersBackend', a name
    transformers 4 cannot resolve; 'PreTrainedTokenizerFast' is the same class under the name
    both read (5 keeps it as an alias)."""
    import json

    if not path.exists():
        return
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
