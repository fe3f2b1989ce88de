"""Training-stability diagnostics logged to a run's curve every `train.diagnostics_interval` steps.

Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training instabilities")
trace the two instabilities they reproduce at small scale to quantities worth watching:

- attn_logit_max: the largest attention logit q.k x scale over layers, heads and causal positions
  of the step's batch (attention-logit growth -> attention-entropy collapse; qk-layernorm bounds it).
  SDPA never exposes the scores, so they are recomputed in a separate no-grad pass.
- log_z_mean: mean over tokens of log Z = logsumexp of the output logits (output-logit divergence;
  z-loss, 1e-4 log^2 Z, keeps it near 0). From the fused loss's `return_lse`, logits never held.
- update_ratio: mean over weight matrices of ||W_after - W_before||_F / ||W_before||_F for the step
  (their parameter-update RMS analysis; too-large relative updates precede divergence). Matrices
  with zero norm before the step (e.g. a zero-initialised layer) are left out.

The gradient norm is logged on every step by the trainer already. On other steps nothing here
runs beyond an integer test: `StepDiagnostics` does its work only on steps with
step % interval == 0, and keeps results on the device until the trainer's next log flush.
Curve row s (= step + 1) holds the diagnostics of the batch whose loss it logs.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
from torch import Tensor, nn

from scaling_cli.model.loss import lm_loss

COLUMNS = ("attn_logit_max", "log_z_mean", "update_ratio")

# Attention scores are materialised for this many (row, head, query, key) entries at most, so the
# diagnostic pass of a long-context GPU run stays a few hundred MB (fp32).
MAX_SCORE_ELEMENTS = 1 << 26


def is_diagnostic_step(step: int, interval: int) -> bool:
    """Steps 0, interval, 2 x interval, ... (never when interval is 0)."""
    return interval > 0 and step % interval == 0


@torch.no_grad()
def forward_diagnostics(model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """attn_logit_max and log_z_mean of a GPT on one batch (0-dim fp32 tensors, on the device).
    One forward pass without gradients through the model's own modules."""
    x = model.embed(inputs)
    cos, sin = model.rope_cos, model.rope_sin
    peak = torch.full((), -math.inf, device=x.device)
    for block in model.blocks:
        attn = block.attn
        q, k, _ = attn.project(block.attn_norm(x), cos, sin)
        peak = torch.maximum(peak, max_attention_logit(q, k, attn.scale))
        x = block(x, cos, sin)
    _, lse = lm_loss(model.final_norm(x), model.lm_head.weight, targets, model.cfg, reduction="none",
                     return_lse=True)
    return {"attn_logit_max": peak, "log_z_mean": lse.float().mean()}


