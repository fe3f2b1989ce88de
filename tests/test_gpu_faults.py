"""A GPU fault never loses a sweep, tested on a CPU by injecting each fault into the real code path:

- a compile failure (a torch.compile backend that raises): that architecture trains eagerly, says so
  once, records it in every run's status.json, and the runs train exactly as eager runs do;
- a loss kernel that fails its reference check at a pack's first step (a Triton kernel, run by the
  interpreter, whose dW is 5% off), or whose GPU failed `scaling-cli doctor`'s check: the runs
  train on the torch path and record why;
- and the plan the Triton loss followed (measured or default) is in every run's status.json.
(Out-of-memory halving: tests/test_packs.py, through scaling_cli.faults.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import TINY_OVERRIDES, triton_interpreting
from scaling_cli.compose import compose
from scaling_cli.launch import run_sweep
from scaling_cli.plan import expand
from scaling_cli.store import RunStore, load_curves
from scaling_cli.train import compiled, kernel_plan
from scaling_kernels import lce_plan_cache


needs_interpreter = pytest.mark.skipif(not triton_interpreting(), reason="needs triton under TRITON_INTERPRET=1")

# Runs short enough for the Triton interpreter: 3 steps of 2 x 16 tokens, tiny validation, no diagnostics.
INTERPRETER_RUN = ["model.seq_len=16", "train.batch_size=2", "train.tokens=96", "train.eval_tokens=32",
                   "train.diagnostics_interval=0", "train.log_interval=3", "train.eval_interval=3"]


@pytest.fixture(autouse=True)
def fresh_process_state(tmp_path, monkeypatch):
    """Each test as a fresh worker process would see it: no decisions, no eager architectures,
    its own plan cache (the data cache stays the session's)."""
    monkeypatch.setenv(lce_plan_cache.ENV_PATH, str(tmp_path / "lce_plans.json"))
    kernel_plan.reset()
    compiled.reset()
    yield
    kernel_plan.reset()
    compiled.reset()


def _sweep(root, *extra: str):
    cfg = compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "train.device=cpu", f"store.root={root}", *extra])
    specs = expand(cfg)
    result = run_sweep(specs, RunStore(cfg.store.root), cfg.launcher, show_progress=False)
    return specs, result


def _curves(root):
    return load_curves(str(root)).sort_values(["run_id", "step"]).reset_index(drop=True)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("injected: this backend cannot compile")


@pytest.mark.slow
def test_a_compile_failure_trains_that_architecture_eagerly_and_says_so_once(tmp_path, monkeypatch):
    grid = "sweep.zip=[{optim.lr:[2e-3,4e-3,8e-3],train.tokens:[1280,768,1280]}]"  # 5, 3 and 5 steps
    common = ["model.n_layer=2", "train.tokens=1280", "train.diagnostics_interval=0", grid, "launcher.pack_size=2"]
    _sweep(tmp_path / "eager", *common)
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", _failing_backend)
    compiled.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        specs, result = _sweep(tmp_path / "compiled", *common, "train.compile=true")
    assert result.states == {"done": 3}  # a pack of 2 and a run alone, one architecture
    said = [w for w in caught if "torch.compile" in str(w.message)]
    assert len(said) == 1 and "injected: this backend cannot compile" in str(said[0].message)
    store = RunStore(str(tmp_path / "compiled"))
    for spec in specs:
        status = store.status(spec.run_id)
        assert status["state"] == "done" and "compilation failed" in status["compile_fallback"]
    eager, fallen_back = _curves(tmp_path / "eager"), _curves(tmp_path / "compiled")
    assert len(eager) == len(fallen_back) > 0
    for column in ("loss", "grad_norm"):
        np.testing.assert_allclose(fallen_back[column], eager[column], rtol=1e-6, err_msg=column)


def _raised(backend, x=None) -> BaseException:
    torch._dynamo.reset()
    try:
        torch.compile(lambda t: t * 2 + 1, backend=backend)(torch.ones(3) if x is None else x)
    except Exception as err:  # noqa: BLE001 - the error is the result
        return err
    raise AssertionError("expected an error")


