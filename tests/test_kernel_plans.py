"""Measured kernel plans: the planner follows the per-GPU plan cache when it has an entry and its
own default otherwise; the cache survives absent, damaged and foreign files; the timing routine
fills it with real timings; the reference check catches a wrong kernel.

On a CPU the Triton code runs under TRITON_INTERPRET=1, as the 'triton-interpreter' device of the
cache, at shapes of a few dozen tokens (the interpreter takes ~0.3 s per call there).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from conftest import triton_interpreting
from scaling_kernels import lce_check, lce_plan, lce_plan_cache, linear_cross_entropy_heads

H100_SMS = 132
GPU = {"gpu": "NVIDIA H100 80GB HBM3", "sms": 132, "torch": "2.9.0", "triton": "3.5.0"}


needs_interpreter = pytest.mark.skipif(not triton_interpreting(), reason="needs triton under TRITON_INTERPRET=1")


@pytest.fixture
def plan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CLI_CACHE", str(tmp_path))
    monkeypatch.delenv(lce_plan_cache.ENV_PATH, raising=False)
    return tmp_path / "kernels" / "lce_plans.json"


# ------------------------------------------------------------------- the planner (pure Python)

def test_a_measured_scheme_wins_over_the_default_and_the_plan_says_so():
    def measured(answer):
        return lambda heads, tokens, dim, vocab, elt: answer

    shape = (8, 32768, 128, 8192, 2, H100_SMS)
    default = lce_plan.plan_backward(*shape)
    assert (default.scheme, default.source) == ("fused", "default")
    owners = lce_plan.plan_backward(*shape, measured=measured("owners"))
    assert (owners.scheme, owners.source) == ("owners", "measured")
    # the measured plan is the whole plan of that scheme (splits, buffers), not just a label
    assert owners == dataclasses.replace(lce_plan.plan_backward(*shape, "owners"), source="measured")
    for nothing in (None, "bogus", 3):  # nothing measured, or a damaged entry: the default
        plan = lce_plan.plan_backward(*shape, measured=measured(nothing))
        assert (plan.scheme, plan.source) == ("fused", "default")
    # a request or the environment variable beats any measurement
    asked = lce_plan.plan_backward(*shape, "supertile", measured=measured("owners"))
    assert (asked.scheme, asked.source) == ("supertile", "requested")
    env = lce_plan.plan_backward(*shape, env={lce_plan.ENV_SCHEME: "supertile"}, measured=measured("owners"))
    assert (env.scheme, env.source) == ("supertile", "requested")
    # a measured register-resident scheme at a d it cannot hold still runs supertile
    wide = lce_plan.plan_backward(1, 16384, 512, 50304, 2, H100_SMS, measured=measured("fused"))
    assert (wide.scheme, wide.source) == ("supertile", "measured")


# --------------------------------------------------------------------------- the cache file

def test_the_cache_is_keyed_by_gpu_versions_and_shape_bucket(plan_cache):
    ms = {"fused": 2.5, "owners": 1.75, "supertile": math.inf}
    entry = lce_plan_cache.record_plan(GPU, 8, 32768, 128, 8192, 2, ms, by="test", seconds=1.5)
    assert entry["scheme"] == "owners" and entry["complete"]
    stored = json.loads(plan_cache.read_text())
    assert stored["format"] == lce_plan_cache.FORMAT
    assert list(stored["devices"]) == [lce_plan_cache.device_key(GPU)]
    lookup = lce_plan_cache.measured_lookup(GPU)
    assert lookup(8, 32768, 128, 8192, 2) == "owners"
    assert lookup(7, 30000, 128, 8000, 2) == "owners"  # the same buckets: a pack that shrank, a shorter batch
    assert lookup(8, 32768, 128, 8192, 4) is None      # fp32 is another shape
    assert lookup(8, 32768, 256, 8192, 2) is None
    for other in ({**GPU, "gpu": "NVIDIA A100-SXM4-80GB", "sms": 108}, {**GPU, "torch": "2.10.0"},
                  {**GPU, "triton": "3.6.0"}):
        assert lce_plan_cache.measured_lookup(other)(8, 32768, 128, 8192, 2) is None
    state = lce_plan_cache.state(GPU)
    assert state["problem"] is None and state["plans_for_this_device"] == {"K8 T32768 d128 V8192 bf16": "owners"}
    with pytest.raises(ValueError, match="finite"):
        lce_plan_cache.record_plan(GPU, 1, 16, 8, 64, 4, {"fused": math.inf}, by="test")


@pytest.mark.parametrize("content, problem", [(None, "absent"), ("{not json", "unreadable"),
                                              ('{"format": 99, "devices": {}}', "format"), ("[1, 2]", "format")])
def test_an_absent_or_damaged_cache_finds_nothing_and_is_replaced_by_the_next_record(plan_cache, content, problem):
    if content is not None:
        plan_cache.parent.mkdir(parents=True)
        plan_cache.write_text(content)
    assert lce_plan_cache.state(GPU)["problem"].startswith(problem)
    assert lce_plan_cache.measured_lookup(GPU)(8, 32768, 128, 8192, 2) is None
    assert lce_plan.plan_backward(8, 32768, 128, 8192, 2, H100_SMS,
                                  measured=lce_plan_cache.measured_lookup(GPU)).source == "default"
    lce_plan_cache.record_plan(GPU, 8, 32768, 128, 8192, 2, {"supertile": 1.0}, by="test")
    assert lce_plan_cache.measured_lookup(GPU)(8, 32768, 128, 8192, 2) == "supertile"


def test_a_reference_check_verdict_is_kept_per_device(plan_cache):
    assert lce_plan_cache.reference_verdict(GPU) is None
    lce_plan_cache.record_plan(GPU, 1, 64, 32, 512, 2, {"fused": 1.0}, by="test")
    lce_plan_cache.record_reference_check(GPU, False, ["2x37x24x259 bf16 fused: dW err 5e-2"], by="doctor")
    verdict = lce_plan_cache.reference_verdict(GPU)
    assert verdict["ok"] is False and verdict["by"] == "doctor" and "dW err" in verdict["failures"][0]
    assert lce_plan_cache.measured_lookup(GPU)(1, 64, 32, 512, 2) == "fused"  # plans survive a verdict
    assert lce_plan_cache.reference_verdict({**GPU, "gpu": "other"}) is None
    lce_plan_cache.record_reference_check(GPU, True, [], by="doctor")
    assert lce_plan_cache.reference_verdict(GPU)["ok"] is True


# ----------------------------------------------------------- the kernels follow the cache (CPU)

def _inputs(heads=1, tokens=37, dim=24, vocab=259, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(heads, tokens, dim, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(heads, vocab, dim, generator=gen) * dim**-0.5).to(dtype).requires_grad_()
    return h, w, torch.randint(0, vocab, (heads, tokens), generator=gen)


@needs_interpreter
def test_the_triton_backward_runs_the_measured_scheme_and_falls_back_to_the_default(plan_cache):
    from scaling_kernels import lce_triton

    identity = lce_triton.device_identity()
    assert identity["gpu"] == "triton-interpreter"
    key = lce_plan_cache.shape_key(1, 37, 24, 259, 4)

    def backward_plan():
        h, w, y = _inputs()
        linear_cross_entropy_heads(h, w, y, impl="triton").sum().backward()
        _, ref_dh, ref_dw = lce_check.oracle(h, w, y)
        assert torch.allclose(h.grad, ref_dh, atol=1e-5) and torch.allclose(w.grad, ref_dw, atol=1e-5)
        return lce_triton.plans_used()[key]

    assert backward_plan() == {"scheme": "fused", "source": "default"}  # nothing measured yet
    lce_plan_cache.record_plan(identity, 1, 37, 24, 259, 4, {"fused": 9.0, "owners": 3.0, "supertile": 5.0}, by="test")
    assert backward_plan() == {"scheme": "owners", "source": "measured"}
    plan_cache.write_text(plan_cache.read_text()[:40])  # damaged mid-file
    assert backward_plan() == {"scheme": "fused", "source": "default"}
    lce_plan_cache.record_plan({**identity, "gpu": "NVIDIA H100 80GB HBM3"}, 1, 37, 24, 259, 4, {"owners": 1.0},
                               by="test")  # another GPU's measurement says nothing about this one
    assert backward_plan() == {"scheme": "fused", "source": "default"}


@needs_interpreter
def test_timing_the_schemes_fills_the_cache_that_the_next_backward_follows(plan_cache):
    from scaling_kernels import lce_triton, lce_tune

    entry = lce_tune.tune_shape(1, 16, 8, 64, torch.float32, "cpu", warmup=0, rep=1, by="test")
    assert entry["complete"] and sorted(entry["ms"]) == sorted(lce_plan.SCHEMES) and not entry["errors"]
    assert all(0 < t < 60_000 for t in entry["ms"].values())  # wall-clock milliseconds of real runs
    assert entry["scheme"] == min(entry["ms"], key=entry["ms"].get)
    assert entry["seconds"] >= sum(entry["ms"].values()) / 1e3
    stored = lce_plan_cache.lookup(lce_triton.device_identity(), 1, 16, 8, 64, 4)
    assert stored["scheme"] == entry["scheme"] and stored["by"] == "test"
    plan = lce_triton.shape_plan(1, 16, 8, 64, torch.float32, torch.device("cpu"))
    assert (plan.scheme, plan.source) == (entry["scheme"], "measured")
    # a budget already spent still times the default (what would run anyway), and says it stopped there
    partial = lce_tune.tune_shape(1, 16, 8, 32, torch.float32, "cpu", budget_s=0.0, warmup=0, rep=1, by="test")
    assert list(partial["ms"]) == ["fused"] and not partial["complete"] and partial["scheme"] == "fused"
    # and the next call with that entry's timings measures only what is missing
    rest = lce_tune.tune_shape(1, 16, 8, 32, torch.float32, "cpu", warmup=0, rep=1, by="test", known_ms=partial["ms"])
    assert rest["complete"] and sorted(rest["ms"]) == sorted(lce_plan.SCHEMES)
    assert rest["ms"]["fused"] == partial["ms"]["fused"]  # kept, not timed again


# ------------------------------------------------------------------------ the reference check

@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_interpreter)])
def test_the_reference_check_passes_the_kernels_and_catches_a_wrong_one(impl, monkeypatch):
    case = lce_check.Case(2, 29, 16, 131, torch.bfloat16, softcap=4.0, z_loss=1e-3)
    good = lce_check.check(case, impl)
    assert good["ok"] and good["loss_err"] <= 1e-3 and 0 < good["dw_err"] <= 2e-2, good
    from scaling_kernels import lce_reference

    backend = lce_reference
    if impl == "triton":
        from scaling_kernels import lce_triton as backend
    real = backend.grads

    def wrong_dw(*args, **kwargs):  # a kernel whose dW is 5% off (a lost tile, a bad scale)
        dh, dw = real(*args, **kwargs)
        return dh, dw * 1.05

    monkeypatch.setattr(backend, "grads", wrong_dw)
    bad = lce_check.check(case, impl)
    assert not bad["ok"] and bad["dw_err"] == pytest.approx(0.05, rel=0.2) and bad["dh_err"] <= 2e-2
