"""Packs: K same-shape runs trained as one batched model must give each run what it gets alone.

Tolerance: on CPU in fp32 a pack reproduces its members' solo runs to rtol 1e-5 (the batched
matmuls could in principle sum in another order; on this build they match bit for bit). On a GPU
under bf16 the two differ by bf16 rounding noise, which these tests do not cover.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch._dynamo.testing

from conftest import TINY_OVERRIDES
from scaling_cli.compose import compose
from scaling_cli.config import ConfigError, LauncherConfig, ModelConfig, OptimConfig
from scaling_cli.launch import register_runs, run_sweep
from scaling_cli.model.gpt import GPT
from scaling_cli.model.packed_gpt import PackedGPT
from scaling_cli.packs import make_packs, member_bytes, members_that_fit, pack_key
from scaling_cli.plan import expand
from scaling_cli.store import RunStore, load_curves, load_evals, load_runs
from scaling_cli.train import compiled, pack_trainer
from scaling_cli.train.packed_adamw import PackedAdamW
from scaling_cli.train.trainer import build_optimizer, train_run
from scaling_cli.worker import FINISHED_ELSEWHERE, execute_pack, prepared_data

RTOL = 1e-5
CURVE_VALUES = ["loss", "grad_norm", "lr", "attn_logit_max", "log_z_mean", "update_ratio"]

# Three runs of one shape differing in everything a pack allows: lr, seed, z-loss, weight decay,
# init scale, warmup, clipping, and length (the second finishes 10 steps early and leaves the pack).
MEMBERS = ("sweep.zip=[{optim.lr:[1e-3,3e-3,1e-2],train.seed:[0,1,2],model.z_loss:[0,1e-4,0],"
           "optim.weight_decay:[0.1,0,0.3],model.init_std:[0.02,0.05,0.01],schedule.warmup:[0.1,0,0.3],"
           "optim.grad_clip:[1.0,0.05,0],train.tokens:[7680,5120,7680]}]")


def plan(root, *extra: str):
    return expand(compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "train.diagnostics_interval=7",
                           MEMBERS, f"store.root={root}", *extra]))


def train_alone(specs, root) -> RunStore:
    store = RunStore(str(root))
    register_runs(specs, store)
    for spec in specs:
        train_run(spec, store, prepared_data(spec))
    return store


def sorted_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_curves(a_root, b_root, run_ids=None) -> None:
    a, b = (sorted_table(load_curves(str(r)), ["run_id", "step"]) for r in (a_root, b_root))
    if run_ids is not None:
        a, b = (f[f["run_id"].isin(run_ids)].reset_index(drop=True) for f in (a, b))
    assert len(a) == len(b) > 0
    assert (a[["run_id", "step", "tokens"]] == b[["run_id", "step", "tokens"]]).all().all()
    for column in CURVE_VALUES:
        np.testing.assert_allclose(b[column], a[column], rtol=RTOL, atol=1e-7, err_msg=column)


def tiny_pack(cfgs: list[ModelConfig]) -> tuple[PackedGPT, list[GPT]]:
    models = []
    for seed, cfg in enumerate(cfgs):
        torch.manual_seed(seed)
        models.append(GPT(cfg))
    return PackedGPT.from_states(cfgs, [m.state_dict() for m in models]), models


MODEL_VARIANTS = {
    "gelu-tied": {},
    "swiglu-untied-qknorm-softcap": dict(mlp="swiglu", tied_embeddings=False, qk_layernorm=True, logit_softcap=30.0),
    "mup": dict(parametrization="mup", mup_base_width=16, tied_embeddings=False),
}


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=list(MODEL_VARIANTS))
def test_packed_model_matches_each_member_alone(variant):
    cfgs = [ModelConfig(d_model=32, n_layer=2, n_head=2, seq_len=16, vocab_size=300, z_loss=z, init_std=s,
                        **MODEL_VARIANTS[variant]) for z, s in [(0.0, 0.02), (1e-3, 0.05), (0.0, 0.01)]]
    packed, models = tiny_pack(cfgs)
    generator = torch.Generator().manual_seed(0)
    inputs, targets = (torch.randint(0, 300, (3, 4, 16), generator=generator) for _ in range(2))
    losses = packed(inputs, targets)
    losses.sum().backward()
    params = dict(packed.named_parameters())
    for k, model in enumerate(models):
        alone = model(inputs[k], targets[k])
        alone.backward()
        torch.testing.assert_close(losses[k], alone, rtol=RTOL, atol=0)
        for name, param in model.named_parameters():
            torch.testing.assert_close(params[name].grad[k], param.grad, rtol=RTOL, atol=1e-8, msg=name)
        # a member's slice is a GPT state dict
        restored = GPT(cfgs[k])
        restored.load_state_dict(packed.member_state(k))
        torch.testing.assert_close(restored(inputs[k], targets[k]), alone.detach(), rtol=RTOL, atol=0)
    assert len(losses) == 3 and len({float(v) for v in losses.detach()}) == 3  # members really differ


def test_pack_rejects_members_of_different_shapes():
    with pytest.raises(ValueError, match="must share every model field"):
        PackedGPT([ModelConfig(d_model=32, n_layer=1, n_head=2), ModelConfig(d_model=64, n_layer=1, n_head=2)])


def test_packed_adamw_follows_torch_adamw_per_member():
    cfgs = [ModelConfig(d_model=32, n_layer=1, n_head=2, seq_len=16, vocab_size=300) for _ in range(3)]
    optims = [OptimConfig(lr=1e-2, weight_decay=0.1, grad_clip=1.0),
              OptimConfig(lr=3e-3, weight_decay=0.0, grad_clip=0.05, beta2=0.99),
              OptimConfig(lr=5e-2, weight_decay=0.3, grad_clip=0.0, eps=1e-6)]
    packed, models = tiny_pack(cfgs)
    optimizer = PackedAdamW(packed, optims)
    solo = [build_optimizer(m, o, torch.device("cpu")) for m, o in zip(models, optims)]
    generator = torch.Generator().manual_seed(1)
    for step in range(6):
        inputs, targets = (torch.randint(0, 300, (3, 4, 16), generator=generator) for _ in range(2))
        packed(inputs, targets).sum().backward()
        norms = optimizer.clip_grad_norms()
        optimizer.step(torch.tensor([o.lr * (step + 1) / 6 for o in optims], dtype=torch.float64))
        optimizer.zero_grad()
        for k, (model, optim, torch_adamw) in enumerate(zip(models, optims, solo)):
            model(inputs[k], targets[k]).backward()
            clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
            torch.testing.assert_close(norms[k], torch.nn.utils.clip_grad_norm_(model.parameters(), clip), rtol=RTOL, atol=0)
            for group in torch_adamw.param_groups:
                group["lr"] = optim.lr * (step + 1) / 6 * group["lr_mult"]
            torch_adamw.step()
            torch_adamw.zero_grad()
    for k, model in enumerate(models):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(packed.member_state(k)[name], value, rtol=1e-5, atol=1e-7, msg=name)
    # member state <-> torch AdamW state dict, both ways
    exported = optimizer.member_state_dict(1, lr=optims[1].lr * 6 / 6)  # the last step's lr, as computed above
    reference = solo[1].state_dict()
    assert exported["param_groups"] == reference["param_groups"]
    for index, state in reference["state"].items():
        assert float(exported["state"][index]["step"]) == float(state["step"]) == 6
        torch.testing.assert_close(exported["state"][index]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-4, atol=1e-12)
    solo[1].load_state_dict(exported)
    optimizer.load_member_state_dict(0, solo[2].state_dict())
    first = optimizer.groups[0][0].names[0]  # state index 0 is the first parameter of the first group
    torch.testing.assert_close(optimizer.exp_avg[first][0], solo[2].state_dict()["state"][0]["exp_avg"])
    assert float(optimizer.steps[0]) == 6


def test_pack_trains_each_run_as_it_trains_alone(tmp_path):
    specs = plan(tmp_path / "alone")
    assert len({pack_key(s) for s in specs}) == 1 and len({s.steps for s in specs}) == 2
    train_alone(specs, tmp_path / "alone")
    store = RunStore(str(tmp_path / "pack"))
    register_runs(specs, store)
    outcomes = pack_trainer.train_pack(specs, store, prepared_data(specs[0]))
    assert outcomes == {s.run_id: "done" for s in specs}
    assert_same_curves(tmp_path / "alone", tmp_path / "pack")
    evals = [sorted_table(load_evals(str(tmp_path / r)), ["run_id", "step", "task", "metric"]) for r in ("alone", "pack")]
    np.testing.assert_allclose(evals[1]["value"], evals[0]["value"], rtol=RTOL)
    alone_runs, pack_runs = (load_runs(str(tmp_path / r)).set_index("run_id").sort_index() for r in ("alone", "pack"))
    assert (pack_runs["status"] == "done").all()
    np.testing.assert_allclose(pack_runs["loss"], alone_runs["loss"], rtol=RTOL)
    for spec in specs:  # the same files, and model.pt is a plain GPT state dict
        alone_dir, pack_dir = (RunStore(str(tmp_path / r)).run_path(spec.run_id) for r in ("alone", "pack"))
        assert sorted(p.name for p in _files(alone_dir)) == sorted(p.name for p in _files(pack_dir))
        state = torch.load(f"{pack_dir}/model.pt", weights_only=True)
        GPT(ModelConfig(**spec.config["model"])).load_state_dict(state)
        assert store.status(spec.run_id)["pack_size"] == 3


def _files(folder):
    from pathlib import Path

    return [p for p in Path(folder).iterdir() if p.is_file()]


class _Interrupt:
    """A progress hook that raises KeyboardInterrupt once training reaches `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, done: int, total: int, metrics: dict) -> None:
        if done >= self.step:
            raise KeyboardInterrupt


def test_pack_checkpoints_resume_alone_and_solo_checkpoints_resume_in_a_pack(tmp_path):
    specs = plan(tmp_path / "x")
    train_alone(specs, tmp_path / "alone")
    data = prepared_data(specs[0])

    # a pack stopped after its step-20 checkpoints, finished by the solo trainer
    store = RunStore(str(tmp_path / "pack_then_alone"))
    register_runs(specs, store)
    with pytest.raises(KeyboardInterrupt):
        pack_trainer.train_pack(specs, store, data, progress=_Interrupt(20))
    assert all(store.exists(s.run_id, "checkpoint.pt") for s in specs if s.steps > 20)
    for spec in specs:
        if store.status(spec.run_id)["state"] != "done":
            assert train_run(spec, store, data) == "done"
    assert_same_curves(tmp_path / "alone", tmp_path / "pack_then_alone")

    # solo runs stopped after their step-10 checkpoints, finished together as a pack
    store = RunStore(str(tmp_path / "alone_then_pack"))
    register_runs(specs, store)
    for spec in specs:
        with pytest.raises(KeyboardInterrupt):
            train_run(spec, store, data, progress=_Interrupt(15))
        assert torch.load(store.run_path(spec.run_id, "checkpoint.pt"), weights_only=False)["step"] == 10
    assert set(pack_trainer.train_pack(specs, store, data).values()) == {"done"}
    assert_same_curves(tmp_path / "alone", tmp_path / "alone_then_pack")


def test_a_diverging_member_leaves_the_pack_without_touching_the_others(tmp_path):
    extra = ["sweep.zip=[]", "sweep.grid={optim.lr:[3e-3,5.0,1e-2]}", "optim.grad_clip=0"]
    specs = plan(tmp_path / "x", *extra)
    train_alone(specs, tmp_path / "alone")
    store = RunStore(str(tmp_path / "pack"))
    register_runs(specs, store)
    outcomes = pack_trainer.train_pack(specs, store, prepared_data(specs[0]))
    by_lr = {s.config["optim"]["lr"]: outcomes[s.run_id] for s in specs}
    assert by_lr == {3e-3: "done", 5.0: "diverged", 1e-2: "done"}
    assert store.status(next(s.run_id for s in specs if s.config["optim"]["lr"] == 5.0))["reason"]
    healthy = [s.run_id for s in specs if outcomes[s.run_id] == "done"]
    assert_same_curves(tmp_path / "alone", tmp_path / "pack", healthy)


def test_one_compile_serves_every_layer_and_every_pack_of_a_shape(tmp_path, monkeypatch):
    """Regional compilation: one graph per region (the block, shared by both layers; the head when the
    loss is an opaque op) serves a pack of 3 and then another pack of 2 of the same shape."""
    counter = torch._dynamo.testing.CompileCounter()
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", counter)
    compiled.reset()
    specs = expand(compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "train.compile=true", "train.tokens=2560",
                            "model.n_layer=2", "sweep.grid={optim.lr:[1e-3,2e-3,3e-3,4e-3,5e-3]}",
                            f"store.root={tmp_path}"]))
    store = RunStore(str(tmp_path))
    register_runs(specs, store)
    data = prepared_data(specs[0])
    try:
        pack_trainer.train_pack(specs[:3], store, data)  # K = 3
        pack_trainer.train_pack(specs[3:], store, data)  # another pack of the shape, K = 2
        assert counter.frame_count == 1 + compiled.loss_in_graph()
    finally:
        compiled.reset()
    assert (load_runs(str(tmp_path))["status"] == "done").all()


def _spec_like(root, *extra):
    return expand(compose(["sweep=single", *TINY_OVERRIDES, "eval=none", f"store.root={root}", *extra]))


def test_make_packs_groups_by_shape_balances_and_goes_largest_first(tmp_path):
    specs = _spec_like(tmp_path, "sweep.grid={model.d_model:[32,64],optim.lr:[1e-3,2e-3,3e-3,4e-3,5e-3],"
                                 "train.batch_size:[4,8]}")
    packs = make_packs(specs, LauncherConfig(pack_size=4))
    assert sorted(len(p) for p in packs) == [2, 2, 2, 2, 3, 3, 3, 3]  # 5 per group -> 3 + 2, not 4 + 1
    assert sum(len(p) for p in packs) == len(specs) == 20
    for pack in packs:
        assert len({pack_key(s) for s in pack}) == 1
    widths = [p[0].config["model"]["d_model"] for p in packs]
    assert widths == sorted(widths, reverse=True)  # largest model first
    assert all(len(p) == 1 for p in make_packs(specs, LauncherConfig()))  # CPU runs: no packing by default


def test_pack_size_from_gpu_memory(tmp_path):
    spec = _spec_like(tmp_path, "model.d_model=256", "model.n_head=4", "model.n_layer=4", "model.seq_len=1024",
                      "model.vocab_size=32768", "train.batch_size=16", "train.device=cuda")[0]
    per_member = member_bytes(spec)
    assert per_member > 16 * spec.params  # weights, grads, Adam moments, plus activations
    launcher = LauncherConfig(pack_max=16, pack_memory_fraction=0.8)
    assert members_that_fit(spec, 80 << 30, launcher) == min(16, int((0.8 * (80 << 30) - (1 << 30)) // per_member))
    assert members_that_fit(spec, 2 << 30, launcher) == 1  # never below one run
    assert members_that_fit(spec, 1 << 40, launcher) == 16  # capped by pack_max
    big = make_packs([spec] * 1, launcher, free_bytes=80 << 30)
    assert len(big) == 1
    cuda_specs = _spec_like(tmp_path, "train.device=cuda", "sweep.grid={optim.lr:[1e-3,2e-3,3e-3]}")
    assert [len(p) for p in make_packs(cuda_specs, launcher, free_bytes=80 << 30)] == [3]
    assert [len(p) for p in make_packs(cuda_specs, launcher, free_bytes=None)] == [1, 1, 1]


def test_sweep_with_packs_matches_the_sweep_without(tmp_path):
    grid = ["sweep.grid={train.seed:[0,1],optim.lr:[1e-3,1e-2]}"]
    results = {}
    for name, size in (("solo", 1), ("packed", 2)):
        cfg = compose(["sweep=single", *TINY_OVERRIDES, "eval=none", *grid, f"store.root={tmp_path / name}",
                       f"launcher.pack_size={size}"])
        result = run_sweep(expand(cfg), RunStore(cfg.store.root), cfg.launcher, show_progress=False)
        assert result.states == {"done": 4}
        results[name] = load_runs(cfg.store.root).set_index("run_id").sort_index()
    np.testing.assert_allclose(results["packed"]["loss"], results["solo"]["loss"], rtol=RTOL)
    assert_same_curves(tmp_path / "solo", tmp_path / "packed")
    # re-running the packed sweep trains nothing
    again = run_sweep(expand(cfg), RunStore(cfg.store.root), cfg.launcher, show_progress=False)
    assert again.trained == 0 and again.skipped == 4


def test_execute_pack_leaves_out_members_finished_elsewhere(tmp_path):
    specs = _spec_like(tmp_path, "sweep.grid={optim.lr:[1e-3,2e-3,3e-3]}")
    store = RunStore(str(tmp_path))
    register_runs(specs, store)
    train_run(specs[1], store, prepared_data(specs[1]))
    before = store.status(specs[1].run_id)["updated"]
    outcomes = execute_pack(specs, str(tmp_path), lease_ttl_s=60)
    assert outcomes == ["done", FINISHED_ELSEWHERE, "done"]
    assert store.status(specs[1].run_id)["updated"] == before
    assert "pack_size" not in store.status(specs[1].run_id)


def test_a_crashing_pack_fails_only_its_unfinished_members(tmp_path, monkeypatch):
    specs = _spec_like(tmp_path, "sweep.zip=[{optim.lr:[1e-3,2e-3],train.tokens:[2560,7680]}]")
    store = RunStore(str(tmp_path))
    register_runs(specs, store)
    original_step, calls = PackedAdamW.step, []

    def step_then_crash(self, lrs):
        calls.append(1)
        if len(calls) == 15:  # after the short run (10 steps) finished
            raise RuntimeError("simulated CUDA error")
        return original_step(self, lrs)

    monkeypatch.setattr(PackedAdamW, "step", step_then_crash)
    outcomes = execute_pack(specs, str(tmp_path), lease_ttl_s=60)
    by_tokens = {s.tokens: (o, store.status(s.run_id)) for s, o in zip(specs, outcomes)}
    assert by_tokens[2560][0] == "done" and by_tokens[2560][1]["state"] == "done"
    assert by_tokens[7680][0] == "failed" and "simulated CUDA error" in by_tokens[7680][1]["error"]


@pytest.mark.parametrize("override, field", [("launcher.pack_size=-1", "launcher.pack_size"),
                                             ("launcher.pack_max=0", "launcher.pack_max"),
                                             ("launcher.pack_memory_fraction=1.5", "launcher.pack_memory_fraction"),
                                             ("train.compile_mode=fast", "train.compile_mode")])
def test_bad_pack_settings_fail_with_the_field_named(tmp_path, override, field):
    with pytest.raises(ConfigError, match=field):
        _spec_like(tmp_path, override)


def test_gpu_default_sweep_packs_by_width_within_the_memory_budget():
    specs = expand(compose(["sweep=gpu_default"]))
    assert len(specs) == 32 and all(s.config["train"]["device"] == "cuda" for s in specs)
    for free in (80 << 30, 24 << 30):
        packs = make_packs(specs, LauncherConfig(), free_bytes=free)
        assert sorted(s.run_id for p in packs for s in p) == sorted(s.run_id for s in specs)
        widths = [p[0].config["model"]["d_model"] for p in packs]
        assert widths == sorted(widths, reverse=True)  # largest first
        for pack in packs:
            assert len({s.config["model"]["d_model"] for s in pack}) == 1
            assert len(pack) == 1 or len(pack) * member_bytes(pack[0]) <= 0.8 * free
    on_h100 = make_packs(specs, LauncherConfig(), free_bytes=80 << 30)
    assert [len(p) for p in on_h100 if p[0].config["model"]["d_model"] == 128] == [8]  # a whole width at once
    assert len(make_packs(specs, LauncherConfig(), free_bytes=24 << 30)) > len(on_h100)


def test_ctrl_c_mid_pack_leaves_finished_members_done_and_the_rest_pending(tmp_path):
    specs = _spec_like(tmp_path, "sweep.zip=[{optim.lr:[1e-3,2e-3],train.tokens:[2560,7680]}]")
    store = RunStore(str(tmp_path))
    register_runs(specs, store)
    with pytest.raises(KeyboardInterrupt):
        execute_pack(specs, str(tmp_path), lease_ttl_s=60, progress=_Interrupt(15))
    states = {s.tokens: store.status(s.run_id) for s in specs}
    assert states[2560]["state"] == "done"
    assert states[7680]["state"] == "pending" and "resumes" in states[7680]["note"]
    assert torch.load(store.run_path(specs[1].run_id if specs[1].tokens == 7680 else specs[0].run_id,
                                     "checkpoint.pt"), weights_only=False)["step"] == 10
    assert not list(tmp_path.rglob("lease.*"))  # leases released


def test_a_pack_that_runs_out_of_memory_trains_as_two_smaller_packs(tmp_path, monkeypatch):
    """torch.OutOfMemoryError (what CUDA's allocator raises) injected in the 12th step of a pack of 4,
    through scaling_cli.faults: the pack retrains as two packs of 2 from the step-10 checkpoints."""
    from scaling_cli import faults

    specs = _spec_like(tmp_path / "pack", "sweep.grid={optim.lr:[1e-3,2e-3,3e-3,4e-3]}")
    train_alone(specs, tmp_path / "alone")
    store = RunStore(str(tmp_path / "pack"))
    register_runs(specs, store)
    original_step, sizes = PackedAdamW.step, []

    def counting_step(self, lrs):  # observes the pack sizes only; the fault comes from faults.py
        sizes.append(len(lrs))
        return original_step(self, lrs)

    monkeypatch.setattr(PackedAdamW, "step", counting_step)
    faults.reset()
    monkeypatch.setenv("SCALING_CLI_FAULT", "oom:step:12")
    with pytest.warns(UserWarning, match="ran out of GPU memory .*injected by SCALING_CLI_FAULT"):
        outcomes = execute_pack(specs, str(tmp_path / "pack"), lease_ttl_s=60)
    assert outcomes == ["done"] * 4
    # 11 steps of 4 (the 12th raised before its step), then each half from step 10 to 30
    assert sizes == [4] * 11 + [2] * (2 * (30 - 10))
    assert [store.status(s.run_id)["pack_size"] for s in specs] == [2] * 4
    assert_same_curves(tmp_path / "alone", tmp_path / "pack")


def test_wsd_families_train_in_packs_as_they_train_alone(tmp_path):
    """Two WSD families (two lrs): the stable runs share a pack, then the four decay branches
    share one, each starting from its stable run's checkpoint at its own step."""
    overrides = ["sweep=single", *TINY_OVERRIDES, "eval=none", "schedule=wsd", "train.tokens=15360",
                 "sweep.wsd_branches=[0.5,1.0]", "sweep.grid={optim.lr:[2e-3,4e-3]}"]
    for name, size in (("alone", 1), ("packed", 4)):
        cfg = compose([*overrides, f"store.root={tmp_path / name}", f"launcher.pack_size={size}"])
        result = run_sweep(expand(cfg), RunStore(cfg.store.root), cfg.launcher, show_progress=False)
        assert result.states == {"done": 6}
    runs = load_runs(str(tmp_path / "packed"))
    assert sorted(runs["pack_size"]) == [2, 2, 4, 4, 4, 4]
    assert {b for b in runs["wsd_role"]} == {"stable", "branch"}
    assert_same_curves(tmp_path / "alone", tmp_path / "packed")


def test_a_member_that_cannot_start_fails_alone(tmp_path):
    """WSD branches whose stable run never left a checkpoint fail; a run packed beside them trains."""
    family = expand(compose(["sweep=single", *TINY_OVERRIDES, "eval=none", "schedule=wsd", "train.tokens=15360",
                             "sweep.wsd_branches=[0.5,1.0]", f"store.root={tmp_path}"]))
    branches = [s for s in family if s.parent]
    other = _spec_like(tmp_path, "schedule=wsd", "train.tokens=15360", "optim.lr=5e-3")[0]
    store = RunStore(str(tmp_path))
    register_runs([*family, other], store)
    outcomes = execute_pack([*branches, other], str(tmp_path), lease_ttl_s=60)
    assert outcomes == ["failed", "failed", "done"]
    assert "has no checkpoint" in store.status(branches[0].run_id)["error"]


def test_a_member_failing_at_its_end_does_not_stop_the_others(tmp_path, monkeypatch):
    from scaling_cli.train.trainer import RunRecorder

    specs = _spec_like(tmp_path, "sweep.grid={optim.lr:[1e-3,2e-3,3e-3]}")
    store = RunStore(str(tmp_path))
    register_runs(specs, store)
    original = RunRecorder.finish

    def finish(self, *args, **kwargs):
        if self.cfg.optim.lr == 2e-3:
            raise RuntimeError("downstream eval crashed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunRecorder, "finish", finish)
    assert execute_pack(specs, str(tmp_path), lease_ttl_s=60) == ["done", "failed", "done"]
    assert "downstream eval crashed" in store.status(specs[1].run_id)["error"]


def test_mup_runs_train_in_a_pack_as_they_train_alone(tmp_path):
    """μP's per-group learning-rate multipliers and output multiplier hold inside a pack."""
    extra = ["model.parametrization=mup", "model.mup_base_width=16", "model.tied_embeddings=false",
             "sweep.grid={optim.lr:[3e-3,1e-2],model.init_std:[0.02,0.04]}"]
    specs = _spec_like(tmp_path / "pack", *extra)
    train_alone(specs, tmp_path / "alone")
    store = RunStore(str(tmp_path / "pack"))
    register_runs(specs, store)
    assert set(pack_trainer.train_pack(specs, store, prepared_data(specs[0])).values()) == {"done"}
    assert_same_curves(tmp_path / "alone", tmp_path / "pack")
