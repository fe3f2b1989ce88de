"""`predict --schedule`: the loss curve and final loss of a schedule that was not trained.

    from scaling_cli.fit.artifact import read_report
    from scaling_cli.schedule_predict import parse_schedule, predict_schedule
    result = predict_schedule(read_report("runs/_fit/fit.json"), parse_schedule("wsd:24000:0.2"))

A SPEC is NAME:STEPS[:DECAY][:key=value ...]:
    cosine:24000                 cosine from the peak to 0.1 x peak (conf/schedule/cosine.yaml)
    linear:24000                 linear to 0
    wsd:24000:0.2                warmup-stable-decay, 1-sqrt decay over the last 20% (conf/schedule/wsd.yaml)
    constant:72000               constant after warmup
    keys: warmup=W (fraction of steps if < 1, else steps; default 0.05), lr=PEAK (default: the
    fitted group's peak LR), final=F (final LR / peak), shape=linear|cosine|sqrt (WSD decay).
The schedule is the trainer's own (scaling_cli/schedule.py; a test holds the SPEC equal to
its conf/schedule group), in optimizer steps at the fitted runs' batch size.

The answer comes from the schedule-aware curve law (Tissue et al. or multi-power, whichever had
the lower leave-one-curve-out error) of one fitted model size: the nearest to --params, else the
largest. Curve laws describe one model size and one batch size; they say nothing about another
N, so the result names the size it used. The loss is the train loss the laws were fitted to
(nats/token, or nats/byte on byte-level data), with a confidence band from the laws' bootstrap samples and, beside it, the
leave-one-curve-out error: how far the law missed a schedule it had not seen, at this size.
numpy only; the curve-law fit itself is scaling_cli.fit.curve_fit.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from scaling_cli.config import ScheduleConfig
from scaling_cli.errors import UserError
from scaling_cli.fit import curve_fit
from scaling_cli.fit.bootstrap import finite_interval
from scaling_cli.schedule import length_in_steps, lr_multipliers
from scaling_cli.units import axis_label, unit_of

SPEC_FORMAT = ("NAME:STEPS[:DECAY][:warmup=W][:lr=PEAK][:final=F][:shape=S] with NAME cosine, linear, wsd or "
               "constant, e.g. cosine:24000, wsd:24000:0.2, constant:72000:warmup=500")

# Defaults of conf/schedule/*.yaml, so a SPEC means what the same schedule group would train.
DEFAULTS = {
    "cosine": {"final": 0.1},
    "linear": {"final": 0.0},
    "wsd": {"final": 0.0, "decay": 0.2, "shape": "sqrt"},
    "constant": {"final": 1.0},
}
DEFAULT_WARMUP = 0.05

# Points of the predicted curve returned (log-spaced steps after warmup, plus the last step).
CURVE_POINTS = 200


@dataclass
class ScheduleSpec:
    name: str
    steps: int
    warmup: float = DEFAULT_WARMUP
    decay: float = 0.2
    final: float = 0.1
    shape: str = "linear"
    lr: float | None = None
    text: str = ""

    def warmup_steps(self) -> int:
        return length_in_steps(self.warmup, self.steps)

    def multipliers(self) -> np.ndarray:
        """LR / peak at optimizer steps 1..steps: the trainer's own schedule of this spec."""
        cfg = ScheduleConfig(name=self.name, warmup=self.warmup, min_lr_ratio=self.final, decay=self.decay,
                             decay_shape=self.shape)
        return lr_multipliers(self.steps, cfg)

    def describe(self, peak: float) -> str:
        parts = [f"{self.steps} steps", f"warmup {self.warmup_steps()}", f"peak lr {peak:.3g}"]
        if self.name == "wsd":
            span = f"{self.decay:.0%} of steps" if self.decay < 1 else f"{int(self.decay)} steps"
            parts.append(f"{self.shape} decay over the last {span} to {self.final:g} x peak")
        elif self.name != "constant":
            parts.append(f"to {self.final:g} x peak")
        return f"{self.name} (" + ", ".join(parts) + ")"


def _bad(text: str, why: str) -> UserError:
    return UserError(f"--schedule {text!r}: {why}; expected {SPEC_FORMAT}")


def _count(text: str, value: str, what: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmM]?)\s*", value)
    if not m:
        raise _bad(text, f"{what} {value!r} is not a number")
    return float(m.group(1)) * {"": 1.0, "k": 1e3, "m": 1e6}[m.group(2).lower()]