def test_a_compile_failure_is_told_apart_from_other_errors():
    failed = _raised(_failing_backend)
    assert compiled.is_compile_failure(failed) and "injected" in compiled._one_line(failed)

    def out_of_memory(gm, example_inputs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    # autotuning that runs out of memory is an OOM: the pack halves rather than going eager
    assert not compiled.is_compile_failure(_raised(out_of_memory))
    assert not compiled.is_compile_failure(ValueError("targets must be in [0, 512)"))
    torch._dynamo.reset()


@needs_interpreter
def test_a_kernel_failing_its_first_step_check_trains_on_the_torch_path_and_records_why(tmp_path, monkeypatch):
    from scaling_kernels import lce_triton

    _sweep(tmp_path / "torch", *INTERPRETER_RUN, "model.loss_impl=torch")
    real = lce_triton.grads

    def wrong_dw(*args, **kwargs):
        dh, dw = real(*args, **kwargs)
        return dh, dw * 1.05

    monkeypatch.setattr(lce_triton, "grads", wrong_dw)
    with pytest.warns(UserWarning, match="torch path instead of Triton: the fused kernel failed its reference check"):
        specs, result = _sweep(tmp_path / "triton", *INTERPRETER_RUN, "model.loss_impl=triton",
                               "train.kernel_tune_s=0", "sweep.grid={optim.lr:[3e-3,6e-3]}", "launcher.pack_size=2")
    assert result.states == {"done": 2}
    store = RunStore(str(tmp_path / "triton"))
    for spec in specs:
        record = store.status(spec.run_id)["loss_kernel"]
        assert record["impl"] == "torch" and "reference check" in record["fallback"]
        assert record["check"]["dw_err"] == pytest.approx(0.05, rel=0.2) and record["check"]["dh_err"] < 2e-2
    # on the torch path a run trains exactly as the loss_impl=torch run of its lr (the default, 3e-3)
    twin = next(s.run_id for s in specs if s.config["optim"]["lr"] == 3e-3)
    fell_back = _curves(tmp_path / "triton").query("run_id == @twin")
    np.testing.assert_allclose(fell_back["loss"], _curves(tmp_path / "torch")["loss"], rtol=1e-6)


@needs_interpreter
def test_a_gpu_that_failed_doctors_check_trains_on_the_torch_path(tmp_path):
    from scaling_kernels import lce_triton

    lce_plan_cache.record_reference_check(lce_triton.device_identity(), False,
                                          ["1x37x24x259 bf16 fused: dW err 5.0e-02 > 2e-02"], by="scaling-cli doctor")
    with pytest.warns(UserWarning, match="failed the reference check of scaling-cli doctor"):
        specs, result = _sweep(tmp_path, *INTERPRETER_RUN, "model.loss_impl=triton")
    assert result.states == {"done": 1}
    record = RunStore(str(tmp_path)).status(specs[0].run_id)["loss_kernel"]
    assert record["impl"] == "torch" and "dW err" in record["fallback"] and record["reference_check"]["ok"] is False


@pytest.mark.slow
@needs_interpreter
def test_the_first_pack_of_a_new_shape_measures_its_plan_and_every_run_records_it(tmp_path, capfd):
    from scaling_cli.config import ModelConfig
    from scaling_kernels import lce_triton

    # a budget so small that one scheme (the default) is timed: the cheapest real measurement
    specs, result = _sweep(tmp_path, *INTERPRETER_RUN, "model.loss_impl=triton", "train.kernel_tune_s=0.001",
                           "sweep.grid={optim.lr:[2e-3,4e-3]}", "launcher.pack_size=2")
    assert result.states == {"done": 2}
    identity = lce_triton.device_identity()
    entry = lce_plan_cache.lookup(identity, 2, 32, 32, 512, 4)  # K 2, 2 x 16 tokens, d32, V512, fp32
    assert entry is not None and entry["by"] == "sweep" and list(entry["ms"]) == ["fused"] and not entry["complete"]
    assert entry["ms"]["fused"] > 0
    store = RunStore(str(tmp_path))
    for spec in specs:
        record = store.status(spec.run_id)["loss_kernel"]
        assert (record["impl"], record["scheme"], record["source"]) == ("triton", entry["scheme"], "measured")
        assert record["tuned"]["seconds"] > 0 and record["check"]["dw_err"] < 1e-4
    assert f"{entry['scheme']} backward (measured" in capfd.readouterr().err
    # a later process with no time to measure follows the measurement; a shape nobody measured keeps
    # the default (an unfinished measurement given time goes on: tests/test_kernel_plans.py)
    cfg = ModelConfig(**specs[0].config["model"])
    cpu = torch.device("cpu")
    kernel_plan.reset()
    later = kernel_plan.loss_kernel(cfg, 2, 32, False, cpu, tune_s=0.0)
    assert (later.impl, later.record["source"]) == ("triton", "measured") and "tuned" not in later.record
    other = kernel_plan.loss_kernel(ModelConfig(**{**specs[0].config["model"], "d_model": 16}), 2, 32, False, cpu,
                                    tune_s=0.0)
    assert (other.impl, other.record["source"], other.record["scheme"]) == ("triton", "default", "fused")


def test_the_torch_path_records_itself_and_needs_no_check(tmp_path):
    specs, result = _sweep(tmp_path, "train.tokens=2560")
    assert result.states == {"done": 1}
    assert RunStore(str(tmp_path)).status(specs[0].run_id)["loss_kernel"] == {"impl": "torch"}
