"""The loss kernel a run or pack trains with, decided before its first step and recorded in its status.

    kernel = loss_kernel(model_cfg, heads=8, tokens=32768, bf16=True, device=cuda, tune_s=5.0)
    kernel.impl       # 'triton' or 'torch': the model's loss_impl for this run
    kernel.record     # status.json's 'loss_kernel': impl, scheme, source (measured / default), checks

For the Triton loss (CUDA, or TRITON_INTERPRET=1 with model.loss_impl=triton):
1. a GPU whose kernels failed `scaling-cli doctor`'s reference check (kept in the plan cache,
   scaling_kernels.lce_plan_cache) trains on the torch path, and the run says why;
2. a shape this GPU has no measured plan for is timed now, every candidate backward scheme within
   `train.kernel_tune_s` seconds (scaling_kernels.lce_tune), and the fastest kept in the plan cache
   for every later pack and sweep; a measurement the budget cut short goes on in the next process
   that meets the shape; 0 keeps the planner's default (or what was measured);
3. the plan's scheme is checked against the fp32 oracle at this shape's d, V, dtype and soft-cap
   on a slice of the tokens (scaling_kernels.lce_check); a kernel that fails it sends this shape
   to the torch path, with the errors in the record.
Decided once per shape per process (later packs reuse it); the choice is printed once, a fallback
is a warning once. The torch path (CPU, or model.loss_impl=torch) needs none of this.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from scaling_cli.config import ModelConfig

CHECK_TOKENS = 2048
"""Tokens per head of the first-step reference check on a GPU (fp32 oracle logits: 2048 x V floats)."""
INTERPRETER_CHECK_TOKENS = 48
"""The same under the Triton interpreter (CPU tests): it runs a kernel at ~1 ms per tile."""
CHECK_HEADS = 2


@dataclass(frozen=True)
class LossKernel:
    impl: str
    record: dict

    def apply(self, cfg: ModelConfig) -> ModelConfig:
        """`cfg` with this kernel's loss_impl (unchanged when it already says so)."""
        return cfg if cfg.loss_impl == self.impl else dataclasses.replace(cfg, loss_impl=self.impl)


_decided: dict[tuple, LossKernel] = {}


def reset() -> None:
    """Forget this process's decisions (tests)."""
    _decided.clear()


def _triton_runs_here(requested: str, device: torch.device) -> bool:
    from scaling_kernels import triton_available

    if requested == "torch" or not triton_available():
        return False
    if device.type == "cuda":
        return True
    # CPU: only an explicit request under the interpreter (tests); 'auto' means the torch path
    return requested == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


def loss_kernel(cfg: ModelConfig, heads: int, tokens: int, bf16: bool, device: torch.device,
                tune_s: float) -> LossKernel:
    """The loss implementation (and, for Triton, the plan) for `heads` losses of `tokens` tokens each
    at cfg's d, V and soft-cap; see the module docstring."""
    if not _triton_runs_here(cfg.loss_impl, device):
        # 'triton' where it cannot run stays as asked: the kernel's own error says what is missing
        impl = "torch" if cfg.loss_impl in ("auto", "torch") else cfg.loss_impl
        return LossKernel(impl, {"impl": impl})
    from scaling_kernels import lce_plan

    dtype = torch.bfloat16 if bf16 else torch.float32
    key = (str(device), lce_plan.bucket(heads), lce_plan.bucket(tokens), cfg.d_model, lce_plan.bucket(cfg.vocab_size),
           str(dtype), cfg.logit_softcap)
    if key not in _decided:
        _decided[key] = _decide(cfg, heads, tokens, dtype, device, tune_s)
    return _decided[key]


def _decide(cfg: ModelConfig, heads: int, tokens: int, dtype: torch.dtype, device: torch.device,
            tune_s: float) -> LossKernel:
    from scaling_kernels import lce_check, lce_plan_cache, lce_triton, lce_tune

    shape = f"{heads} x {tokens} tokens, d{cfg.d_model}, V{cfg.vocab_size}, {str(dtype).replace('torch.', '')}"
    identity = lce_triton.device_identity(device)
    verdict = lce_plan_cache.reference_verdict(identity)
    if verdict is not None and not verdict["ok"]:
        first = (verdict.get("failures") or ["?"])[0]
        return _fall_back(shape, f"this GPU's kernels failed the reference check of {verdict.get('by')} ({first}); "
                                 "`scaling-cli doctor` checks them again", {"reference_check": verdict})
    record: dict = {"impl": "triton"}
    elt = dtype.itemsize
    known = lce_plan_cache.lookup(identity, heads, tokens, cfg.d_model, cfg.vocab_size, elt)
    if tune_s > 0 and (known is None or not known.get("complete")):  # an unfinished measurement goes on
        try:
            tuned = lce_tune.tune_shape(heads, tokens, cfg.d_model, cfg.vocab_size, dtype, device, budget_s=tune_s,
                                        warmup=1, rep=3, by="sweep", known_ms=(known or {}).get("ms"))
            record["tuned"] = {"seconds": round(tuned["seconds"], 3), "ms": tuned["ms"],
                               "complete": tuned["complete"], **({"errors": tuned["errors"]} if tuned["errors"] else {})}
        except Exception as err:  # noqa: BLE001 - timing is an optimisation; the default plan still trains
            record["tuned"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
    plan = lce_triton.shape_plan(heads, tokens, cfg.d_model, cfg.vocab_size, dtype, device)
    record.update(scheme=plan.scheme, source=plan.source)
    entry = lce_plan_cache.lookup(identity, heads, tokens, cfg.d_model, cfg.vocab_size, elt)
    if plan.source == "measured" and entry:
        record.update(measured_ms=entry.get("ms"), measured_by=entry.get("by"), measured_complete=entry.get("complete"))
    check_tokens = CHECK_TOKENS if device.type == "cuda" else INTERPRETER_CHECK_TOKENS
    case = lce_check.Case(min(heads, CHECK_HEADS), min(tokens, check_tokens), cfg.d_model, cfg.vocab_size, dtype,
                          softcap=cfg.logit_softcap, scheme=plan.scheme)
    result = lce_check.check(case, "triton", device)
    record["check"] = {k: result[k] for k in ("heads", "tokens", "loss_err", "dh_err", "dw_err", "error") if k in result}
    if not result["ok"]:
        return _fall_back(shape, f"the {plan.scheme} kernel failed its reference check at this shape "
                                 f"({_errors(result)})", {"check": record["check"], "scheme": plan.scheme})
    timed = f": {_ms(record['measured_ms'])}" if "measured_ms" in record else ""
    print(f"scaling-cli: loss kernel for {shape}: Triton, {plan.scheme} backward ({plan.source}{timed}); "
          f"reference check passed", file=sys.stderr)
    return LossKernel("triton", record)


def _fall_back(shape: str, why: str, details: dict) -> LossKernel:
    warnings.warn(f"loss kernel for {shape}: training on the torch path instead of Triton: {why}")
    return LossKernel("torch", {"impl": "torch", "fallback": why, **details})


def _errors(result: dict) -> str:
    if "error" in result:
        return result["error"]
    tol = result["tol"]
    return (f"loss err {result['loss_err']:.1e}, dH {result['dh_err']:.1e}, dW {result['dw_err']:.1e}; "
            f"tolerance {tol['loss']:.0e} / {tol['grad']:.0e}")


def _ms(ms: dict | None) -> str:
    return ", ".join(f"{s} {t:.3g} ms" for s, t in sorted((ms or {}).items(), key=lambda kv: kv[1]))
