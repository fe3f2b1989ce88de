"""Train a pack: K runs of one architecture as one batched model, each recorded as if trained alone.

    outcomes = train_pack(specs, store, data)     # {run_id: 'done' | 'diverged'}

Members start from their own state: a fresh run from the GPT its seed initialises, a resumed run
from its checkpoint, a WSD branch from its stable run's branch point; so they may sit at different
steps, and each keeps its own data order, schedule and optimizer step count. Every run's folder
gets what `train_run` would write (scaling_cli.train.trainer.RunRecorder does the writing): curve,
evals, checkpoints in the solo format, model.pt and status. A member that finishes or diverges
leaves the pack, which shrinks and trains on. Per-step losses stay on the device until some member
is due to log, as in the solo trainer.
"""

from __future__ import annotations

import math
import time
import traceback
from contextlib import nullcontext

import numpy as np
import torch

from scaling_cli.data.prepare import PreparedData
from scaling_cli.faults import crash_point, fault_point
from scaling_cli.memory import record_peak
from scaling_cli.model.gpt import GPT
from scaling_cli.model.packed_gpt import PackedGPT, head_losses, shape_fields
from scaling_cli.plan import RunSpec
from scaling_cli.store import RunStore
from scaling_cli.train.diagnostics import PackDiagnostics
from scaling_cli.train.evaluate import pack_validation_losses
from scaling_cli.train.packed_adamw import PackedAdamW
from scaling_cli.train.compiled import CompileClock, StepCompiler
from scaling_cli.train.kernel_plan import loss_kernel
from scaling_cli.train.trainer import (ProgressHook, RunRecorder, autocast_context, fetch_to_host, pick_device, to_device,
                                       uses_bf16)

PEAK_AFTER_STEPS = 3
"""A pack's memory peak is recorded after this many training steps: past compilation, in steady state,
before the first periodic validation or checkpoint."""


def train_pack(specs: list[RunSpec], store: RunStore, data: PreparedData,
               progress: ProgressHook | None = None) -> dict[str, str]:
    """Train `specs` (one architecture, batch size and data; see scaling_cli.packs) together."""
    runs = [RunRecorder(spec, store, data, pick_device(specs[0].config["train"]["device"])) for spec in specs]
    try:
        return _train_pack(runs, store, progress)
    finally:
        for run in runs:  # an interrupted or crashed member's trackers are rebuilt from the store on resume
            run.close()


