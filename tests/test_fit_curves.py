"""Schedule-aware curve laws: fitted on some schedules, they predict another schedule's final loss."""

import numpy as np
import pytest

from scaling_cli.fit import curve_fit, curve_laws, synthetic

T, WARMUP, PEAK = 2000, 100, 1e-3
SCHEDULES = {
    "cosine": curve_laws.cosine_schedule(T, PEAK, WARMUP),
    "constant": curve_laws.constant_schedule(T, PEAK, WARMUP),
    "wsd": curve_laws.wsd_schedule(T, PEAK, WARMUP, decay_frac=0.2),
    "wsd10": curve_laws.wsd_schedule(T, PEAK, WARMUP, decay_frac=0.1),
}
TISSUE = dict(L0=2.5, A=0.5, alpha=0.5, C=0.3)
MPL = dict(L0=2.5, A=0.5, alpha=0.5, B=300.0, C=2.0, beta=0.5, gamma=0.5)


def _curve(name, law, params, seed, total=T):
    lr = SCHEDULES[name] if total == T else {
        "cosine": curve_laws.cosine_schedule, "wsd": lambda *a: curve_laws.wsd_schedule(*a, decay_frac=0.2)}[name](total, PEAK, WARMUP)
    frame = synthetic.schedule_curve(lr, law, params, seed=seed, noise=0.02)
    curve = curve_fit.prepare_curve(name, frame["step"], frame["lr"], frame["loss"], 1e8, name)
    return curve, float(frame["clean"].iloc[-1])


def test_tissue_fit_on_cosine_and_constant_predicts_wsd():
    curves = [_curve(n, "tissue", TISSUE, seed=i)[0] for i, n in enumerate(("cosine", "constant"))]
    entry = curve_fit.fit_tissue(curves)
    for name, true in TISSUE.items():
        lo, hi = entry["intervals"][name]
        assert lo <= true <= hi, f"{name}: {true} outside [{lo}, {hi}]"
    _, true_final = _curve("wsd", "tissue", TISSUE, seed=9)
    pred = float(curve_fit.predict_curve(entry, SCHEDULES["wsd"])[0])
    assert pred == pytest.approx(true_final, rel=0.005)


def test_multi_power_fit_on_cosine_and_wsd_predicts_other_schedules():
    curves = [_curve(n, "multi_power", MPL, seed=i)[0] for i, n in enumerate(("cosine", "wsd"))]
    entry = curve_fit.fit_multi_power(curves)
    assert entry["status"] == "ok"
    assert entry["params"]["L0"] == pytest.approx(MPL["L0"], abs=0.05)
    assert entry["params"]["alpha"] == pytest.approx(MPL["alpha"], abs=0.05)
    for other in ("constant", "wsd10"):
        _, true_final = _curve(other, "multi_power", MPL, seed=5)
        pred = float(curve_fit.predict_curve(entry, SCHEDULES[other])[0])
        assert pred == pytest.approx(true_final, rel=0.005), other


def test_prepare_curve_skips_warmup_and_early_steps_and_handles_sparse_logs():
    lr = SCHEDULES["cosine"]
    frame = synthetic.schedule_curve(lr, "tissue", TISSUE, seed=0, noise=0.0)
    every10 = frame.iloc[::10]  # logged every 10 steps, 0-based step numbers
    c = curve_fit.prepare_curve("r", every10["step"] - 1, every10["lr"], every10["loss"])
    assert len(c.lr) == T - 9 and WARMUP <= c.warmup <= WARMUP + 10
    assert c.steps.min() > max(WARMUP, 0.1 * T) - 10
    assert len(c.steps) <= curve_fit.MAX_POINTS
    # The rebuilt per-step LR is the schedule, up to interpolation between logged steps.
    np.testing.assert_allclose(c.lr[::10], lr[:len(c.lr):10], rtol=1e-6)
    assert curve_fit.prepare_curve("short", [1, 2, 3], [1e-3] * 3, [3.0] * 3) is None


def test_fit_group_reports_leave_one_curve_out_errors():
    curves = [_curve(n, "tissue", TISSUE, seed=i, total=600)[0] for i, n in enumerate(("cosine", "wsd"))]
    group = curve_fit.fit_group(curves)
    tissue = group["laws"]["tissue"]
    assert tissue["status"] == "ok" and len(tissue["leave_one_curve_out"]) == 2
    assert tissue["heldout_mean_abs_rel_error"] < 0.02
    assert group["laws"]["multi_power"]["status"] == "ok"
