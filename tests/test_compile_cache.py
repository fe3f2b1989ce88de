"""Compiled artifacts live in the project's cache, so another process compiling the same block reuses them.

The CPU test checks that `configure_cache` places inductor's and Triton's caches under
$SCALING_CLI_CACHE/compile (also after torch._dynamo wrote its own default into the environment)
and leaves a user's own setting alone: inductor and Triton read those variables at every compile,
so this is where a worker or the next sweep looks. The GPU test compiles one pack block (forward
and backward, CUDA) with inductor in one process and again in a second process, and reads
inductor's counters there: FX-graph cache hits and no misses. On a CPU the same two-process check
works but costs 1-3 minutes of inductor's C++ builds on 2 cores, too slow for the suite, so it
runs where the cache matters most, on CUDA (benchmarks/gpu_check.sh runs `pytest -m gpu`). On a
CPU, the same two-process check runs on a one-line graph (~20 s): a second process that compiles
it after `configure_cache` finds the first one's artifact in the project cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

_ENV_KEYS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE",
             "TORCHINDUCTOR_AUTOGRAD_CACHE")

# One PackedBlock of a tiny pack through StepCompiler's block region, forward and backward, on the GPU;
# prints inductor's counters (fxgraph_cache_hit / fxgraph_cache_miss).
_COMPILE_BLOCK = """
import json, torch
from torch._dynamo.utils import counters
from scaling_cli.config import ModelConfig
from scaling_cli.model.packed_gpt import PackedGPT
from scaling_cli.train.compiled import StepCompiler
cfg = ModelConfig(d_model=64, n_layer=1, n_head=2, seq_len=32, vocab_size=300)
torch.manual_seed(0)
with torch.device("cuda"):
    packed = PackedGPT([cfg, cfg])
for p in packed.parameters():
    torch.nn.init.normal_(p, std=0.02)
compiler = StepCompiler("default", pack=True)
x = torch.randn(2, 2 * 32, 64, device="cuda", requires_grad=True)
with compiler.forward(packed):
    out = compiler.run_block(packed.blocks[0], x, 2, packed.rope_cos, packed.rope_sin)
out.square().mean().backward()
print(json.dumps(dict(counters["inductor"])))
"""


# A one-line graph compiled by inductor on the CPU after configure_cache; prints inductor's counters.
_COMPILE_TINY = """
import json, torch
from torch._dynamo.utils import counters
from scaling_cli.train.compiled import configure_cache
configure_cache()
f = torch.compile(lambda x: torch.nn.functional.gelu(x) * 2 + 1)
f(torch.randn(8, 16))
print(json.dumps(dict(counters["inductor"])))
"""


def _run(code: str, cache: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
    clean.update(SCALING_CLI_CACHE=str(cache), TORCHINDUCTOR_COMPILE_THREADS="1", OMP_NUM_THREADS="1", **env)
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compile_caches_live_under_the_project_cache(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir, triton_cache_dir

    from scaling_cli.train.compiled import configure_cache

    monkeypatch.setenv("SCALING_CLI_CACHE", str(tmp_path))
    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    # what importing torch._dynamo does first: inductor's temporary default, not a user's choice
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(default_cache_dir()))
    assert configure_cache() == tmp_path / "compile"
    # inductor and Triton read the environment at each compile, so this is where they write
    assert Path(cache_dir()) == tmp_path / "compile" / "inductor"
    assert Path(triton_cache_dir(0)).is_relative_to(tmp_path / "compile" / "triton")
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # a user's own setting wins
    configure_cache()
    assert Path(cache_dir()) == tmp_path / "mine"


def test_a_second_cpu_process_reuses_the_compiled_graph(tmp_path):
    first = _run(_COMPILE_TINY, tmp_path)
    assert first.get("fxgraph_cache_miss", 0) == 1 and not first.get("fxgraph_cache_hit")
    assert any((tmp_path / "compile" / "inductor").rglob("*.py"))  # the artifact is in the project cache
    second = _run(_COMPILE_TINY, tmp_path)
    assert second.get("fxgraph_cache_hit", 0) == 1 and not second.get("fxgraph_cache_miss")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (on a CPU it takes minutes of C++ builds)")
def test_a_second_process_compiling_the_same_block_hits_the_cache(tmp_path):
    first = _run(_COMPILE_BLOCK, tmp_path)
    assert first.get("fxgraph_cache_miss", 0) >= 2  # forward and backward compiled and stored
    assert any((tmp_path / "compile" / "inductor").rglob("*.py"))
    second = _run(_COMPILE_BLOCK, tmp_path)
    assert second.get("fxgraph_cache_hit", 0) >= 2 and second.get("fxgraph_cache_miss", 0) == 0
