"""Training-step throughput of one proxy: tokens/s and model FLOPs utilisation (MFU).

    python benchmarks/bench_train_step.py                       # d=256, 4 layers, vocab 32768, seq 1024
    python benchmarks/bench_train_step.py --d-model 128 --n-layer 4 --compile

Times the trainer's own step (model, fused loss, AdamW, clipping) under bf16 autocast, side
by side with the plain PyTorch loss (`loss_impl=torch`) in the same process, and prints the
machine. MFU = tokens/s x training FLOPs per token (scaling_cli.model.counting, the same count
the planner uses) / the GPU's dense bf16 peak. Not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch

from scaling_cli.config import ModelConfig, OptimConfig
from scaling_cli.model.counting import flops_per_token
from scaling_cli.model.gpt import GPT
from scaling_cli.train.compiled import StepCompiler
from scaling_cli.train.throughput import peak_flops
from scaling_cli.train.trainer import build_optimizer

def solo_step(cfg: ModelConfig, batch: int, compile_model: bool, device: torch.device,
              compile_mode: str = "default") -> Callable[[], None]:
    """One training step of one run, as train_run does it (model, fused loss, AdamW, clipping; with
    compile_model, the trainer's regional compilation: scaling_cli.train.compiled)."""
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    optimizer = build_optimizer(model, OptimConfig(), device)
    compiler = StepCompiler(compile_mode) if compile_model else None
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = compiler.head(model, model.trunk(x, compiler.run_block), y) if compiler else model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(cfg: ModelConfig, batch: int, steps: int, compile_model: bool, device: torch.device) -> float:
    step = solo_step(cfg, batch, compile_model, device)
    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * cfg.seq_len * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=64, help="sequences per step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak = peak_flops(name) if device.type == "cuda" else None
    print(f"machine: {name}; torch {torch.__version__}; d={args.d_model} L={args.n_layer} "
          f"V={args.vocab} seq={args.seq_len} batch={args.batch} compile={args.compile}")
    results = {}
    for impl in ("auto", "torch"):
        cfg = ModelConfig(d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head, seq_len=args.seq_len,
                          vocab_size=args.vocab, mlp="swiglu", loss_impl=impl)
        tps = time_steps(cfg, args.batch, args.steps, args.compile, device)
        results[impl] = tps
        mfu = f"{100 * tps * flops_per_token(cfg) / peak:.1f}%" if peak else "n/a (unknown peak)"
        print(f"loss_impl={impl:5s}  {tps / 1e6:.3f}M tokens/s  MFU {mfu}")
    print(f"ratio fused/torch loss: {results['auto'] / results['torch']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
