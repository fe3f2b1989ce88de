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

Launches: the update is torch's own fused AdamW kernel (`torch._fused_adamw_`, what
`torch.optim.AdamW(fused=True)` runs for a solo run on CUDA), called once per member and parameter
group over that member's slices of every parameter (a multi-tensor launch), with the member's
hyperparameters as host scalars: K x groups launches per step instead of ~8 elementwise kernels
per parameter, and no per-step host-to-device copy. Clipping is one multi-tensor norm over all
slices plus one multi-tensor scale per member. Nothing here reads a device value on the host.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim.adamw import adamw as adamw_functional

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
        """Each member's step count on the host (for checkpoints); `_device_steps` mirrors it for the kernel."""
        device = next(model.parameters()).device
        self._device_steps = torch.zeros(model.members, dtype=torch.float32, device=device)
        self._clip_limits: Tensor | None = None  # [K] on the device, built at the first clip
        self._slices()

    def _slices(self) -> None:
        """Per group and member, that member's slices of the parameters and Adam moments (views,
        rebuilt when the pack's parameters are replaced)."""
        self._member_slices = []
        for group, params in self.groups:
            tables = [[p.detach() for p in params], [self.exp_avg[n] for n in group.names],
                      [self.exp_avg_sq[n] for n in group.names]]
            self._member_slices.append([tuple([t[k] for t in table] for table in tables)
                                        for k in range(self.model.members)])

    def _grad_slices(self) -> list[list[list[Tensor]]]:
        """[group][member] -> that member's gradient slices, in the order of `_member_slices`."""
        out = []
        for _, params in self.groups:
            grads = [p.grad for p in params]
            if any(g is None for g in grads):
                raise RuntimeError("PackedAdamW: a parameter of the pack has no gradient; call backward first")
            out.append([[g[k] for g in grads] for k in range(self.model.members)])
        return out

    @torch.no_grad()
    def clip_grad_norms(self) -> Tensor:
        """Clip each member's gradient to its own optim.grad_clip (<= 0: no clipping) and return the
        per-member norms before clipping [K], as torch.nn.utils.clip_grad_norm_ does for one run."""
        members = self.model.members
        slices = [[g[k] for g in (p.grad for p in self.model.parameters() if p.grad is not None)]
                  for k in range(members)]
        flat = [g for member in slices for g in member]
        norms = torch.stack(torch._foreach_norm(flat)).view(members, -1).float()
        norms = torch.linalg.vector_norm(norms, dim=1)
        if self._clip_limits is None or self._clip_limits.device != norms.device:
            self._clip_limits = torch.tensor([o.grad_clip if o.grad_clip > 0 else math.inf for o in self.optims],
                                             device=norms.device)
        coef = (self._clip_limits / (norms + 1e-6)).clamp(max=1.0)
        for k, optim in enumerate(self.optims):
            if optim.grad_clip > 0:  # a member without clipping would be scaled by exactly 1
                torch._foreach_mul_(slices[k], coef[k])
        return norms

    @torch.no_grad()
    def step(self, lrs: Sequence[float] | Tensor) -> None:
        """One AdamW update; lrs [K] (host values) are the members' schedule learning rates at this step."""
        lrs = lrs.tolist() if isinstance(lrs, Tensor) else [float(lr) for lr in lrs]
        self.steps += 1
        self._device_steps += 1
        grads = self._grad_slices()
        fused = self._device_steps.device.type == "cuda"
        for (group, _), member_slices, member_grads in zip(self.groups, self._member_slices, grads):
            for k, ((params, exp_avgs, exp_avg_sqs), grad, optim) in enumerate(zip(member_slices, member_grads,
                                                                                  self.optims)):
                hyper = dict(lr=lrs[k] * group.lr_mult, beta1=optim.beta1, beta2=optim.beta2, eps=optim.eps,
                             weight_decay=optim.weight_decay if group.decay else 0.0, amsgrad=False, maximize=False)
                if fused:  # the kernel torch.optim.AdamW(fused=True) runs for a solo run; it reads the step count
                    torch._fused_adamw_(params, grad, exp_avgs, exp_avg_sqs, [], [self._device_steps[k]] * len(params),
                                        **hyper)
                else:  # CPU (tests, never a speed path): the solo CPU AdamW's code path, for identical numbers
                    steps = [torch.tensor(float(self.steps[k]) - 1) for _ in params]  # it counts them up itself
                    adamw_functional(params, grad, exp_avgs, exp_avg_sqs, [], steps, foreach=False,
                                            fused=False, **hyper)

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
        self._device_steps = self._device_steps.index_select(0, index)
        self.optims = [self.optims[i] for i in members]
        self._clip_limits = None
        params = dict(self.model.named_parameters())
        self.groups = [(group, [params[n] for n in group.names]) for group, _ in self.groups]
        self._slices()

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
        self._device_steps[k] = float(self.steps[k])  # once, at load: not on the step path
        for index, name in enumerate(names):
            if index in saved:
                self.exp_avg[name][k].copy_(saved[index]["exp_avg"])
                self.exp_avg_sq[name][k].copy_(saved[index]["exp_avg_sq"])

