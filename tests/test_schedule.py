"""Tests for scaling_cli/schedule.py: per-step learning-rate multipliers.

    pytest tests/test_schedule.py

Expected values are computed by hand from the documented formulas at known steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaling_cli.config import ScheduleConfig
from scaling_cli.schedule import lr_multipliers


def _sched(**kwargs) -> ScheduleConfig:
    kwargs.setdefault("warmup", 0.0)
    return ScheduleConfig(**kwargs)


def test_one_multiplier_per_step():
    for name in ("constant", "cosine", "linear", "wsd"):
        assert lr_multipliers(37, _sched(name=name)).shape == (37,)


# ------------------------------------------------------------------ warmup

@pytest.mark.parametrize("name", ["constant", "cosine", "linear", "wsd"])
def test_warmup_ramps_linearly_from_lr_over_w_to_lr(name):
    mult = lr_multipliers(100, _sched(name=name, warmup=10))
    np.testing.assert_allclose(mult[:10], np.arange(1, 11) / 10, rtol=0, atol=1e-12)
    assert mult[10] == pytest.approx(1.0)  # decay starts after warmup at the peak


@pytest.mark.parametrize("name", ["constant", "cosine", "linear", "wsd"])
def test_warmup_as_fraction_equals_warmup_as_steps(name):
    as_fraction = lr_multipliers(200, _sched(name=name, warmup=0.05, decay=0.2))
    as_steps = lr_multipliers(200, _sched(name=name, warmup=10, decay=40))
    np.testing.assert_array_equal(as_fraction, as_steps)


def test_warmup_one_means_one_step_and_zero_means_none():
    # >= 1 is a step count: warmup=1 is a single step at lr * 1/1
    np.testing.assert_array_equal(lr_multipliers(5, _sched(name="constant", warmup=1)), np.ones(5))
    np.testing.assert_array_equal(lr_multipliers(5, _sched(name="constant", warmup=0)), np.ones(5))
    np.testing.assert_allclose(lr_multipliers(5, _sched(name="constant", warmup=2))[:2], [0.5, 1.0])


def test_warmup_longer_than_the_run_is_clipped():
    mult = lr_multipliers(4, _sched(name="constant", warmup=10))
    np.testing.assert_allclose(mult, [0.25, 0.5, 0.75, 1.0])


# ------------------------------------------------------------------ cosine, linear, constant

def test_cosine_values_and_exact_floor_at_the_last_step():
    mult = lr_multipliers(101, _sched(name="cosine", min_lr_ratio=0.1))
    assert mult[0] == 1.0
    assert mult[50] == pytest.approx(0.55)  # floor + (1 - floor) * 0.5 * (1 + cos(pi/2))
    assert mult[25] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert mult[-1] == 0.1  # exactly the floor, not one step short of it
    assert np.all(np.diff(mult) <= 0)


def test_cosine_after_warmup_ends_at_the_floor():
    mult = lr_multipliers(120, _sched(name="cosine", warmup=20, min_lr_ratio=0.25))
    assert mult[-1] == pytest.approx(0.25, abs=1e-15)
    assert mult[19] == pytest.approx(1.0) and mult[20] == pytest.approx(1.0)
    assert mult[20:].min() == pytest.approx(0.25) and np.all(np.diff(mult[20:]) <= 0)


def test_linear_decays_in_equal_steps_to_the_floor():
    np.testing.assert_allclose(lr_multipliers(11, _sched(name="linear", min_lr_ratio=0.0)),
                               np.linspace(1.0, 0.0, 11), atol=1e-12)
    mult = lr_multipliers(11, _sched(name="linear", min_lr_ratio=0.5))
    np.testing.assert_allclose(mult, 1 - 0.5 * np.arange(11) / 10, atol=1e-12)
    assert mult[-1] == 0.5


def test_constant_is_one_after_warmup():
    mult = lr_multipliers(50, _sched(name="constant", warmup=5, min_lr_ratio=0.1))
    np.testing.assert_array_equal(mult[5:], np.ones(45))


# ------------------------------------------------------------------ wsd

def test_wsd_is_stable_until_the_decay_and_reaches_the_floor_at_the_last_step():
    mult = lr_multipliers(100, _sched(name="wsd", warmup=10, decay=0.2, min_lr_ratio=0.1, decay_shape="linear"))
    np.testing.assert_array_equal(mult[10:80], np.ones(70))  # stable phase
    assert np.all(mult[80:] < 1.0)  # the decay covers exactly the last 20 steps
    assert mult[-1] == pytest.approx(0.1, abs=1e-15)
    assert np.all(np.diff(mult[80:]) < 0)


# progress after step s of a 20-step decay starting at step 80: (s - 79) / 20
@pytest.mark.parametrize("shape, step, expected", [
    ("linear", 89, 1 - 0.9 * 0.5),
    ("linear", 84, 1 - 0.9 * 0.25),
    ("sqrt", 89, 1 - 0.9 * math.sqrt(0.5)),
    ("sqrt", 84, 1 - 0.9 * 0.5),
    ("cosine", 89, 1 - 0.9 * 0.5),
    ("cosine", 84, 1 - 0.9 * 0.5 * (1 - math.cos(math.pi / 4))),
    ("sqrt", 80, 1 - 0.9 * math.sqrt(1 / 20)),
    ("cosine", 99, 0.1),
    ("sqrt", 99, 0.1),
])
def test_wsd_decay_shapes_at_known_points(shape, step, expected):
    mult = lr_multipliers(100, _sched(name="wsd", decay=0.2, min_lr_ratio=0.1, decay_shape=shape))
    assert mult[79] == 1.0
    assert mult[step] == pytest.approx(expected, rel=1e-12)


def test_wsd_decay_given_in_steps():
    mult = lr_multipliers(100, _sched(name="wsd", decay=30, min_lr_ratio=0.0, decay_shape="linear"))
    np.testing.assert_array_equal(mult[:70], np.ones(70))
    np.testing.assert_allclose(mult[70:], 1 - np.arange(1, 31) / 30, atol=1e-12)


def test_wsd_decay_cannot_eat_the_warmup():
    # decay 0.8 of 10 steps = 8 steps, but only 5 remain after a 5-step warmup
    mult = lr_multipliers(10, _sched(name="wsd", warmup=5, decay=0.8, min_lr_ratio=0.0, decay_shape="linear"))
    np.testing.assert_allclose(mult[:5], np.arange(1, 6) / 5)
    np.testing.assert_allclose(mult[5:], [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-12)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_multipliers(10, _sched(name="step"))
