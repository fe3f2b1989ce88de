"""AdamW and gradient clipping for a pack: one update for K runs, each with its own hyperparameters.

Every hyperparameter a run may set (learning rate and schedule, weight decay, betas, eps, clipping
threshold) is a [K] tensor broadcast over the leading pack axis, and each member keeps its own step
count (members can join a pack at different steps, e.g. resumed runs or WSD branches). The update
is torch.optim.AdamW's, op for op (decoupled decay lr x wd, lerp'd first moment, bias corrections),
and the parameter groups are exactly `build_optimizer`'s (decay on matrices except the embedding,
μP's per-group LR multipliers), so a member follows the trajectory it would follow alone.

A member's optimizer state converts to and from torch AdamW's state dict (`member_state_dict`,
`load_member_state_dict`): checkpoints of packed and solo runs are interchangeable, so a run can
start in a pack and resume alone, or the other way round.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scaling_cli.config import ModelConfig, OptimConfig
from scaling_cli.model.gpt import GPT
from scaling_cli.model.packed_gpt import PackedGPT


@dataclass
class _Group:
    names: list[str]
    decay: bool
    lr_mult: float


def solo_optimizer_template(cfg: ModelConfig, optim: OptimConfig) -> tuple[list[_Group], dict]:
    """The parameter groups `build_optimizer` makes for one GPT of this shape (as names), and the
    empty state dict of that AdamW: the layout every member's state dict must have."""
    from scaling_cli.train.trainer import build_optimizer

    with torch.device("meta"):
        model = GPT(cfg)
    optimizer = build_optimizer(model, optim, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [_Group([names[id(p)] for p in g["params"]], _decays(g, model), g["lr_mult"])
              for g in optimizer.param_groups]
    return groups, optimizer.state_dict()


def _decays(group: dict, model: GPT) -> bool:
    """Whether `build_optimizer` made this a weight-decay group (by what it holds, not its
    weight_decay value: the template member may have wd=0 while other members decay)."""
    return all(p.dim() >= 2 and p is not model.embed.weight for p in group["params"])


class PackedAdamW:
    """AdamW over a PackedGPT with per-member hyperparameters and step counts."""

    def __init__(self, model: PackedGPT, optims: list[OptimConfig]) -> None:
        if len(optims) != model.members:
            raise ValueError(f"{len(optims)} optimizer configs for a pack of {model.members}")
        self.model = model
        self.optims = list(optims)
        groups, self._template = solo_optimizer_template(model.cfgs[0], optims[0])
        params = dict(model.named_parameters())
        self.groups = [(group, [params[n] for n in group.names]) for group in groups]
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.steps = torch.zeros(model.members, dtype=torch.float64)
        self._clip_limits: Tensor | None = None  # [K] on the device, built at the first clip

    def _per_member(self, field: str) -> Tensor:
        return torch.tensor([getattr(o, field) for o in self.optims], dtype=torch.float64)

    @torch.no_grad()
    def clip_grad_norms(self) -> Tensor:
        """Clip each member's gradient to its own optim.grad_clip (<= 0: no clipping) and return the
        per-member norms before clipping [K], as torch.nn.utils.clip_grad_norm_ does for one run."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norms = torch.stack([g.flatten(1).float().norm(dim=1) for g in grads]).norm(dim=0)
        if self._clip_limits is None or self._clip_limits.device != norms.device:
            self._clip_limits = torch.tensor([o.grad_clip if o.grad_clip > 0 else math.inf for o in self.optims],
                                             device=norms.device)
        coef = (self._clip_limits / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(_bcast(coef.to(g.dtype), g))
        return norms

    @torch.no_grad()
    def step(self, lrs: Tensor) -> None:
        """One AdamW update; lrs [K] (CPU) are the members' schedule learning rates at this step."""
        self.steps += 1
        beta1, beta2, eps, wd = (self._per_member(f) for f in ("beta1", "beta2", "eps", "weight_decay"))
        bias1 = 1 - beta1 ** self.steps
        bias2_sqrt = (1 - beta2 ** self.steps).sqrt()
        # Every per-member factor of every group, computed in float64 on the host and moved to the
        # device in one copy: [group, factor, K].
        table, lrs = [], lrs.double().cpu()
        for group, _ in self.groups:
            lr = lrs * group.lr_mult
            decay = 1 - lr * wd if group.decay else torch.ones_like(lr)
            table.append(torch.stack([decay, 1 - beta1, beta2, 1 - beta2, -lr / bias1, bias2_sqrt, eps]))
        device = next(self.model.parameters()).device
        table = torch.stack(table).float()
        if device.type == "cuda":  # pinned, so the copy is truly asynchronous
            table = table.pin_memory()
        table = table.to(device, non_blocking=True)
        for (group, params), factors in zip(self.groups, table):
            for name, param in zip(group.names, params):
                if param.grad is None:
                    continue
                decay, one_minus_b1, beta2_, one_minus_b2, step_size, b2_sqrt, eps_ = (
                    _bcast(f, param) for f in factors)
                grad, m, v = param.grad, self.exp_avg[name], self.exp_avg_sq[name]
                if group.decay:
                    param.mul_(decay)
                m.lerp_(grad, one_minus_b1)
                v.mul_(beta2_).addcmul_(grad, grad * one_minus_b2)
                denom = (v.sqrt() / b2_sqrt).add_(eps_)
                param.addcdiv_(m * step_size, denom)

    def zero_grad(self) -> None:
        for param in self.model.parameters():
            param.grad = None

    def keep(self, members: list[int]) -> None:
        """Follow `PackedGPT.keep` (call right after it): drop the state of members that left."""
        index = torch.tensor(members, device=self.model.rope_cos.device)
        for table in (self.exp_avg, self.exp_avg_sq):
            for name in table:
                table[name] = table[name].index_select(0, index)
        self.steps = self.steps[members]
        self.optims = [self.optims[i] for i in members]
        self._clip_limits = None
        params = dict(self.model.named_parameters())
        self.groups = [(group, [params[n] for n in group.names]) for group, _ in self.groups]

    def member_state_dict(self, k: int, lr: float) -> dict:
        """Member k's state as torch.optim.AdamW.state_dict() of the run trained alone."""
        state = copy.deepcopy(self._template)
        optim = self.optims[k]
        index = 0
        for (group, _), saved in zip(self.groups, state["param_groups"]):
            saved.update(lr=lr * group.lr_mult, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                         weight_decay=optim.weight_decay if group.decay else 0.0)
            for name in group.names:
                if self.steps[k] > 0:
                    state["state"][index] = {"step": torch.tensor(float(self.steps[k])),
                                             "exp_avg": self.exp_avg[name][k].clone(),
                                             "exp_avg_sq": self.exp_avg_sq[name][k].clone()}
                index += 1
        return state

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict) -> None:
        """Load a solo run's AdamW state dict (or `member_state_dict`'s) into member k."""
        names = [name for group, _ in self.groups for name in group.names]
        saved = state["state"]
        steps = {float(s["step"]) for s in saved.values()}
        if len(steps) > 1:
            raise ValueError(f"optimizer state has parameters at different steps {sorted(steps)}")
        self.steps[k] = steps.pop() if steps else 0.0
        for index, name in enumerate(names):
            if index in saved:
                self.exp_avg[name][k].copy_(saved[index]["exp_avg"])
                self.exp_avg_sq[name][k].copy_(saved[index]["exp_avg_sq"])


def _bcast(values: Tensor, like: Tensor) -> Tensor:
    """[K] -> [K, 1, ..., 1] against a [K, ...] tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))
