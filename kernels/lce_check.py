"""The fused loss against a plain fp32 oracle: forward and both gradients, on inputs of any shape.

    result = check(Case(heads=2, tokens=37, dim=24, vocab=259, dtype=torch.bfloat16), impl="triton")
    result["ok"], result["loss_err"], result["dh_err"], result["dw_err"]

The oracle is the textbook computation in fp32 on the *same* (possibly bf16-rounded) inputs: logits
materialised, soft-capped, log-sum-exp, z-loss, ignore_index masked, mean over each head's tokens,
summed over heads. Errors are relative: |a - b| / |b| for the loss, ||a - b|| / ||b|| (Frobenius)
for dH and dW. Tolerances (``TOLERANCES``): fp32 to fp32 rounding; bf16 inputs give bf16
gradients (one rounding, 2^-9 relative, is ~3e-3 in norm), so 2e-2 for them and 1e-3 for the fp32
loss computed from them; a kernel with a wrong tile, mask or reduction misses by far more (the
tests inject such a fault). Used by ``scaling-cli doctor`` and by each pack's first step
(scaling_cli/train/kernel_plan.py), where a failure sends training to the torch path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .lce_bench import random_inputs, rel_err

__all__ = ["Case", "TOLERANCES", "IGNORE_INDEX", "oracle", "check"]

IGNORE_INDEX = -100
TOLERANCES = {torch.float32: {"loss": 1e-5, "grad": 1e-4}, torch.bfloat16: {"loss": 1e-3, "grad": 2e-2}}


@dataclass(frozen=True)
class Case:
    heads: int
    tokens: int
    dim: int
    vocab: int
    dtype: torch.dtype = torch.bfloat16
    ignore_every: int = 5   # every n-th target is ignore_index (0: none)
    softcap: float = 0.0
    z_loss: float = 0.0
    scheme: str = "auto"

    def describe(self) -> dict:
        fields = asdict(self)
        fields["dtype"] = str(self.dtype).replace("torch.", "")
        return fields


def oracle(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, softcap: float = 0.0, z_loss: float = 0.0,
           ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, dH, dW) in fp32 from h [K, T, d], w [K, V, d], y [K, T]."""
    h32 = h.detach().float().requires_grad_()
    w32 = w.detach().float().requires_grad_()
    logits = torch.bmm(h32, w32.transpose(1, 2))
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    valid = y != ignore_index
    lse = torch.logsumexp(logits, dim=-1)
    per_token = F.cross_entropy(logits.transpose(1, 2), torch.where(valid, y, 0), reduction="none") + z_loss * lse * lse
    per_token = torch.where(valid, per_token, 0.0)
    loss = (per_token.sum(dim=1) / valid.sum(dim=1).clamp(min=1)).sum()
    loss.backward()
    return loss.detach(), h32.grad, w32.grad


def check(case: Case, impl: str = "triton", device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """Run our loss (``impl``, ``case.scheme``) forward and backward and compare with the oracle.
    Returns the case, the scheme that ran (Triton), the three errors, the tolerances and ok; a
    kernel that raises is a failed check with its error, not an exception."""
    from .linear_cross_entropy import linear_cross_entropy_heads

    tol = TOLERANCES[case.dtype]
    result = {**case.describe(), "impl": impl, "tol": tol}
    h, w, y = random_inputs((case.heads, case.tokens, case.dim, case.vocab), case.dtype, device, seed)
    if case.ignore_every:
        y[:, 1::case.ignore_every] = IGNORE_INDEX
    try:
        if impl == "triton":
            from . import lce_triton

            result["scheme_ran"] = lce_triton.shape_plan(case.heads, case.tokens, case.dim, case.vocab, case.dtype,
                                                         h.device, case.scheme).scheme
        loss = linear_cross_entropy_heads(h, w, y, ignore_index=IGNORE_INDEX, z_loss=case.z_loss,
                                          softcap=case.softcap, impl=impl, scheme=case.scheme).sum()
        loss.backward()
    except Exception as err:  # noqa: BLE001 - a kernel that cannot run fails its check
        return {**result, "ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    ref_loss, ref_dh, ref_dw = oracle(h, w, y, case.softcap, case.z_loss)
    errors = {"loss_err": (abs(loss.detach().float() - ref_loss) / ref_loss.abs().clamp(min=1e-30)).item(),
              "dh_err": rel_err(h.grad, ref_dh), "dw_err": rel_err(w.grad, ref_dw)}
    ok = (errors["loss_err"] <= tol["loss"] and errors["dh_err"] <= tol["grad"] and errors["dw_err"] <= tol["grad"]
          and all(math.isfinite(v) for v in errors.values()))
    return {**result, **errors, "ok": ok}
