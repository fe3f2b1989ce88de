"""Timed training steps, side by side in one process: the pack trainer's step, measured tokens/s
and peak memory. Shared by `scaling-cli doctor`'s pack probe and benchmarks/bench_pack_throughput.py.

    step = pack_step(cfg, members=8, batch=32, compile_model=True, device=cuda)
    result = measure(lambda: step, tokens_per_step=8 * 32 * cfg.seq_len, warmup=5, steps=15, device=cuda)
    result.tokens_per_s, result.peak_bytes, result.warmup_s     # peak: CUDA only

MFU needs the GPU's dense bf16 peak (`peak_flops`, vendor datasheets; None for a GPU not listed).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from contextlib import nullcontext
from typing import Callable

import torch

from scaling_cli.config import ModelConfig, OptimConfig
from scaling_cli.model.gpt import GPT
from scaling_cli.model.packed_gpt import PackedGPT, head_losses
from scaling_cli.train import compiled
from scaling_cli.train.compiled import StepCompiler
from scaling_cli.train.packed_adamw import PackedAdamW
from scaling_cli.train.trainer import autocast_context

# Dense bf16 tensor-core peaks (vendor datasheets, without sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


@dataclasses.dataclass
class Result:
    tokens_per_s: float | None = None  # None: the configuration ran out of memory
    peak_bytes: int | None = None
    warmup_s: float | None = None


def pack_step(cfg: ModelConfig, members: int, batch: int, compile_model: bool,
              device: torch.device, compile_mode: str = "default") -> Callable[[], None]:
    """pack_trainer.train_pack's step, without the logging, diagnostics and data loading."""
    states = []
    for seed in range(members):
        torch.manual_seed(seed)
        # Initialised on the device rather than the CPU as train_pack does: the values are the
        # same kind of N(0, init_std) either way, and a CPU init of 16 x 110M parameters would
        # take longer than the timing itself.
        with torch.device(device):
            states.append(GPT(cfg).state_dict())
    with torch.device(device):
        packed = PackedGPT([cfg] * members)
    packed.load_member_states(states)
    del states
    optimizer = PackedAdamW(packed, [OptimConfig()] * members)
    compiler = StepCompiler(compile_mode, pack=True) if compile_model else None
    lrs = [OptimConfig().lr] * members
    x = torch.randint(0, cfg.vocab_size, (members, batch, cfg.seq_len), device=device)
    y = torch.randint(0, cfg.vocab_size, (members, batch, cfg.seq_len), device=device)
    packed.train()

    def step() -> None:
        with autocast_context(device, "auto"), (compiler.forward(packed) if compiler else nullcontext()):
            if compiler:
                losses = compiler.head(packed, packed.trunk(x, compiler.run_block), y)
            else:
                losses = head_losses(packed, packed.trunk(x), y)
        losses.sum().backward()
        optimizer.clip_grad_norms()
        optimizer.step(lrs)
        optimizer.zero_grad()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def release(device: torch.device) -> None:
    """Give back what the previous configuration held, so its peak never leaks into the next row."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(build: Callable[[], Callable[[], None]], tokens_per_step: int, warmup: int, steps: int,
            device: torch.device) -> Result:
    """Build a step, run `warmup` untimed steps (compilation happens there), then time `steps`;
    the peak is torch.cuda.max_memory_allocated over the steps (after the build). Out of memory
    gives an empty Result."""
    # Each configuration compiles cold in this process, so its compile time is its own (in a sweep,
    # packs of one shape share a graph: the pack axis is dynamic, see scaling_cli.train.compiled; the
    # on-disk compile cache, $SCALING_CLI_CACHE/compile, may still serve a repeat of this benchmark).
    compiled.reset()
    release(device)
    result = Result()
    try:
        step = build()
        sync(device)
        # After the build: constructing a pack briefly holds its members' GPT state dicts and the
        # stacked copy, a transient the training step never sees again.
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(warmup):
            step()
        sync(device)
        result.warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        result.tokens_per_s = tokens_per_step * steps / (time.perf_counter() - start)
        if device.type == "cuda":
            result.peak_bytes = torch.cuda.max_memory_allocated()
    except torch.cuda.OutOfMemoryError:
        result = Result()
    # Outside the except block: the traceback (and the tensors its frames hold) is gone by now.
    step = None
    release(device)
    return result
