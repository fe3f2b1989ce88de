"""Train one run to completion (or divergence), writing everything into its store folder.

    state = train_run(spec, store, data)      # 'done' or 'diverged'

Resumable at checkpoint granularity: a run folder holding checkpoint.pt continues from that
step with the same data order (the batch at step s depends only on s), and its curve and
evals are cut back to the checkpoint so nothing is counted twice. Per-step losses stay on the
device and are fetched every `train.log_interval` steps, so logging every step costs no sync.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np
import pandas as pd
import torch

from scaling_cli.config import EvalConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig
from scaling_cli.data.packing import BatchOrder
from scaling_cli.errors import UserError
from scaling_cli.data.prepare import PreparedData
from scaling_cli.evals import downstream_evals
from scaling_cli.faults import crash_point, fault_point
from scaling_cli.model import mup
from scaling_cli.model.gpt import GPT
from scaling_cli.model.packed_gpt import shape_fields
from scaling_cli.plan import RunSpec
from scaling_cli.store import CURVE_COLUMNS, EVAL_COLUMNS, RunStore
from scaling_cli.train.compiled import CompileClock, StepCompiler
from scaling_cli.train.diagnostics import StepDiagnostics
from scaling_cli.train.evaluate import validation_loss
from scaling_cli.train.kernel_plan import loss_kernel
from scaling_cli.train.loggers import RunLoggers
from scaling_cli.schedule import lr_multipliers

ModelSource = Union[GPT, Callable[[], GPT]]
"""A run's model, or a function that makes it (a pack member's standalone copy, made only when needed)."""
ProgressHook = Callable[[int, int, dict], None]
"""Called as hook(step_done, total_steps, {'loss': ..., 'tokens_per_s': ...}) after each log flush."""


@dataclass
class RunConfig:
    model: ModelConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    train: TrainConfig
    eval: EvalConfig

    @classmethod
    def from_spec(cls, spec: RunSpec) -> "RunConfig":
        c = spec.config
        return cls(ModelConfig(**c["model"]), OptimConfig(**c["optim"]), ScheduleConfig(**c["schedule"]),
                   TrainConfig(**c["train"]), EvalConfig(**c.get("eval", {})))


def to_device(windows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets on the device from token windows [..., seq_len + 1] on the host: one copy,
    from pinned memory on CUDA so it is asynchronous (a pageable copy makes the host wait)."""
    if device.type == "cuda":
        windows = windows.pin_memory()
    windows = windows.to(device, non_blocking=True)
    return windows[..., :-1], windows[..., 1:]


def fetch_to_host(values: list[torch.Tensor]) -> np.ndarray:
    """Same-shaped device tensors (per-step losses, norms...) as one float64 array [len(values), ...]:
    one device-to-host copy, the only sync of a log flush."""
    return torch.stack([v.detach().float() for v in values]).cpu().double().numpy()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device: {name!r} was asked for but no CUDA GPU is visible; set train.device=cpu or auto")
    return torch.device(name)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether a step computes in bf16: asked for, or 'auto' on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA unless fp32 is asked for; plain fp32 on CPU ('auto')."""
    if not uses_bf16(device, precision):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def build_optimizer(model: GPT, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not norms or the embedding, which decay hurts).

    Every group carries `lr_mult`, its learning rate as a multiple of the schedule's: 1, except μP's
    hidden matrices (1/width multiplier, scaling_cli/model/mup.py), which get a group of their own.
    The step loop sets group["lr"] = schedule lr x lr_mult. Groups are ordered decay first, so the
    standard parametrization keeps its two groups (and checkpoints) exactly as before."""
    embedding = model.embed.weight
    buckets: dict[tuple[bool, float], list] = {}
    for name, param in model.named_parameters():  # tied lm_head is the embedding and appears once
        decay = param.dim() >= 2 and param is not embedding
        buckets.setdefault((decay, mup.lr_multiplier(model.cfg, name, param)), []).append(param)
    groups = [{"params": buckets[key], "weight_decay": cfg.weight_decay if key[0] else 0.0, "lr": cfg.lr * key[1],
               "lr_mult": key[1]} for key in sorted(buckets, key=lambda k: (not k[0], -k[1]))]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=device.type == "cuda")


