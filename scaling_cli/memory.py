"""GPU memory of a training step: the planner's estimate, calibrated on a measured peak, and the
measured peaks of real packs, kept in the cache so later packs of a shape are sized from measurement.

    training_bytes(model_cfg, batch_size, "bf16")      # one run (one pack member), bytes
    record_peak(spec, members=12, peak_bytes=...)      # after a pack's first steps on CUDA
    measured_member_bytes(spec)                        # per member, from the records, or None

The estimate counts what autograd keeps for the backward, per token and layer, exactly as the
model computes (scaling_cli/model/gpt.py, packed_gpt.py), under bf16 autocast:
  attention half, 34 d bytes: RMSNorm input and output (fp32, 8d), the bf16 input of the qkv matmul
  (2d), its whole output (6d: SDPA keeps v, a view of it), rotated q and k (bf16, 4d), the attention
  output (2d) and its transposed copy that feeds the projection (2d), and the same 8d + 2d for the
  MLP's norm and up-projection input;
  MLP, per unit of hidden width h: GELU keeps its input and output (bf16, 4h); SwiGLU the up output
  (gate and up halves, 4h), silu(gate) (2h) and the product that feeds the down matmul (2h), 8h;
  qk-layernorm adds 12d (norm inputs and outputs of q and k).
In fp32 every bf16 tensor above is fp32 (52d; 8h / 16h; 8d). The head keeps the final norm's input
and output (fp32, 8d) and the bf16 hidden states of the fused loss (2d), plus per token the loss's
fp32 log-sum-exp and target logit and the int64 targets and input ids. Weights: fp32 weights,
gradients and two Adam moments (16 bytes per parameter), plus the bf16 copies autocast makes of
the matrices and keeps for the backward (2 bytes per parameter). tests/test_memory.py checks this
count against torch's saved-tensor hooks on a CPU, per layer, for both MLPs, qk-norm and both precisions.

Calibration: an H100 measured 7.2 GiB (torch.cuda.max_memory_allocated, eager, bf16) for a pack of 16
d128/L4 GELU proxies (V 32768, seq 1024, 16 sequences each; benchmarks/bench_pack_throughput.py,
issue 14), where the count above gives 7.9 GiB: CUDA's attention and norm kernels keep a little less
than the CPU's, and the activation-gradient buffers of the backward are short-lived. The activations
are scaled by ACTIVATION_CALIBRATION to match that point. One point, eager: torch.compile keeps less
(inductor recomputes cheap ops), so for compiled runs the estimate is an upper bound until a
measured peak of that shape is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from scaling_cli.cache import cache_root
from scaling_cli.config import ModelConfig
from scaling_cli.model.counting import count_params
from scaling_cli.model.gpt import mlp_hidden_width
from scaling_cli.model.packed_gpt import shape_fields
from scaling_cli.plan import RunSpec

# Bytes kept for the backward, per token: (per d in a layer, per MLP hidden unit by MLP type,
# per d of qk-layernorm), by compute precision. See the module docstring.
_LAYER = {"bf16": (34, {"gelu": 4, "swiglu": 8}, 12), "fp32": (52, {"gelu": 8, "swiglu": 16}, 8)}
# Head: final norm (fp32 input and output) + the loss's hidden states, per d; plus lse and target
# logit (fp32) and targets and input ids (int64), per token.
_HEAD = {"bf16": (10, 24), "fp32": (12, 24)}

ACTIVATION_CALIBRATION = 0.893
"""Measured / counted activation memory at the calibration point (module docstring): 7.2 GiB measured
on an H100 against the count's 7.90 GiB (1.34 GiB of weights, 6.57 GiB of activations), solved for the activations."""

CALIBRATION_POINT = {"model": ModelConfig(d_model=128, n_layer=4, n_head=2, seq_len=1024, vocab_size=32768),
                     "batch_size": 16, "members": 16, "precision": "bf16", "peak_bytes": 7.2 * (1 << 30)}
"""The measured configuration the estimate is calibrated on (issue 14's H100 measurement)."""


def saved_bytes_per_token(model: ModelConfig, precision: str) -> dict[str, float]:
    """What autograd keeps per token: {'layer': one transformer block, 'head': final norm + loss}."""
    per_d, per_hidden, qk = _LAYER[precision]
    layer = per_d * model.d_model + per_hidden[model.mlp] * mlp_hidden_width(model)
    if model.qk_layernorm:
        layer += qk * model.d_model
    head_d, head_token = _HEAD[precision]
    return {"layer": float(layer), "head": float(head_d * model.d_model + head_token)}


def training_bytes(model: ModelConfig, batch_size: int, precision: str = "bf16") -> int:
    """GPU memory to train one model (one member of a pack): weights, gradients and Adam moments,
    autocast's bf16 weight copies, and the calibrated activations of one step."""
    params = count_params(model).total
    weights = (16 + (2 if precision == "bf16" else 0)) * params
    saved = saved_bytes_per_token(model, precision)
    tokens = batch_size * model.seq_len
    activations = tokens * (model.n_layer * saved["layer"] + saved["head"])
    return int(weights + ACTIVATION_CALIBRATION * activations)


def step_precision(spec: RunSpec) -> str:
    """The compute precision of a run's step: bf16 unless fp32 is asked for ('auto' is bf16 on CUDA)."""
    train = spec.config["train"]
    if train["precision"] == "fp32" or (train["precision"] == "auto" and train["device"] == "cpu"):
        return "fp32"
    return "bf16"


# ------------------------------------------------------------------ measured peaks

def _records_path() -> Path:
    return cache_root() / "packs" / "memory.json"


def memory_key(spec: RunSpec) -> str:
    """Runs with equal keys use the same memory per pack member: shape, batch, precision, compilation."""
    train = spec.config["train"]
    fields = {"model": shape_fields(spec.config["model"]), "batch_size": train["batch_size"],
              "precision": step_precision(spec), "compile": bool(train.get("compile")),
              "compile_mode": train.get("compile_mode", "default")}
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_records() -> dict:
    try:
        records = json.loads(_records_path().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: estimate instead
        return {}
    return records if isinstance(records, dict) else {}


def record_peak(spec: RunSpec, members: int, peak_bytes: int, device: str = "") -> None:
    """Keep a pack's measured peak (torch.cuda.max_memory_allocated over its first steps) for its shape."""
    path = _records_path()
    records = _load_records()
    entry = records.setdefault(memory_key(spec), {"name": spec.name.split("-")[0], "peaks": []})
    entry["peaks"] = [p for p in entry["peaks"] if p.get("members") != members] + [
        {"members": int(members), "peak_bytes": int(peak_bytes), "device": device}]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError as err:  # a read-only cache costs the measurement, never the pack
        warnings.warn(f"could not record the pack's memory peak in {path} ({err}); later packs use the estimate")


def measured_member_bytes(spec: RunSpec) -> int | None:
    """Per-member memory of this shape from recorded peaks (the largest peak / members over the
    records, so fixed buffers are charged to every member), or None when none was recorded."""
    entry = _load_records().get(memory_key(spec))
    peaks = [p for p in (entry or {}).get("peaks", []) if p.get("members", 0) > 0 and p.get("peak_bytes", 0) > 0]
    if not peaks:
        return None
    return max(int(p["peak_bytes"] / p["members"]) for p in peaks)


def member_bytes(spec: RunSpec) -> int:
    """GPU memory one run of a pack needs: measured for its shape when recorded, else estimated."""
    measured = measured_member_bytes(spec)
    if measured is not None:
        return measured
    return training_bytes(ModelConfig(**spec.config["model"]), spec.config["train"]["batch_size"], step_precision(spec))
