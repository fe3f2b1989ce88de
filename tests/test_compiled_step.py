"""Compiled training steps (scaling_cli/train/compiled.py): a run trained alone and a pack, each with
train.compile=true, train and give the curves of the same runs trained eagerly.

The backend is `aot_eager`: dynamo traces the regions and AOTAutograd splits them into forward and
backward graphs exactly as under inductor, without inductor's C++ code generation (minutes on this
CPU). On a GPU, benchmarks/gpu_check.sh runs the same steps under inductor.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_OVERRIDES
from scaling_cli.compose import compose
from scaling_cli.launch import run_sweep
from scaling_cli.plan import expand
from scaling_cli.store import RunStore, load_curves
from scaling_cli.train import compiled


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "aot_eager")
    compiled.reset()
    yield
    compiled.reset()


def _sweep(root, *extra: str) -> None:
    cfg = compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "model.n_layer=2", "train.tokens=3840",
                   "train.device=cpu", "train.diagnostics_interval=0", f"store.root={root}", *extra])
    result = run_sweep(expand(cfg), RunStore(cfg.store.root), cfg.launcher, show_progress=False)
    assert set(result.states) == {"done"}


def _curves(root):
    return load_curves(str(root)).sort_values(["run_id", "step"]).reset_index(drop=True)


@pytest.mark.parametrize("grid, pack", [
    ("sweep.grid={optim.lr:[4e-3]}", "launcher.pack_size=1"),
    ("sweep.zip=[{optim.lr:[2e-3,4e-3,8e-3],train.tokens:[3840,2560,3840]}]", "launcher.pack_size=3"),  # shrinks to 2
], ids=["solo", "pack"])
def test_compiled_step_trains_and_matches_eager(tmp_path, aot_eager, grid, pack):
    _sweep(tmp_path / "eager", grid, pack)
    _sweep(tmp_path / "compiled", grid, pack, "train.compile=true")
    eager, compiled_curves = _curves(tmp_path / "eager"), _curves(tmp_path / "compiled")
    assert len(eager) == len(compiled_curves) > 0
    assert (eager[["run_id", "step"]] == compiled_curves[["run_id", "step"]]).all().all()
    for column in ("loss", "grad_norm"):
        np.testing.assert_allclose(compiled_curves[column], eager[column], rtol=2e-4, err_msg=column)
    first, last = (compiled_curves.groupby("run_id")["loss"].agg(how) for how in ("first", "last"))
    assert (last < first).all()  # it trains
    for name, compiled_step in (("eager", False), ("compiled", True)):  # compile time is measured, and only there
        statuses = [RunStore(str(tmp_path / name)).status(run_id) for run_id in set(eager["run_id"])]
        assert all((s["compile_s"] > 0) == compiled_step for s in statuses)