def parse_schedule(text: str) -> ScheduleSpec:
    """SPEC -> ScheduleSpec; UserError naming the format for anything malformed."""
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) < 2 or parts[0].lower() not in DEFAULTS:
        raise _bad(text, "unknown schedule name" if parts[0] else "empty")
    name = parts[0].lower()
    steps = _count(text, parts[1], "STEPS")
    if steps < 1 or steps != int(steps):
        raise _bad(text, f"STEPS must be a whole number >= 1, got {parts[1]!r}")
    spec = ScheduleSpec(name=name, steps=int(steps), text=str(text), **{k: v for k, v in DEFAULTS[name].items()})
    rest = parts[2:]
    if name == "wsd" and rest and "=" not in rest[0]:
        spec.decay = _count(text, rest.pop(0), "DECAY")
    for item in rest:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in ("warmup", "lr", "final", "shape", "decay") or (key == "decay" and name != "wsd"):
            raise _bad(text, f"unknown field {item!r}")
        if key == "shape":
            if name != "wsd" or value not in ("linear", "cosine", "sqrt"):
                raise _bad(text, "shape= is the WSD decay shape: linear, cosine or sqrt")
            spec.shape = value
        else:
            setattr(spec, key, _count(text, value, key))
    if not (0 < spec.decay < 1 or (1 <= spec.decay < spec.steps and spec.decay == int(spec.decay))):
        raise _bad(text, f"DECAY must be a fraction in (0, 1) or a whole number of steps below STEPS, got {spec.decay:g}")
    if spec.warmup < 0 or spec.warmup_steps() >= spec.steps:
        raise _bad(text, f"warmup must be >= 0 and shorter than the run, got {spec.warmup:g}")
    if not 0 <= spec.final <= 1:
        raise _bad(text, f"final must lie in [0, 1], got {spec.final:g}")
    if spec.lr is not None and not spec.lr > 0:
        raise _bad(text, f"lr must be > 0, got {spec.lr:g}")
    return spec


def choose_group(entry: dict, params: float | None, peak_lr: float | None) -> tuple[dict, str]:
    """The curve-law group to answer from: nearest size to `params` (else the largest), then nearest peak LR."""
    groups = [g for g in entry.get("groups", []) if any(v.get("status") == "ok" for v in g["laws"].values())]
    if entry.get("status") != "ok" or not groups:
        raise UserError("the fit has no schedule-aware curve law (fit.json laws.curves: "
                        f"{entry.get('reason') or 'no fitted group'}); sweep runs with logged curves and re-run `scaling-cli fit`")
    if params is None:
        size = max(g["params"] for g in groups)
        why = "the largest fitted size"
    else:
        size = min((g["params"] for g in groups), key=lambda n: abs(np.log(n / params)))
        why = f"the fitted size nearest to --params {params:.3g}"
    same = [g for g in groups if np.isclose(g["params"], size, rtol=1e-9)]
    if peak_lr is not None and len(same) > 1:
        same.sort(key=lambda g: abs(np.log(g.get("peak_lr", peak_lr) / peak_lr)))
        why += ", nearest peak lr"
    return same[0], why


def choose_law(group: dict) -> tuple[str, dict]:
    """The group's curve law with the lower leave-one-curve-out error (Tissue on ties or without one)."""
    ok = {k: v for k, v in group["laws"].items() if v.get("status") == "ok"}
    scored = {k: v["heldout_mean_abs_rel_error"] for k, v in ok.items() if v.get("heldout_mean_abs_rel_error") is not None}
    if scored:
        name = min(scored, key=lambda k: (scored[k], k != "tissue"))
    else:
        name = "tissue" if "tissue" in ok else next(iter(ok))
    return name, ok[name]