@dataclass
class _Log:
    """Rows accumulated for the run's curve and evals tables."""

    curve: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (pd.DataFrame(self.curve, columns=CURVE_COLUMNS), pd.DataFrame(self.evals, columns=EVAL_COLUMNS))

    def write(self, store: RunStore, run_id: str) -> pd.DataFrame:
        """Write both tables to the run folder; returns the curve."""
        curve, evals = self.frames()
        store.write_table(run_id, "curve", curve)
        store.write_table(run_id, "evals", evals)
        return curve

    def restore(self, store: RunStore, run_id: str, step: int) -> None:
        for name, rows in (("curve", self.curve), ("evals", self.evals)):
            if store.exists(run_id, f"{name}.parquet"):
                frame = store.read_table(run_id, name)
                rows.extend(frame[frame["step"] <= step].to_dict("records"))


class RunRecorder:
    """Everything one run writes to its store folder while it trains, whoever trains it: `train_run`
    (alone) or `scaling_cli.train.pack_trainer` (as a member of a pack). The trainer brings the
    model; this keeps the run's curve and evals, checks divergence, checkpoints, validates and
    finishes, so a packed run's folder is identical in form to a solo run's."""

    def __init__(self, spec: RunSpec, store: RunStore, data: PreparedData, device: torch.device) -> None:
        self.spec, self.store, self.data, self.device = spec, store, data, device
        self.cfg = RunConfig.from_spec(spec)
        self.lrs = self.cfg.optim.lr * lr_multipliers(spec.steps, self.cfg.schedule)
        self.order = BatchOrder(data.train.count, self.cfg.train.batch_size, self.cfg.train.seed)
        self.log = _Log()
        self.start, self.initial_loss, self.elapsed_before, self.eval_seconds = 0, None, 0.0, 0.0
        self.loggers: RunLoggers | None = None
        self.runtime: dict = {}
        """How this process trains the run (loss kernel, compile fallback): in every status write."""

    def resume(self) -> dict | None:
        """The checkpoint to continue from (the run's own, or a WSD branch's point in its stable
        run), with the curve and evals restored up to it; None for a fresh start."""
        ckpt = load_checkpoint(self.store, self.spec.run_id, self.device)
        source = self.spec.run_id
        if ckpt is None and self.spec.parent:  # a WSD branch starts where its decay leaves the stable run
            ckpt, source = load_branch_point(self.store, self.spec.parent, self.device), self.spec.parent["run_id"]
        if ckpt is not None:
            self.start, self.initial_loss, self.elapsed_before = ckpt["step"], ckpt["initial_loss"], ckpt["elapsed_s"]
            self.log.restore(self.store, source, self.start)
        return ckpt

    def begin(self, model: ModelSource, val_loss: float | None = None) -> None:
        """Mark the run running and validate the initial model of a fresh run; starts the clock."""
        if self.cfg.train.loggers:  # trackers start from what the store restored (resume() ran before)
            self.loggers = RunLoggers(self.spec, self.store, self.cfg.train.loggers, self.log.curve, self.log.evals)
        self.store.set_status(self.spec.run_id, "running", step=self.start, host=socket.gethostname(),
                              pid=os.getpid(), device=str(self.device), **self.runtime)
        if self.start == 0:
            self.evaluate(model, 0, val_loss)
        self.t0 = time.perf_counter() - self.elapsed_before
        self.window_start, self.window_time = self.start, time.perf_counter()

    def window(self, step: int) -> torch.Tensor:
        """This run's batch at `step` as token windows [batch, seq_len + 1] on the host (inputs are
        [..., :-1], targets [..., 1:])."""
        return self.data.train.windows(self.order.indices(step))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of this run's batch at `step`, on the device."""
        return to_device(self.window(step), self.device)

    def due(self, done: int) -> bool:
        """Whether per-step metrics must be flushed after `done` steps (log, end, branch points)."""
        return done % self.cfg.train.log_interval == 0 or done == self.spec.steps or done in self.spec.branch_points

    def record(self, done: int, losses: np.ndarray, norms: np.ndarray,
               diagnostics: Callable[[int], dict] = lambda step: {}) -> str | None:
        """Append curve rows for steps done-len(losses)+1 .. done; 'diverged' (status written,
        checkpoint removed) if the run must stop, else None."""
        spec = self.spec
        now = time.perf_counter()
        self.tokens_per_s = (done - self.window_start) * spec.batch_size_tokens / max(now - self.window_time, 1e-9)
        self.window_start, self.window_time = done, now
        first = done - len(losses)
        for i, (value, norm) in enumerate(zip(losses, norms)):
            s = first + i + 1
            self.log.curve.append({"step": s, "tokens": s * spec.batch_size_tokens,
                                   "flops": s * spec.batch_size_tokens * spec.flops_per_token,
                                   "lr": float(self.lrs[s - 1]), "loss": float(value), "grad_norm": float(norm),
                                   "tokens_per_s": self.tokens_per_s, "elapsed_s": now - self.t0, **diagnostics(s)})
        if self.loggers:
            self.loggers.log_curve(self.log.curve[-len(losses):])
        if self.initial_loss is None:
            self.initial_loss = float(losses[0])
        reason = divergence(losses, self.initial_loss, self.cfg.train.divergence_factor)
        if not reason:
            return None
        curve = self.log.write(self.store, spec.run_id)
        finite = curve["loss"][np.isfinite(curve["loss"])]
        self.store.set_status(spec.run_id, "diverged", step=done, reason=reason,
                              last_finite_loss=float(finite.iloc[-1]) if len(finite) else None, **self.runtime,
                              **self.close())
        self.store.remove(spec.run_id, "checkpoint.pt")
        return "diverged"

    def eval_due(self, done: int) -> bool:
        """Whether the run validates after `done` steps (periodically, and at the end)."""
        return done % self.cfg.train.eval_interval == 0 or done == self.spec.steps

    def after_record(self, done: int, model: ModelSource, states: Callable[[], tuple[dict, dict]],
                     val_loss: float | None = None) -> None:
        """Periodic validation and checkpoints after a flush at `done` steps (not at the end).
        `model` is the run's GPT (or makes it, only when needed), `states` its (model, optimizer)
        state dicts; `val_loss`, when the trainer computed it already (a pack does, for all members)."""
        train = self.cfg.train
        if self.eval_due(done) and done != self.spec.steps:
            self.evaluate(model, done, val_loss)
        if done in self.spec.branch_points:
            self.checkpoint(done, *states(), name=f"branch-{done}.pt")
        if done % train.checkpoint_interval == 0 and done != self.spec.steps:
            self.checkpoint(done, *states())

    def evaluate(self, model: ModelSource, step: int, val_loss: float | None = None) -> float:
        """Validation loss (unless given) and downstream evals when due, of `model` at `step`, logged."""
        cfg = self.cfg
        autocast = autocast_context(self.device, cfg.train.precision)
        get_model = _model_getter(model)
        value = val_loss if val_loss is not None else validation_loss(
            get_model(), self.data.validation, cfg.train, self.device, autocast)
        rows = [{"task": "val", "metric": "loss", "value": value}]
        final = step == self.spec.steps
        if (cfg.eval.tasks or cfg.eval.harness) and (final or (cfg.eval.interval and step and step % cfg.eval.interval == 0)):
            started = time.perf_counter()
            rows += downstream_evals(get_model(), self.data.tokenizer, cfg.eval, self.device, autocast)
            self.eval_seconds += time.perf_counter() - started
            get_model().train()
        elif val_loss is None:
            get_model().train()
        tokens = step * self.spec.batch_size_tokens
        position = {"step": step, "tokens": tokens, "flops": tokens * self.spec.flops_per_token}
        self.log.evals.extend({**position, **row} for row in rows)
        if self.loggers:
            self.loggers.log_evals(self.log.evals[-len(rows):])
        return value

    def checkpoint(self, step: int, model_state: dict, optimizer_state: dict, name: str = "checkpoint.pt") -> None:
        self.log.write(self.store, self.spec.run_id)
        crash_point("checkpoint")
        state = {"model": model_state, "optimizer": optimizer_state, "step": step,
                 "initial_loss": self.initial_loss, "elapsed_s": time.perf_counter() - self.t0}
        self.store.write_with(self.spec.run_id, name, lambda f: torch.save(state, f))
        self.store.set_status(self.spec.run_id, "running", step=step, host=socket.gethostname(), pid=os.getpid(),
                              **self.runtime)
        if self.loggers:
            self.loggers.flush()

    def finish(self, model: GPT, val_loss: float | None = None, **status) -> str:
        """Final validation, tables, model.pt and status 'done'; the checkpoint goes."""
        spec = self.spec
        final_loss = self.evaluate(model, spec.steps, val_loss)
        self.log.write(self.store, spec.run_id)
        self.store.write_with(spec.run_id, "model.pt", lambda f: torch.save(model.state_dict(), f))
        self.store.set_status(spec.run_id, "done", step=spec.steps, val_loss=final_loss,
                              elapsed_s=time.perf_counter() - self.t0, downstream_eval_s=self.eval_seconds,
                              device=str(self.device), **self.runtime, **status, **self.close())
        self.store.remove(spec.run_id, "checkpoint.pt")
        return "done"

    def close(self) -> dict:
        """Close the run's trackers (idempotent); {'logger_errors': ...} for status.json if any failed."""
        if self.loggers is None:
            return {}
        self.loggers.close()
        return {"logger_errors": self.loggers.errors} if self.loggers.errors else {}


