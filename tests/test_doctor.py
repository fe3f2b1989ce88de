"""`scaling-cli doctor` on a CPU: exit 0, says there is no GPU and what it would do, checks what it
can (versions, the Triton kernels under the interpreter and the torch path against the fp32
oracle, the planner's plans for the GPU default, the plan cache), and writes one JSON that reads
back with real values. A kernel failing its check makes doctor exit 1 and sends sweeps on that
device to the torch path. The GPU-only parts (timings, pack probe) are run here at tiny shapes
through their own functions, to prove the plumbing; their numbers describe a CPU, not a GPU.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_OVERRIDES, triton_interpreting
from scaling_cli.cli import main
from scaling_cli.compose import compose
from scaling_cli.config import ModelConfig
from scaling_cli.plan import expand
from scaling_cli.train import kernel_plan
from scaling_kernels import lce_plan, lce_plan_cache


cpu_only = pytest.mark.skipif(not triton_interpreting(), reason="the CPU doctor: triton under TRITON_INTERPRET=1")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The doctor's report and the plan cache under this test's folder (doctor prepares no data)."""
    monkeypatch.setenv("SCALING_CLI_CACHE", str(tmp_path))
    monkeypatch.delenv(lce_plan_cache.ENV_PATH, raising=False)
    kernel_plan.reset()
    yield tmp_path
    kernel_plan.reset()


@cpu_only
def test_doctor_on_a_cpu_checks_what_it_can_and_writes_its_json(cache, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "No CUDA GPU here" in out and "not run here (needs a CUDA GPU" in out and "pack probe" not in out.split(
        "not run here")[0]
    path = cache / "doctor" / "doctor.json"
    assert str(path) in out
    report = json.loads(path.read_text())
    assert report["mode"] == "cpu" and report["machine"]["gpu"] is None
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["triton"]
    triton_part, torch_part = report["reference"]["triton"], report["reference"]["torch"]
    assert triton_part["backend"] == "interpreter" and triton_part["ok"] is True and torch_part["ok"] is True
    assert len(torch_part["cases"]) == 4 and len(triton_part["cases"]) >= 4
    assert {c["dtype"] for c in triton_part["cases"]} == {"bfloat16", "float32"}
    assert {c["scheme_ran"] for c in triton_part["cases"]} == set(lce_plan.SCHEMES)  # every scheme checked
    assert any(c["heads"] > 1 for c in triton_part["cases"]) and any(c["softcap"] > 0 for c in triton_part["cases"])
    for case in triton_part["cases"] + torch_part["cases"]:
        assert case["ok"] and all(math.isfinite(case[k]) for k in ("loss_err", "dh_err", "dw_err"))
        assert case["dh_err"] <= case["tol"]["grad"] and case["tokens"] % 16 and case["vocab"] % 32  # odd sizes
    default = report["gpu_default"]
    assert sum(default["packs"]) == 34 and default["free_bytes_assumed"]  # 33 fitted runs + the validation target
    assert [p["arch"] for p in report["plans"]] == ["d128 L2", "d192 L3", "d256 L4", "d320 L5", "d384 L6", "d512 L8"]
    for plan in report["plans"]:
        assert plan["scheme"] in lce_plan.SCHEMES and plan["source"] == "default" and plan["sms_assumed"]
        assert plan["tokens"] == 32 * 1024 and plan["vocab"] == 8192 and 0 < plan["workspace_mib"] <= 64
    assert "timings" not in report and "probe" not in report and len(report["not_run"]) == 4
    state = report["plan_cache"]
    assert state["path"] == str(cache / "kernels" / "lce_plans.json") and state["reference_check"]["ok"] is True


@pytest.mark.slow
@cpu_only
def test_a_kernel_failing_doctors_check_exits_1_and_sends_sweeps_to_the_torch_path(cache, tmp_path, monkeypatch,
                                                                                 capsys):
    from scaling_kernels import lce_triton

    real = lce_triton.grads

    def wrong_dw(*args, **kwargs):  # every Triton backward's dW 5% off
        dh, dw = real(*args, **kwargs)
        return dh, dw * 1.05

    monkeypatch.setattr(lce_triton, "grads", wrong_dw)
    assert main(["doctor", "-o", str(tmp_path / "report.json")]) == 1
    assert "FAILED" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["reference"]["triton"]["ok"] is False and report["reference"]["torch"]["ok"] is True
    verdict = lce_plan_cache.reference_verdict(lce_triton.device_identity())
    assert verdict["ok"] is False and verdict["by"] == "scaling-cli doctor" and "dW 5.0e-02" in verdict["failures"][0]
    monkeypatch.setattr(lce_triton, "grads", real)  # even a kernel that now works: the verdict stands until rechecked
    cfg = ModelConfig(d_model=32, n_layer=1, n_head=2, seq_len=16, vocab_size=512, loss_impl="triton")
    with pytest.warns(UserWarning, match="failed the reference check of scaling-cli doctor"):
        kernel = kernel_plan.loss_kernel(cfg, 1, 32, False, torch.device("cpu"), tune_s=0.0)
    assert kernel.impl == "torch" and kernel.apply(cfg).loss_impl == "torch" and "dW" in kernel.record["fallback"]


def test_doctor_rejects_a_budget_that_is_no_time(cache, capsys):
    assert main(["doctor", "--budget-s", "0"]) == 2
    assert "--budget-s: must be > 0" in capsys.readouterr().err


@cpu_only
def test_the_timing_row_fills_the_plan_cache_with_real_timings(cache):
    from scaling_cli.doctor.timing import time_shape
    from scaling_kernels import lce_triton

    shape = {"arch": "d8 L1", "heads": 1, "tokens": 16, "dim": 8, "vocab": 64}
    row = time_shape(shape, torch.device("cpu"), warmup=0, rep=1, peers=("floor",), dtype=torch.float32)
    assert row["floor_ms"] > 0 and sorted(row["schemes_ms"]) == sorted(lce_plan.SCHEMES) and row["complete"]
    assert set(row["x_floor"]) == set(lce_plan.SCHEMES)
    for scheme, ratio in row["x_floor"].items():
        assert ratio == pytest.approx(row["schemes_ms"][scheme] / row["floor_ms"])
    entry = lce_plan_cache.lookup(lce_triton.device_identity(), 1, 16, 8, 64, 4)
    assert entry["scheme"] == row["scheme"] and entry["by"] == "scaling-cli doctor"


def test_the_pack_probe_times_a_pack_against_the_plain_model(tmp_path):
    from scaling_cli.doctor.probe import probe_pack

    pack = expand(compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "sweep.grid={optim.lr:[1e-3,2e-3]}",
                           f"store.root={tmp_path}"]))
    probe = probe_pack(pack, torch.device("cpu"), warmup=1, steps=2, compile_model=False)
    assert probe["members"] == 2 and probe["plain_batch"] == 2 * 8
    assert probe["pack_tokens_per_s"] > 0 and probe["plain_tokens_per_s"] > 0
    assert probe["speedup_vs_plain"] == pytest.approx(probe["pack_tokens_per_s"] / probe["plain_tokens_per_s"])
    memory = probe["memory"]
    assert memory["estimate_bytes"] > 0 and memory["measured_peak_bytes"] is None  # no CUDA: no peak to measure
    assert probe["pack_mfu"] is None  # no GPU peak FLOP/s to divide by


