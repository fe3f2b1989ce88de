"""A short probe of one pack of the GPU default against the plain compiled model a user would
otherwise run (scaling_cli/model/plain_gpt.py), and the memory planner's estimate against the
pack's measured peak.

The pack: the GPU default's pack with the most members (its smallest architecture), trained by the
pack trainer's own step (scaling_cli.train.throughput.pack_step: PackedGPT, fused loss, PackedAdamW,
regional compilation) on random tokens; the plain model at the same width, depth, vocabulary and
context, with min(K x batch, 64) sequences a step. Both run `warmup` untimed steps (compilation)
then `steps` timed ones. The estimate is K x scaling_cli.memory.training_bytes per member (what
sizes automatic packs, before their fixed PACK_OVERHEAD_BYTES); the peak is
torch.cuda.max_memory_allocated over the steps (CUDA only: None elsewhere).
"""

from __future__ import annotations

from functools import partial

import torch

from scaling_cli.config import ModelConfig
from scaling_cli.memory import measured_member_bytes, training_bytes
from scaling_cli.model.counting import flops_per_token
from scaling_cli.model.plain_gpt import plain_step
from scaling_cli.plan import RunSpec
from scaling_cli.train.throughput import measure, pack_step, peak_flops

PLAIN_MAX_BATCH = 64


def probe_pack(pack: list[RunSpec], device: torch.device, warmup: int = 5, steps: int = 15,
               compile_model: bool = True) -> dict:
    """Tokens/s of the pack and of the plain model, their ratio, MFU (CUDA, known GPUs), and memory."""
    spec = pack[0]
    cfg = ModelConfig(**spec.config["model"])
    members, batch = len(pack), spec.config["train"]["batch_size"]
    precision = "bf16" if device.type == "cuda" else "fp32"
    packed = measure(partial(pack_step, cfg, members, batch, compile_model, device), members * batch * cfg.seq_len,
                     warmup, steps, device)
    plain_batch = min(members * batch, PLAIN_MAX_BATCH)
    plain = measure(partial(plain_step, cfg.d_model, cfg.n_layer, cfg.vocab_size, cfg.seq_len, plain_batch, device,
                            compile_model), plain_batch * cfg.seq_len, warmup, steps, device)
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    estimate = members * training_bytes(cfg, batch, precision)
    recorded = measured_member_bytes(spec)

    def mfu(tokens_per_s: float | None) -> float | None:
        return tokens_per_s * flops_per_token(cfg) / peak if tokens_per_s and peak else None

    return {"arch": f"d{cfg.d_model} L{cfg.n_layer}", "members": members, "batch": batch, "seq_len": cfg.seq_len,
            "vocab": cfg.vocab_size, "mlp": cfg.mlp, "compiled": compile_model, "warmup_steps": warmup,
            "timed_steps": steps, "pack_tokens_per_s": packed.tokens_per_s, "pack_warmup_s": packed.warmup_s,
            "pack_mfu": mfu(packed.tokens_per_s), "plain_batch": plain_batch, "plain_mlp": "gelu",
            "plain_tokens_per_s": plain.tokens_per_s, "plain_warmup_s": plain.warmup_s,
            "speedup_vs_plain": packed.tokens_per_s / plain.tokens_per_s
            if packed.tokens_per_s and plain.tokens_per_s else None,
            "memory": {"estimate_bytes": estimate, "measured_peak_bytes": packed.peak_bytes,
                       "measured_over_estimate": packed.peak_bytes / estimate if packed.peak_bytes else None,
                       "recorded_member_bytes": recorded}}
