"""Group a sweep's runs into packs: runs trained together as one batched model on one GPU.

A 10M-parameter proxy alone keeps an H100 mostly idle, and a sweep is mostly such runs sharing a
shape (an lr x batch x seed grid at one size is dozens of identical architectures). Runs can share
a pack when everything that fixes tensor shapes or the training step's structure is equal
(`pack_key`): the model's shape fields, batch size, data, device, precision and compile settings.
They may differ in lr, schedule, warmup, weight decay, betas, clipping, seed, init scale, z-loss,
token budget and eval settings (scaling_cli.train.pack_trainer trains them).

How many runs per pack: `launcher.pack_size`, or with 0 the most whose training state fits in the
free GPU memory (`members_that_fit`, at most `launcher.pack_max`; per member a measured peak of that
shape when one is recorded, else the calibrated estimate: scaling_cli.memory); 1 on a CPU. Packs go
largest-first (by compute per run, then per pack), so a sweep mixing shapes does not end waiting
on its biggest model.
"""

from __future__ import annotations

import math
from collections import defaultdict

from scaling_cli.config import LauncherConfig
from scaling_cli.memory import member_bytes
from scaling_cli.model.packed_gpt import shape_fields
from scaling_cli.plan import RunSpec
from scaling_cli.worker import data_key

# Train settings that must be equal inside a pack (one process, one step function for all).
_SHARED_TRAIN = ("batch_size", "device", "precision", "compile", "compile_mode", "threads")

# Memory a pack needs besides its members: allocator slack and fragmentation, the fused loss's
# bounded workspace (<= 64 MiB, kernels/lce_triton.py), autotuning's buffers, compiled graphs' buffers.
PACK_OVERHEAD_BYTES = 1 << 30


def pack_key(spec: RunSpec) -> tuple:
    """Runs with equal keys can train in one pack."""
    train = spec.config["train"]
    return (shape_fields(spec.config["model"]), data_key(spec), tuple(train.get(k) for k in _SHARED_TRAIN))


def members_that_fit(spec: RunSpec, free_bytes: int, launcher: LauncherConfig) -> int:
    """The automatic pack size for runs shaped like `spec` given `free_bytes` of GPU memory."""
    budget = launcher.pack_memory_fraction * free_bytes - PACK_OVERHEAD_BYTES
    return max(1, min(launcher.pack_max, int(budget // member_bytes(spec))))


def free_gpu_bytes() -> int | None:
    """Free memory of the current CUDA device, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def pack_size_for(spec: RunSpec, launcher: LauncherConfig, free_bytes: int | None) -> int:
    """launcher.pack_size when set; else from free GPU memory on CUDA runs, 1 on CPU runs."""
    if launcher.pack_size:
        return launcher.pack_size
    device = spec.config["train"]["device"]
    if free_bytes is None or device == "cpu":
        return 1
    return members_that_fit(spec, free_bytes, launcher)


def make_packs(specs: list[RunSpec], launcher: LauncherConfig, free_bytes: int | None = None) -> list[list[RunSpec]]:
    """Partition `specs` into packs, largest runs first. Within a group of equal `pack_key`, runs
    of similar length share a pack (a pack shrinks as members finish), and the group is split
    into equal-sized packs rather than full ones plus a small remainder."""
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for spec in specs:
        groups[pack_key(spec)].append(spec)
    packs = []
    for members in groups.values():
        members.sort(key=lambda s: (s.steps, s.flops_to_train), reverse=True)
        size = pack_size_for(members[0], launcher, free_bytes)
        count = math.ceil(len(members) / size)
        bounds = [round(i * len(members) / count) for i in range(count + 1)]
        packs += [members[a:b] for a, b in zip(bounds, bounds[1:])]
    packs.sort(key=lambda p: (p[0].flops_per_token, sum(s.flops_to_train for s in p)), reverse=True)
    return packs


def expected_compiles(specs: list[RunSpec], launcher: LauncherConfig) -> dict | None:
    """What torch.compile will build for the runs with train.compile=true (None if there are none):
    per architecture one graph per compiled region (scaling_cli.train.compiled.REGIONS: the block that
    every layer shares, and the output head when the loss is an opaque op), once for packs (K >= 2,
    one dynamic graph for every pack size) and once for a run training alone (K = 1: a run that is
    never packed, or the last member of a pack whose others finished first). An upper bound: the
    pack sizes chosen at launch come from free GPU memory, taken here as launcher.pack_max."""
    from scaling_cli.train.compiled import REGIONS, loss_in_graph

    runs = [s for s in specs if s.config["train"].get("compile")]
    if not runs:
        return None
    on_cpu = runs[0].config["train"]["device"] == "cpu"
    size = launcher.pack_size or (1 if on_cpu else launcher.pack_max)
    variants: dict[tuple, set[str]] = defaultdict(set)
    for pack in make_packs(runs, LauncherConfig(pack_size=size)):
        kinds = variants[pack_key(pack[0])]
        longest = max(s.steps for s in pack)
        if len(pack) > 1:
            kinds.add("pack")
        if len(pack) == 1 or sum(s.steps == longest for s in pack) == 1:
            kinds.add("alone")
    regions = len(REGIONS) if loss_in_graph() else 1
    return {"architectures": len(variants), "regions": regions,
            "variants": sum(len(kinds) for kinds in variants.values()),
            "graphs": regions * sum(len(kinds) for kinds in variants.values())}
