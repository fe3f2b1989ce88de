"""Pack throughput: K same-shape proxies trained as one batched model vs one run at a time.

    python benchmarks/bench_pack_throughput.py                        # 5 shapes x K = 1 (solo), 2, 4, 8, 16
    python benchmarks/bench_pack_throughput.py --compile --packs 4,16 --shapes 256x4,768x12
    python benchmarks/bench_pack_throughput.py --sweep-wall-time     # + the default GPU sweep, cold start
    python benchmarks/bench_pack_throughput.py --shapes 128x4 --packs 16 --compile --profile
    python benchmarks/bench_pack_throughput.py --shapes 128x4,256x4,384x6 --packs 8,16 --compile \
        --compile-mode reduce-overhead                                # CUDA graphs
    OMP_NUM_THREADS=1 python benchmarks/bench_pack_throughput.py --device cpu --shapes 64x2 \\
        --vocab 512 --seq-len 64 --batch 4 --packs 2,4 --steps 3              # smoke run

For each shape (d_model x n_layer, n_head = d_model / 64, GELU MLP) times, in one process, the
plain-PyTorch baseline a user would otherwise run (scaling_cli/model/plain_gpt.py: a nanoGPT-style model,
torch.compile, bf16, fused AdamW, at --plain-batch sequences, 64 by default), the solo training step
exactly as benchmarks/bench_train_step.py does it (GPT, fused AdamW, clipping, bf16 autocast on
CUDA) and the pack trainer's step for packs of K members (PackedGPT built from K seeded GPTs,
PackedAdamW, per-member losses and clipping; scaling_cli/train/pack_trainer.py).
Reports tokens/s summed over the pack's members, the speed-up over the plain baseline and over the
solo step, MFU (tokens/s x
training FLOPs per token from scaling_cli.model.counting / the GPU's dense bf16 peak), the peak
GPU memory of the step against the planner's estimate (K x scaling_cli.packs.member_bytes, which
is what sizes automatic packs; the fixed PACK_OVERHEAD_BYTES is not included), and with --compile
the wall time of the warmup steps, where compilation happens. A configuration that runs out of
GPU memory prints OOM and the rest go on. --sweep-wall-time also times a whole `scaling-cli sweep
sweep=gpu_default` from a cold process, with the share of its packs' first steps (compilation);
--profile prints where a pack's step time goes. Not a test.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from functools import partial

import torch

from scaling_cli.config import ModelConfig
from scaling_cli.memory import training_bytes
from scaling_cli.model.counting import flops_per_token
from scaling_cli.model.plain_gpt import plain_step
from scaling_cli.train.throughput import Result, measure, pack_step, peak_flops, sync

from bench_train_step import solo_step  # benchmarks/ is on sys.path when run as a script

DEFAULT_SHAPES = "128x4,256x4,384x6,512x8,768x12"
GIB = 1 << 30


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        d_model, n_layer = (int(x) for x in item.lower().split("x"))
        shapes.append((d_model, n_layer))
    return shapes


def model_config(d_model: int, n_layer: int, vocab: int, seq_len: int) -> ModelConfig:
    # Head width 64 as in the planner's grids; tiny smoke shapes still get one head.
    return ModelConfig(d_model=d_model, n_layer=n_layer, n_head=max(1, d_model // 64), seq_len=seq_len,
                       vocab_size=vocab)


def estimated_bytes(cfg: ModelConfig, batch: int, members: int) -> int:
    """The planner's memory estimate for a pack (what sizes automatic packs)."""
    return members * training_bytes(cfg, batch)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "CPU"
        name = f"CPU ({name}, {torch.get_num_threads()} threads)"
    return f"{name}; torch {torch.__version__}; CUDA {torch.version.cuda or 'n/a'}"


def fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))


def benchmark(args: argparse.Namespace, device: torch.device) -> None:
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    header = ["shape", "K", "tok/s", "vs plain", "vs solo", "MFU", "peak GiB", "est GiB", "compile s"]
    widths = [12, 14, 11, 8, 8, 6, 9, 8, 9]
    print(fmt_row(header, widths))
    print(fmt_row(["-" * w for w in widths], widths))
    packs = [int(k) for k in args.packs.split(",") if k]
    for d_model, n_layer in parse_shapes(args.shapes):
        cfg = model_config(d_model, n_layer, args.vocab, args.seq_len)
        shape, tokens = f"d{d_model} L{n_layer}", args.batch * cfg.seq_len
        plain = Result()
        if args.plain_batch:
            plain = measure(partial(plain_step, d_model, n_layer, args.vocab, args.seq_len, args.plain_batch, device,
                                    args.compile), args.plain_batch * cfg.seq_len, args.warmup, args.steps, device)
            print(fmt_row(row_cells(shape, f"plain B={args.plain_batch}", plain, plain, plain, cfg, None, peak,
                                    args.compile), widths), flush=True)
        solo = measure(partial(solo_step, cfg, args.batch, args.compile, device, args.compile_mode), tokens,
                       args.warmup, args.steps, device)
        print(fmt_row(row_cells(shape, "1 (solo)", solo, plain, solo, cfg, estimated_bytes(cfg, args.batch, 1), peak,
                                args.compile), widths), flush=True)
        for k in packs:
            res = measure(partial(pack_step, cfg, k, args.batch, args.compile, device, args.compile_mode), k * tokens,
                          args.warmup, args.steps, device)
            print(fmt_row(row_cells(shape, str(k), res, plain, solo, cfg, estimated_bytes(cfg, args.batch, k), peak,
                                    args.compile), widths), flush=True)