def predict_schedule(report: dict, spec: ScheduleSpec, params: float | None = None, level: float | None = None) -> dict:
    """Final loss and curve of `spec` from the fitted curve laws; see the module docstring."""
    level = float(level if level is not None else report.get("level", 0.9))
    group, why = choose_group(report["laws"].get("curves", {}), params, spec.lr)
    law, fit = choose_law(group)
    peak = float(spec.lr if spec.lr is not None else group.get("peak_lr", np.nan))
    if not np.isfinite(peak):
        raise UserError("this fit.json does not record the fitted runs' peak lr; give it in the SPEC (lr=...)")
    lr = peak * spec.multipliers()
    warmup = spec.warmup_steps() if spec.warmup_steps() > 0 else 1
    first = min(warmup + 1, spec.steps)
    steps = np.unique(np.concatenate([np.geomspace(first, spec.steps, CURVE_POINTS).round().astype(int), [spec.steps]]))
    curve = curve_fit.predict_curve(fit, lr, steps, warmup)
    draws = curve_fit.predict_curve_samples(fit, lr, steps, warmup)
    bands = [finite_interval(draws[:, j], level) if len(draws) else [None, None] for j in range(len(steps))]
    longest = max(group.get("run_steps", {}).values(), default=None)
    notes = []
    if longest and spec.steps > longest:
        notes.append(f"{spec.steps} steps is {spec.steps / longest:.3g}x the longest fitted curve ({longest} steps): "
                     "an extrapolation in steps")
    if group.get("peak_lr") and abs(np.log(peak / group["peak_lr"])) > np.log(1.5):
        notes.append(f"peak lr {peak:.3g} differs from the fitted runs' {group['peak_lr']:.3g}: "
                     "the law extrapolates in learning rate")
    if params is not None and abs(np.log(params / group["params"])) > np.log(1.5):
        notes.append(f"--params {params:.3g} is not a fitted size; the curve is that of N = {group['params']:.3g}")
    if fit.get("at_bounds"):
        notes.append(f"{law} parameters at their bounds ({', '.join(fit['at_bounds'])}): poorly identified by the "
                     "fitted curves; trust the leave-one-curve-out error, not the band")
    batch = group.get("batch_size")
    return {
        "schedule": asdict(spec) | {"peak_lr": peak, "warmup_steps": spec.warmup_steps(), "description": spec.describe(peak)},
        "params": float(group["params"]), "group_reason": why, "batch_size": batch,
        "tokens": float(spec.steps * batch) if batch else None,
        "law": law, "law_reason": "lower leave-one-curve-out error" if len(group["laws"]) > 1 else "only law fitted",
        "loss": float(curve[-1]), "loss_ci": bands[-1], "level": level, "loss_kind": axis_label(unit_of(report), "train loss"),
        "leave_one_curve_out_error": fit.get("heldout_mean_abs_rel_error"),
        "leave_one_curve_out": fit.get("leave_one_curve_out", []),
        "fitted_schedules": group.get("schedules", []), "fitted_runs": len(group.get("runs", [])),
        "curve": {"step": steps.tolist(), "loss": [float(v) for v in curve],
                  "loss_lo": [b[0] for b in bands], "loss_hi": [b[1] for b in bands]},
        "lr": {"step": steps.tolist(), "lr": [float(v) for v in lr[steps - 1]]},
        "notes": notes,
    }


def format_schedule_prediction(r: dict) -> str:
    """Human-readable lines for the CLI."""
    pct = f"{r['level']:.0%}"
    ci = r["loss_ci"]
    ci_text = f"{pct} CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci[0] is not None else "no CI (fit without bootstrap)"
    loco = r["leave_one_curve_out_error"]
    loco_text = (f"leave-one-curve-out error {loco:.2%} over {len(r['leave_one_curve_out'])} curves"
                 if loco is not None else "no leave-one-curve-out error (one curve at this size)")
    size = f"N = {r['params']:.3g} ({r['group_reason']})"
    tokens = f", {r['tokens']:.3g} tokens at {r['batch_size']:.0f} tokens/step" if r.get("tokens") else ""
    lines = [
        f"schedule   {r['schedule']['description']}{tokens}",
        f"model      {size}; fitted on {r['fitted_runs']} curves: {', '.join(map(str, r['fitted_schedules']))}",
        f"final loss {r['loss']:.4f} {r['loss_kind']}   {ci_text}",
        f"law        {r['law']} ({r['law_reason']}; {loco_text})",
    ]
    idx = np.unique(np.linspace(0, len(r["curve"]["step"]) - 1, 6).round().astype(int))
    lines.append("curve      " + ", ".join(f"step {r['curve']['step'][i]}: {r['curve']['loss'][i]:.3f}" for i in idx))
    lines += [f"note       {n}" for n in r["notes"]]
    return "\n".join(lines)