def max_attention_logit(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """max over batch, heads and causal (query >= key) pairs of q.k x scale; q, k [B, H, T, hd].
    scale None means 1/sqrt(hd), SDPA's default. Batch rows are processed in chunks."""
    batch, heads, seq, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    rows = max(1, MAX_SCORE_ELEMENTS // max(1, heads * seq * seq))
    peak = torch.full((), -math.inf, device=q.device)
    for start in range(0, batch, rows):
        scores = q[start:start + rows].float() @ k[start:start + rows].float().transpose(-2, -1)
        peak = torch.maximum(peak, scores.masked_fill(~causal, -math.inf).amax() * scale)
    return peak


def snapshot_matrices(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(parameter, copy of its current value) for every weight matrix (a tied one once)."""
    return [(p, p.detach().clone()) for p in model.parameters() if p.dim() >= 2]


def update_ratio(snapshot: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Mean over matrices of ||W_now - W_then|| / ||W_then||, skipping zero matrices (0-dim tensor)."""
    before = torch.stack([old.float().norm() for _, old in snapshot])
    delta = torch.stack([(p.detach().float() - old.float()).norm() for p, old in snapshot])
    ratios = torch.where(before > 0, delta / before.clamp(min=torch.finfo(torch.float32).tiny), math.nan)
    return ratios.nanmean()


def to_host(pending: list[dict[int, dict[str, Tensor | float]]]) -> None:
    """Replace every device value still pending by its float, in one device-to-host copy (a log
    flush reads all of them; one copy each would sync once per value)."""
    slots = [(values, name) for table in pending for values in table.values()
             for name, value in values.items() if isinstance(value, Tensor)]
    if not slots:
        return
    fetched = torch.stack([values[name].detach().float().reshape(()) for values, name in slots]).cpu().tolist()
    for (values, name), value in zip(slots, fetched):
        values[name] = value


class StepDiagnostics:
    """What the trainer calls around each optimizer step; a no-op except on diagnostic steps.

        diag = StepDiagnostics(model, interval, autocast=lambda: autocast_context(...))
        diag.begin(step, inputs, targets)             # before the training forward
        ... backward, clipping ...
        diag.before_update(); optimizer.step(); diag.after_update()
        row.update(diag.row(step + 1))                 # at the log flush: floats, NaN if not diagnosed
    """

    def __init__(self, model: nn.Module, interval: int,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.model, self.interval, self.autocast = model, interval, autocast
        self._step: int | None = None
        self._snapshot: list[tuple[Tensor, Tensor]] | None = None
        self._pending: dict[int, dict[str, Tensor]] = {}

    def begin(self, step: int, inputs: Tensor, targets: Tensor) -> None:
        self._step = step if is_diagnostic_step(step, self.interval) else None
        if self._step is not None:
            with self.autocast():
                self._pending[step + 1] = forward_diagnostics(self.model, inputs, targets)

    def before_update(self) -> None:
        if self._step is not None:
            self._snapshot = snapshot_matrices(self.model)

    def after_update(self) -> None:
        if self._step is not None and self._snapshot is not None:
            self._pending[self._step + 1]["update_ratio"] = update_ratio(self._snapshot)
            self._snapshot = None

    def row(self, row_step: int) -> dict[str, float]:
        """The diagnostics of curve row `row_step` as floats (NaN on steps not diagnosed)."""
        to_host([self._pending])
        values = self._pending.pop(row_step, {})
        return {name: float(values[name]) if name in values else math.nan for name in COLUMNS}


class PackDiagnostics:
    """`StepDiagnostics` for the members of a pack (scaling_cli.train.pack_trainer): the same three
    numbers per member, each from that member alone. The forward pass runs on a standalone copy of
    the member (`PackedGPT.member`), and the update ratio compares slices of the stacked matrices."""

    def __init__(self, intervals: list[int], autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.intervals, self.autocast = list(intervals), autocast
        self._due: list[tuple[int, int]] = []  # (member, step) diagnosed at this step
        self._snapshot: list[tuple[Tensor, Tensor]] | None = None
        self._pending: list[dict[int, dict[str, Tensor]]] = [{} for _ in intervals]

    def begin(self, model: nn.Module, steps: list[int], inputs: Tensor, targets: Tensor) -> None:
        """model: the PackedGPT; steps: each member's step; inputs/targets [K, batch, seq]."""
        self._due = [(k, s) for k, s in enumerate(steps) if is_diagnostic_step(s, self.intervals[k])]
        for k, step in self._due:
            with self.autocast():
                self._pending[k][step + 1] = forward_diagnostics(model.member(k), inputs[k], targets[k])

    def before_update(self, model: nn.Module) -> None:
        if self._due:
            self._snapshot = [(p, p.detach().clone()) for p in model.parameters() if p.dim() >= 3]

    def after_update(self) -> None:
        if self._snapshot is not None:
            for k, step in self._due:
                self._pending[k][step + 1]["update_ratio"] = update_ratio([(p[k], old[k]) for p, old in self._snapshot])
        self._snapshot = None

    def row(self, k: int, row_step: int) -> dict[str, float]:
        to_host(self._pending)
        values = self._pending[k].pop(row_step, {})
        return {name: float(values[name]) if name in values else math.nan for name in COLUMNS}

    def keep(self, members: list[int]) -> None:
        self.intervals = [self.intervals[i] for i in members]
        self._pending = [self._pending[i] for i in members]
