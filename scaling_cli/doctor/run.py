"""Put the doctor's checks together into one report (a JSON-ready dict); see the package docstring."""

from __future__ import annotations

import time
from typing import Callable

import torch

from scaling_cli.doctor import default_shapes, kernel_checks, machine

DEFAULT_BUDGET_S = 180.0
TIMING_SHARE = 0.55
"""Share of the budget by which the kernel timings must be done, so the pack probe gets the rest."""

GPU_ONLY = ["each backward scheme, torch.compile's loss and the 3-matmul floor timed at the GPU default's shapes "
            "(the fastest scheme kept as this GPU's measured plan)",
            "a 20-step probe of one pack of the GPU default against the plain compiled model (tokens/s, MFU)",
            "the memory planner's estimate against the pack's measured peak",
            "the reference check of the Triton kernels compiled for the GPU, at GPU-sized shapes"]


def diagnose(budget_s: float = DEFAULT_BUDGET_S, probe: bool = True,
             save: Callable[[dict], None] | None = None) -> dict:
    """Everything the doctor checks on this machine; GPU-only parts are listed under 'not_run'.
    `save(report)` is called after each part ('complete' False until the last), so a doctor killed
    by a time limit still leaves what it measured."""
    from scaling_kernels import lce_plan_cache

    def done_with(part: str) -> None:
        report["parts_done"].append(part)
        report["seconds"] = round(time.perf_counter() - started, 1)
        if save is not None:
            save(report)

    started = time.perf_counter()
    deadline = started + budget_s
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    report: dict = {"format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": budget_s,
                    "mode": "gpu" if on_gpu else "cpu", "complete": False, "parts_done": [],
                    "machine": machine.machine_info()}
    done_with("machine")
    checks = kernel_checks.reference_checks(device)
    report["reference"] = checks
    report["reference"]["verdict_recorded"] = kernel_checks.record_verdict(checks, device) is not None
    done_with("reference")
    if on_gpu:  # what a fresh sweep process would see: the checks' cached blocks given back first
        torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(device)[0] if on_gpu else None
    packs = default_shapes.gpu_default_packs(free)
    shapes = default_shapes.loss_shapes(packs)
    report["gpu_default"] = {"free_bytes": free, "free_bytes_assumed": free is None,
                             "assumed_free_bytes": None if on_gpu else default_shapes.ASSUMED_FREE_BYTES,
                             "packs": [len(p) for p in packs], "shapes": shapes}
    if on_gpu:
        from scaling_cli.doctor import timing

        report["timings"] = []
        for row in timing.time_shapes(shapes, device, started + TIMING_SHARE * budget_s):
            report["timings"].append(row)
            done_with(f"timing {row['arch']}")
    report["plans"] = default_shapes.plans(shapes, device)  # after the timings: the plans they measured
    done_with("plans")
    if on_gpu and probe:
        from scaling_cli.doctor.probe import probe_pack

        largest = max(packs, key=lambda p: (len(p), -p[0].config["model"]["d_model"]))
        if time.perf_counter() > deadline:
            report["probe"] = {"skipped": "over doctor's time budget (--budget-s)"}
        else:
            try:
                report["probe"] = probe_pack(largest, device)
            except Exception as err:  # noqa: BLE001 - a probe that fails is a finding, not the end of the report
                report["probe"] = {"skipped": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        done_with("probe")
    identity = _identity(device, checks)
    report["plan_cache"] = lce_plan_cache.state(identity)
    report["not_run"] = [] if on_gpu else GPU_ONLY
    if on_gpu and not probe:
        report["not_run"] = GPU_ONLY[1:3]
    report["complete"] = True
    done_with("plan_cache")
    return report


def _identity(device: torch.device, checks: dict) -> dict | None:
    """This machine's key in the plan cache: the GPU, or the interpreter where it ran."""
    if checks["triton"]["backend"] is None:
        return None
    from scaling_kernels import lce_triton

    return lce_triton.device_identity(device)


def healthy(report: dict) -> bool:
    """False when a kernel failed its reference check (the command then exits 1)."""
    return all(part.get("ok") is not False for part in (report["reference"]["triton"], report["reference"]["torch"]))