def _train_pack(runs: list[RunRecorder], store: RunStore, progress: ProgressHook | None) -> dict[str, str]:
    train_cfg, device = runs[0].cfg.train, runs[0].device
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    outcomes: dict[str, str] = {}
    starts = {}
    for run in runs:
        try:
            starts[run.spec.run_id] = _starting_state(run)
        except Exception as err:  # e.g. a WSD branch whose stable run diverged: it alone cannot start
            _fail(store, run, err)
            outcomes[run.spec.run_id] = "failed"
    runs = [run for run in runs if run.spec.run_id in starts]
    if not runs:
        return outcomes
    model_states, optimizer_states = zip(*(starts[run.spec.run_id] for run in runs))
    kernel = loss_kernel(runs[0].cfg.model, len(runs), train_cfg.batch_size * runs[0].cfg.model.seq_len,
                         uses_bf16(device, train_cfg.precision), device, train_cfg.kernel_tune_s)
    for run in runs:
        run.cfg.model = kernel.apply(run.cfg.model)
        run.runtime["loss_kernel"] = kernel.record
    with torch.device(device):
        packed = PackedGPT([run.cfg.model for run in runs])
    packed.load_member_states(list(model_states))
    optimizer = PackedAdamW(packed, [run.cfg.optim for run in runs])
    for k, state in enumerate(optimizer_states):
        if state is not None:
            optimizer.load_member_state_dict(k, state)
    compiler = StepCompiler(train_cfg.compile_mode, pack=True, architecture=shape_fields(runs[0].cfg.model)) \
        if train_cfg.compile else None
    autocast = lambda: autocast_context(device, train_cfg.precision)  # noqa: E731
    diagnostics = PackDiagnostics([run.cfg.train.diagnostics_interval for run in runs], autocast)
    validate = lambda members: _validation_losses(packed, runs, members, autocast)  # noqa: E731
    initial = validate([k for k, run in enumerate(runs) if run.start == 0])
    for k, run in enumerate(runs):
        run.begin(lambda k=k: packed.member(k), initial.get(k))
        run.step = run.start
    pending: list[torch.Tensor] = []  # losses [K], grad norms [K], alternating, per step (on the device)
    host: list[tuple[list[float], list[float]]] = [([], []) for _ in runs]  # fetched, not yet logged
    packed.train()
    pack_id, pack_size, started, first_step_s = runs[0].spec.run_id, len(runs), time.perf_counter(), None
    steps_done, clock = 0, CompileClock(device, enabled=compiler is not None)
    while runs:
        clock.start()
        steps = [run.step for run in runs]
        lrs = [float(run.lrs[run.step]) for run in runs]  # host scalars: the optimizer takes them as kernel arguments
        # every member's batch in one pinned host tensor and one asynchronous copy
        inputs, targets = to_device(torch.stack([run.window(run.step) for run in runs]), device)
        diagnostics.begin(packed, steps, inputs, targets)
        fault_point("step")

        def forward_backward() -> torch.Tensor:
            with autocast(), (compiler.forward(packed) if compiler else nullcontext()):
                if compiler:
                    losses = compiler.head(packed, packed.trunk(inputs, compiler.run_block), targets)
                else:
                    losses = head_losses(packed, packed.trunk(inputs), targets)
            losses.sum().backward()  # member k's gradient is that of its own mean loss
            return losses

        if compiler:
            losses = compiler.step(forward_backward, optimizer.zero_grad)
            if compiler.eager_reason:
                for run in runs:
                    run.runtime["compile_fallback"] = compiler.eager_reason
        else:
            losses = forward_backward()
        grad_norms = optimizer.clip_grad_norms()
        diagnostics.before_update(packed)
        optimizer.step(lrs)
        diagnostics.after_update()
        optimizer.zero_grad()
        clock.stop()
        crash_point("step")
        pending += (losses.detach(), grad_norms)
        if first_step_s is None:  # compilation (if any) happens here; reported in each member's status
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                # the memory records (scaling_cli.memory) want steady-state training steps: not the
                # first, whose compilation and kernel autotuning allocate buffers no later step
                # holds (the optimizer state it creates stays allocated and is counted)
                torch.cuda.reset_peak_memory_stats(device)
            first_step_s = time.perf_counter() - started
        steps_done += 1
        if device.type == "cuda" and steps_done == PEAK_AFTER_STEPS:  # allocator statistics: no sync
            record_peak(runs[0].spec, len(runs), torch.cuda.max_memory_allocated(device),
                        torch.cuda.get_device_name(device))
        for run in runs:
            run.step += 1
        due = [k for k, run in enumerate(runs) if run.due(run.step)]
        if not due:
            continue
        _fetch(pending, host)
        leaving = [k for k in due if _record(runs[k], host, k, diagnostics)]
        for k in leaving:
            outcomes[runs[k].spec.run_id] = "diverged"
        val = validate([k for k in due if k not in leaving and runs[k].eval_due(runs[k].step)])
        for k in (k for k in due if k not in leaving):
            run = runs[k]
            try:
                # also at the last step: a WSD stable run keeps a branch checkpoint there
                run.after_record(run.step, lambda k=k: packed.member(k), lambda k=k, run=run: (
                    packed.member_state(k), optimizer.member_state_dict(k, float(run.lrs[run.step - 1]))),
                    val.get(k))
                if run.step == run.spec.steps:
                    outcomes[run.spec.run_id] = run.finish(packed.member(k), val[k], pack_size=pack_size,
                                                           pack_id=pack_id, first_step_s=first_step_s,
                                                           compile_s=clock.seconds)
                    leaving.append(k)
            except Exception as err:  # one member's evals or files failing must not stop the others
                _fail(store, run, err)
                outcomes[run.spec.run_id] = "failed"
                leaving.append(k)
        if progress:
            last = [run.log.curve[-1]["loss"] for run in runs if run.log.curve]
            progress(max(run.step for run in runs), max(run.spec.steps for run in runs),
                     {"loss": float(np.mean(last)) if last else math.nan,
                      "tokens_per_s": sum(getattr(run, "tokens_per_s", 0.0) for run in runs)})
        if leaving:
            stay = [k for k in range(len(runs)) if k not in leaving]
            if stay:
                packed.keep(stay)
                optimizer.keep(stay)
                diagnostics.keep(stay)
            runs = [runs[k] for k in stay]
            host = [host[k] for k in stay]
    return outcomes


def _fail(store: RunStore, run: RunRecorder, err: Exception) -> None:
    store.set_status(run.spec.run_id, "failed", error=f"{type(err).__name__}: {err}",
                     traceback=traceback.format_exc(limit=8), **run.runtime, **run.close())


def _record(run: RunRecorder, host: list[tuple[list[float], list[float]]], k: int,
            diagnostics: PackDiagnostics) -> bool:
    """Log member k's fetched steps into its curve; True if it diverged (and is now recorded so)."""
    losses, norms = (np.asarray(values) for values in host[k])
    host[k] = ([], [])
    return run.record(run.step, losses, norms, lambda s: diagnostics.row(k, s)) is not None


def _validation_losses(packed: PackedGPT, runs: list[RunRecorder], members: list[int], autocast) -> dict[int, float]:
    """Validation losses of pack members (indices) that are due, in one batched pass per group of
    members sharing train.eval_tokens (usually all); the other members' heads ride along unused."""
    groups: dict[int, list[int]] = {}
    for k in members:
        groups.setdefault(runs[k].cfg.train.eval_tokens, []).append(k)
    losses = {}
    for ks in groups.values():
        run = runs[ks[0]]
        values = pack_validation_losses(packed, run.data.validation, run.cfg.train, run.device, autocast())
        losses.update((k, values[k]) for k in ks)
    return losses


def _starting_state(run: RunRecorder) -> tuple[dict, dict | None]:
    """(GPT state dict, AdamW state dict or None) a member starts from, as the solo trainer would."""
    ckpt = run.resume()
    if ckpt is not None:
        return ckpt["model"], ckpt["optimizer"]
    torch.manual_seed(run.cfg.train.seed)  # the same initial weights as the run trained alone
    return GPT(run.cfg.model).state_dict(), None


def _fetch(pending: list[torch.Tensor], host: list[tuple[list[float], list[float]]]) -> None:
    """Move the pending per-step values to the host, one list per member (one copy for all steps)."""
    if not pending:
        return
    values = fetch_to_host(pending).reshape(len(pending) // 2, 2, -1)  # [steps, (loss, norm), K]
    pending.clear()
    for k, (member_losses, member_norms) in enumerate(host):
        member_losses.extend(values[:, 0, k].tolist())
        member_norms.extend(values[:, 1, k].tolist())