@cpu_only
def test_the_table_prints_timings_and_the_probe_when_a_gpu_measured_them(cache, tmp_path):
    """The GPU rows of the table, from rows the real functions produced here (CPU numbers)."""
    from scaling_cli.doctor import machine
    from scaling_cli.doctor.probe import probe_pack
    from scaling_cli.doctor.report import summary
    from scaling_cli.doctor.timing import time_shape

    shape = {"arch": "d8 L1", "heads": 1, "tokens": 16, "dim": 8, "vocab": 64}
    row = time_shape(shape, torch.device("cpu"), warmup=0, rep=1, peers=("floor",), dtype=torch.float32)
    pack = expand(compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "sweep.grid={optim.lr:[1e-3,2e-3]}",
                           f"store.root={tmp_path}"]))
    probe = probe_pack(pack, torch.device("cpu"), warmup=1, steps=1, compile_model=False)
    report = {"mode": "gpu", "machine": machine.machine_info(), "seconds": 1.0, "not_run": [],
              "reference": {"triton": {"ok": None, "skipped": "not on this machine", "cases": []},
                            "torch": {"ok": True, "backend": "cpu", "cases": []}},
              "gpu_default": {"free_bytes": 70 << 30, "free_bytes_assumed": False, "packs": [2]},
              "plans": [], "timings": [row, {**shape, "arch": "d16 L1", "skipped": "over budget"}], "probe": probe,
              "plan_cache": lce_plan_cache.state(None)}
    table = summary(report, "report.json")
    assert "loss kernel timings" in table and "x the 3-matmul floor" in table and "skipped: over budget" in table
    assert f"{row['floor_ms']:9.3f}" in table and f"{row['x_floor'][row['scheme']]:.2f}x" in table
    assert f"pack of 2 x {probe['arch']}" in table and f"{probe['pack_tokens_per_s']:,.0f} tok/s" in table
