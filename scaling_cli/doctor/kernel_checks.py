"""The fused loss against its fp32 oracle (scaling_kernels.lce_check), forward and gradients, at
four awkward shapes: sizes that are multiples of no tile, bf16 and fp32, ignore_index targets, a
pack of heads, soft-capping with z-loss, and a d above the resident limit (streamed forward,
supertile backward). Every backward scheme that exists at a shape is checked, on the GPU (Triton)
or, on a CPU, under the Triton interpreter at small shapes; the torch path is checked at each
shape too. The Triton verdict is kept in the plan cache for this device: a GPU that failed it
trains on the torch path (scaling_cli/train/kernel_plan.py) until a later doctor passes.
"""

from __future__ import annotations

import os

import torch

# (heads, tokens, d, vocab, dtype, softcap, z_loss); every 5th target is ignore_index
GPU_SHAPES = [(1, 4099, 128, 8191, torch.bfloat16, 0.0, 0.0), (8, 2049, 192, 8192, torch.bfloat16, 30.0, 1e-4),
              (1, 1023, 768, 50257, torch.bfloat16, 0.0, 0.0), (2, 777, 64, 3001, torch.float32, 0.0, 0.0)]
# the interpreter runs ~1 ms per tile: the same variety at a few dozen tokens
INTERPRETER_SHAPES = [(1, 37, 24, 259, torch.bfloat16, 0.0, 0.0), (2, 29, 16, 131, torch.bfloat16, 4.0, 1e-3),
                      (1, 21, 264, 67, torch.bfloat16, 0.0, 0.0), (1, 23, 40, 97, torch.float32, 0.0, 0.0)]


def triton_backend(device: torch.device) -> str | None:
    """'cuda', 'interpreter' (CPU, TRITON_INTERPRET=1 before triton was imported), or None."""
    from scaling_kernels import triton_available

    if not triton_available():
        return None
    if device.type == "cuda":
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") != "1":
        return None
    from scaling_kernels import lce_triton

    return "interpreter" if lce_triton.INTERPRET else None


def label(case: dict) -> str:
    """'2x29x16x131 bfloat16' for a checked case."""
    return f"{case['heads']}x{case['tokens']}x{case['dim']}x{case['vocab']} {case['dtype']}"


def reference_checks(device: torch.device) -> dict:
    """{'triton': {...}, 'torch': {...}}: per implementation the backend, every case's errors against
    the oracle and ok, and ok overall (None when it could not run here, with the reason)."""
    from scaling_kernels import lce_check, lce_triton, lce_tune

    backend = triton_backend(device)
    shapes = GPU_SHAPES if device.type == "cuda" else INTERPRETER_SHAPES
    triton_cases, torch_cases = [], []
    for heads, tokens, dim, vocab, dtype, softcap, z_loss in shapes:
        base = lce_check.Case(heads, tokens, dim, vocab, dtype, softcap=softcap, z_loss=z_loss)
        torch_cases.append(lce_check.check(base, "torch", device))
        if backend is None:
            continue
        sms = lce_triton._num_sms(device)
        for scheme in lce_tune.candidate_schemes(heads, tokens, dim, vocab, dtype.itemsize, sms):
            triton_cases.append(lce_check.check(lce_check.Case(heads, tokens, dim, vocab, dtype, softcap=softcap,
                                                               z_loss=z_loss, scheme=scheme), "triton", device))
    result = {"torch": {"backend": device.type, "cases": torch_cases, "ok": all(c["ok"] for c in torch_cases)}}
    if backend is None:
        result["triton"] = {"backend": None, "cases": [], "ok": None,
                            "skipped": "no triton, or triton imported before TRITON_INTERPRET=1 could be set"}
    else:
        result["triton"] = {"backend": backend, "cases": triton_cases, "ok": all(c["ok"] for c in triton_cases)}
    return result


def failures(checks: dict) -> list[str]:
    """One line per failed Triton case: shape, scheme, errors (or the error it raised)."""
    lines = []
    for case in checks["triton"]["cases"]:
        if case["ok"]:
            continue
        detail = case.get("error") or (f"loss err {case['loss_err']:.1e}, dH {case['dh_err']:.1e}, "
                                       f"dW {case['dw_err']:.1e} (tolerance {case['tol']['loss']:.0e} / "
                                       f"{case['tol']['grad']:.0e})")
        lines.append(f"{label(case)} {case.get('scheme_ran', case['scheme'])}: {detail}")
    return lines


def record_verdict(checks: dict, device: torch.device) -> dict | None:
    """Keep the Triton verdict for this device in the plan cache (None when Triton did not run)."""
    if checks["triton"]["ok"] is None:
        return None
    from scaling_kernels import lce_plan_cache, lce_triton

    return lce_plan_cache.record_reference_check(lce_triton.device_identity(device), checks["triton"]["ok"],
                                                 failures(checks), by="scaling-cli doctor")