def train_run(spec: RunSpec, store: RunStore, data: PreparedData, progress: ProgressHook | None = None) -> str:
    device = pick_device(spec.config["train"]["device"])
    run = RunRecorder(spec, store, data, device)
    cfg = run.cfg
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    kernel = loss_kernel(cfg.model, 1, cfg.train.batch_size * cfg.model.seq_len,
                         uses_bf16(device, cfg.train.precision), device, cfg.train.kernel_tune_s)
    cfg.model = kernel.apply(cfg.model)
    run.runtime["loss_kernel"] = kernel.record
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.optim, device)
    compiler = StepCompiler(cfg.train.compile_mode, architecture=shape_fields(cfg.model)) if cfg.train.compile else None
    ckpt = run.resume()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    run.begin(model)
    try:
        return _train_steps(spec, run, model, optimizer, compiler, progress)
    finally:
        run.close()  # an interrupted or crashed run's trackers are rebuilt from the store on resume


def _train_steps(spec: RunSpec, run: RunRecorder, model: GPT, optimizer: torch.optim.AdamW,
                 compiler: StepCompiler | None, progress: ProgressHook | None) -> str:
    cfg, device = run.cfg, run.device
    pending: list[torch.Tensor] = []  # loss and grad norm of every step since the last flush, on the device
    diagnostics = StepDiagnostics(model, cfg.train.diagnostics_interval,
                                  autocast=lambda: autocast_context(device, cfg.train.precision))
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    model.train()
    clock = CompileClock(device, enabled=compiler is not None)
    for step in range(run.start, spec.steps):
        clock.start()
        for group in optimizer.param_groups:  # lr_mult: μP's per-group LR scaling (build_optimizer)
            group["lr"] = float(run.lrs[step]) * group.get("lr_mult", 1.0)
        inputs, targets = run.batch(step)
        diagnostics.begin(step, inputs, targets)  # stability diagnostics; a no-op off diagnostic steps
        fault_point("step")

        def forward_backward() -> torch.Tensor:
            with autocast_context(device, cfg.train.precision):
                if compiler:  # one compiled block for every layer, then the head
                    loss = compiler.head(model, model.trunk(inputs, compiler.run_block), targets)
                else:
                    loss = model(inputs, targets)
            loss.backward()
            return loss

        if compiler:
            loss = compiler.step(forward_backward, lambda: optimizer.zero_grad(set_to_none=True))
            if compiler.eager_reason:
                run.runtime["compile_fallback"] = compiler.eager_reason
        else:
            loss = forward_backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        diagnostics.before_update()
        optimizer.step()
        diagnostics.after_update()
        optimizer.zero_grad(set_to_none=True)
        clock.stop()
        crash_point("step")
        pending.append(torch.stack((loss.detach().float(), grad_norm.detach().float())))

        done = step + 1
        if not run.due(done):
            continue
        losses, norms = fetch_to_host(pending).T
        pending.clear()
        if run.record(done, losses, norms, diagnostics.row):
            return "diverged"
        if progress:
            progress(done, spec.steps, {"loss": float(losses[-1]), "tokens_per_s": run.tokens_per_s})
        run.after_record(done, lambda: model, lambda: (model.state_dict(), optimizer.state_dict()))
    return run.finish(model, compile_s=clock.seconds)


