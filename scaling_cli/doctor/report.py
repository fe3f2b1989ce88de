"""The doctor's short table: every figure with its machine, ratios against the floor and the plain
model, and what was not measured here."""

from __future__ import annotations

from scaling_cli.doctor import kernel_checks, machine

GIB = 1 << 30


def _worst(cases: list[dict]) -> str:
    measured = [c for c in cases if "loss_err" in c]
    if not measured:
        return ""
    return "worst " + ", ".join(f"{name} {max(c[f'{key}_err'] for c in measured):.1e}"
                                for name, key in (("loss", "loss"), ("dH", "dh"), ("dW", "dw")))


def _reference_lines(reference: dict) -> list[str]:
    lines = []
    for impl, part in (("Triton", reference["triton"]), ("torch path", reference["torch"])):
        if part["ok"] is None:
            lines.append(f"  {impl}: not checked ({part['skipped']})")
            continue
        cases = part["cases"]
        passed = sum(c["ok"] for c in cases)
        where = {"interpreter": " kernels under the interpreter (CPU)", "cuda": " kernels on the GPU"}.get(part["backend"], "")
        lines.append(f"  {impl}{where}: {passed}/{len(cases)} cases ok, {_worst(cases)}"
                     + ("" if part["ok"] else "  FAILED"))
        for case in cases:
            if not case["ok"]:
                detail = case.get("error") or (f"loss {case['loss_err']:.1e} dH {case['dh_err']:.1e} "
                                               f"dW {case['dw_err']:.1e}")
                lines.append(f"    FAILED {kernel_checks.label(case)} {case.get('scheme_ran', case['scheme'])}: "
                             f"{detail}")
    return lines


def _timing_lines(rows: list[dict]) -> list[str]:
    lines = [f"  {'shape':<26} {'floor ms':>9} {'compile':>8} {'fused':>7} {'owners':>7} {'supertile':>9}  chosen",
             "  " + "-" * 78]
    for row in rows:
        shape = f"{row['arch']} {row['heads']}x({row['tokens']},{row['dim']},{row['vocab']})"
        if "skipped" in row:
            lines.append(f"  {shape:<26} skipped: {row['skipped']}")
            continue
        ratio = row.get("x_floor", {})

        def cell(name: str, width: int) -> str:
            value = ratio.get(name)
            return f"{value:>{width - 1}.2f}x" if value is not None else f"{'-':>{width}}"
        floor = f"{row['floor_ms']:9.3f}" if row.get("floor_ms") else f"{'failed':>9}"
        lines.append(f"  {shape:<26} {floor} {cell('compile', 8)} {cell('fused', 7)} {cell('owners', 7)} "
                     f"{cell('supertile', 9)}  {row['scheme']}")
    lines.append("  (ms of forward + backward, bf16; ratios are x the 3-matmul floor at the same shape)")
    return lines


def summary(report: dict, path: str) -> str:
    """The printed table."""
    info = report["machine"]
    lines = [f"scaling-cli doctor on {machine.describe(info)}"]
    if report["mode"] == "cpu":
        lines.append("No CUDA GPU here: checking what a CPU can (versions, the kernels under the Triton interpreter "
                     "at small shapes, the torch path, the planner's plans, the plan cache).")
    lines.append("reference check against the fp32 oracle (forward, dH, dW; odd sizes, bf16 and fp32, ignore_index):")
    lines += _reference_lines(report["reference"])
    default = report["gpu_default"]
    assumed = (f" for an assumed {default['assumed_free_bytes'] / GIB:.0f} GiB free and 132 SMs"
               if default["free_bytes_assumed"] else f" for {default['free_bytes'] / GIB:.1f} GiB free")
    lines.append(f"plans for the GPU default (sweeps/small: packs of {', '.join(map(str, default['packs']))} runs"
                 f"{assumed}):")
    for plan in report["plans"]:
        lines.append(f"  {plan['arch']:<8} {plan['heads']:>2} x {plan['tokens']} tokens, d{plan['dim']}, "
                     f"V{plan['vocab']}: {plan['scheme']} backward ({plan['source']}), forward splits "
                     f"{plan['forward_splits']}, workspace {plan['workspace_mib']} MiB")
    if report.get("timings"):
        lines.append("loss kernel timings at those shapes (the fastest of ours is now this GPU's measured plan):")
        lines += _timing_lines(report["timings"])
    probe = report.get("probe")
    if probe and "skipped" not in probe:
        memory = probe["memory"]
        mfu = f", MFU {100 * probe['pack_mfu']:.1f}%" if probe.get("pack_mfu") else ""
        speedup = f"{probe['speedup_vs_plain']:.2f}x" if probe.get("speedup_vs_plain") else "n/a"
        lines.append(f"pack probe ({probe['warmup_steps']} + {probe['timed_steps']} steps): pack of "
                     f"{probe['members']} x {probe['arch']} {probe['pack_tokens_per_s'] or 0:,.0f} tok/s{mfu}; plain "
                     f"compiled GPT (B={probe['plain_batch']}) {probe['plain_tokens_per_s'] or 0:,.0f} tok/s; "
                     f"pack / plain {speedup}")
        if memory["measured_peak_bytes"]:
            lines.append(f"memory: planner's estimate {memory['estimate_bytes'] / GIB:.2f} GiB, measured peak "
                         f"{memory['measured_peak_bytes'] / GIB:.2f} GiB (measured / estimate "
                         f"{memory['measured_over_estimate']:.2f})")
    elif probe:
        lines.append(f"pack probe: skipped ({probe['skipped']})")
    cache = report["plan_cache"]
    mine = cache["plans_for_this_device"]
    state = cache["problem"] or f"{len(cache['devices'])} device(s), {len(mine)} measured shape(s) for this one"
    lines.append(f"plan cache: {cache['path']} ({state})")
    if report["not_run"]:
        lines.append("not run here (needs a CUDA GPU; unmeasured until then):")
        lines += [f"  - {item}" for item in report["not_run"]]
    lines.append(f"took {report['seconds']:.0f} s; wrote {path}")
    return "\n".join(lines)