def row_cells(shape: str, label: str, res: Result, plain: Result, solo: Result, cfg: ModelConfig,
              est_bytes: int | None, peak: float | None, compiled_step: bool) -> list[str]:
    est = f"{est_bytes / GIB:.2f}" if est_bytes is not None else "-"  # the planner does not size the baseline
    if res.tokens_per_s is None:
        return [shape, label, "OOM", "-", "-", "-", "-", est, "-"]
    ratio = lambda base: f"{res.tokens_per_s / base.tokens_per_s:.2f}x" if base.tokens_per_s else "n/a"  # noqa: E731
    mfu = f"{100 * res.tokens_per_s * flops_per_token(cfg) / peak:.1f}%" if peak else "n/a"
    mem = f"{res.peak_bytes / GIB:.2f}" if res.peak_bytes is not None else "n/a"
    warm = f"{res.warmup_s:.1f}" if compiled_step else "-"
    return [shape, label, f"{res.tokens_per_s:,.0f}", ratio(plain), ratio(solo), mfu, mem, est, warm]


def profile(args: argparse.Namespace, device: torch.device) -> None:
    """Where a pack's step time goes: the top operators by device time (CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    d_model, n_layer = parse_shapes(args.shapes)[0]
    cfg = model_config(d_model, n_layer, args.vocab, args.seq_len)
    members = max(int(k) for k in args.packs.split(",") if k)
    step = pack_step(cfg, members, args.batch, args.compile, device, args.compile_mode)
    for _ in range(args.warmup):
        step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(5):
            step()
        sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"\nprofile: d{d_model} L{n_layer}, pack of {members}, 5 steps, top operators by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=20))


def sweep_wall_time(overrides: str) -> int:
    """Time `scaling-cli sweep` from a cold process (imports, data, compiles, every pack) and
    summarise what it trained from the store it wrote."""
    from scaling_cli.store import load_curves, load_runs

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as root:
        command = [sys.executable, "-m", "scaling_cli.cli", "sweep", "--no-progress", f"store.root={root}",
                   *shlex.split(overrides)]
        print("sweep:", shlex.join(command), flush=True)
        start = time.perf_counter()
        code = subprocess.run(command).returncode
        wall = time.perf_counter() - start
        print(f"sweep exit code {code}; wall time {wall:.1f} s")
        try:
            runs, curves = load_runs(root), load_curves(root)
        except Exception as err:  # a failed sweep may leave no readable store; the wall time still counts
            print(f"could not read the store: {err!r}")
            return code or 1
        states = runs["status"].value_counts().to_dict() if len(runs) else {}
        print(f"runs: {len(runs)} {states}")
        if len(curves):
            last = curves.groupby("run_id")[["tokens", "elapsed_s"]].max()
            tokens, train_s = float(last["tokens"].sum()), float(last["elapsed_s"].sum())
            # Members of a pack share its clock, so this sum counts a pack's time once per member.
            print(f"summed per-run training time {train_s:.1f} s (overlaps within packs); "
                  f"{tokens:.3g} tokens trained, {tokens / wall:,.0f} tokens/s over the wall time")
        first_steps = first_step_seconds(root)
        if first_steps:
            print(f"{len(first_steps)} packs; their first steps (where compilation happens) took "
                  f"{sum(first_steps):.1f} s, {100 * sum(first_steps) / wall:.1f}% of the wall time")
    return code


def first_step_seconds(root: str) -> list[float]:
    """Each pack's first-step time (compile + one step), from its members' status files."""
    from scaling_cli.store import RunStore

    store = RunStore(root)
    packs = {}
    for run_id in store.run_ids():
        status = store.status(run_id)
        if status.get("first_step_s") is not None:
            packs[status["pack_id"]] = status["first_step_s"]
    return list(packs.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated d_model x n_layer")
    parser.add_argument("--packs", default="2,4,8,16", help="comma-separated pack sizes K")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=16, help="sequences per step per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the plain baseline, and the solo and pack steps (regional: one block, the head)")
    parser.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune",
                                                                       "max-autotune-no-cudagraphs"),
                        help="train.compile_mode of the solo and pack steps ('reduce-overhead': CUDA graphs)")
    parser.add_argument("--plain-batch", type=int, default=64,
                        help="sequences per step of the plain nanoGPT-style baseline (0: leave it out)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep-wall-time", action="store_true",
                        help="also time a whole sweep (the default GPU sweep, sweeps/gpu_default.yaml) from a cold start")
    parser.add_argument("--sweep-overrides", default="sweep=gpu_default",
                        help="Hydra overrides of that sweep (space-separated)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler summary of the largest pack of the first shape")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {machine(device)}")
    print(f"V={args.vocab} seq={args.seq_len} batch={args.batch}/run (plain: {args.plain_batch}) warmup={args.warmup} "
          f"steps={args.steps} compile={args.compile} mode={args.compile_mode}")
    benchmark(args, device)
    if args.profile:
        profile(args, device)
    if args.sweep_wall_time:
        return sweep_wall_time(args.sweep_overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