def _model_getter(model: ModelSource) -> Callable[[], GPT]:
    """A function returning the model, made at most once."""
    if isinstance(model, torch.nn.Module):
        return lambda: model
    made: list[GPT] = []
    return lambda: made[0] if made else (made.append(model()) or made[0])


def load_checkpoint(store: RunStore, run_id: str, device: torch.device) -> dict | None:
    """The run's last checkpoint, or None. An unreadable one is quarantined and reported, and the
    run starts over, since its tables cannot be trusted to match any step either."""
    if not store.exists(run_id, "checkpoint.pt"):
        return None
    try:
        with store.fs.open(store.run_path(run_id, "checkpoint.pt"), "rb") as f:
            ckpt = torch.load(f, map_location=device, weights_only=False)
        if not {"model", "optimizer", "step"} <= set(ckpt):
            raise ValueError("missing model/optimizer/step entries")
        return ckpt
    except Exception as err:  # torch raises many types for a truncated or foreign file
        where = store.quarantine(run_id, "checkpoint.pt", f"unreadable checkpoint: {type(err).__name__}: {err}")
        warnings.warn(f"run {run_id}: checkpoint unreadable ({type(err).__name__}); moved to {where}, "
                      "training this run from the start")
        for name in ("curve.parquet", "evals.parquet"):
            store.remove(run_id, name)
        return None


def load_branch_point(store: RunStore, parent: dict, device: torch.device) -> dict:
    """The stable run's checkpoint at the step a WSD branch leaves it."""
    name = f"branch-{parent['step']}.pt"
    if not store.exists(parent["run_id"], name):
        state = store.status(parent["run_id"])["state"]
        raise RuntimeError(f"stable run {parent['run_id']} ({state}) has no checkpoint at step {parent['step']} "
                           "to branch from; it must finish first (a diverged stable run ends its branches)")
    with store.fs.open(store.run_path(parent["run_id"], name), "rb") as f:
        return torch.load(f, map_location=device, weights_only=False)


def divergence(losses: np.ndarray, initial_loss: float, factor: float) -> str | None:
    """Why a run should stop, or None. A window mean far above the starting loss means the
    optimizer has left the basin (Wortsman et al. 2023 treat such runs as diverged)."""
    if not np.all(np.isfinite(losses)):
        return "non-finite loss"
    if losses.mean() > factor * initial_loss:
        return f"loss {losses.mean():.3f} above {factor} x initial loss {initial_loss:.3f}"
    return None
