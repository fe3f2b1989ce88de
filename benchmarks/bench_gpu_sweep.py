"""Time the GPU default sweep from a cold process, then fit and predict on what it trained.

    python benchmarks/bench_gpu_sweep.py                          # sweeps/small as shipped, cold caches
    python benchmarks/bench_gpu_sweep.py --tokens-scale 0.1       # every budget x 0.1, projected to x 1
    python benchmarks/bench_gpu_sweep.py --cache keep --out results/   # warm caches; keep fit.json etc.
    python benchmarks/bench_gpu_sweep.py --sweep gpu_default      # any other sweep

Runs `scaling-cli sweep` in a fresh process (imports, data preparation, compilation and every pack
count), then `scaling-cli fit` and `scaling-cli predict --params 7e9` on its store, and prints:
wall time; proxies per GPU-hour; tokens/s summed over every run; MFU (training FLOPs as the planner
counts them / wall time / the GPU's dense bf16 peak); the compile share (seconds of steps that
compiled, recorded by the trainers as compile_s, per pack, / wall time) and the downstream-eval
share; the backtest (fit's leave-largest-size-out error of the selected loss law on the held-out
largest size); and the prediction.

--cache fresh (default) points SCALING_CLI_CACHE at an empty folder: the BPE, token arrays and
every compiled graph are built from scratch, as on a new machine. --tokens-scale S writes a copy of
the sweep with every train.tokens_per_param (and train.tokens) times S, for a time-boxed check; the
full sweep's wall time is then projected as measured wall + (1/S - 1) x the training part (pack
time minus compile and evals), and labelled a projection. Needs CUDA for the intended numbers;
--help and CPU smoke runs (--overrides "train.device=cpu ...") work anywhere. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf


def scaled_sweep(name: str, scale: float, folder: Path) -> Path:
    """A copy of sweeps/NAME.yaml with every token budget times `scale` (same name: it shadows)."""
    from scaling_cli.compose import sweep_files

    design = OmegaConf.to_container(OmegaConf.load(sweep_files()[name]))
    sweep = design.get("sweep", {})
    for block in [sweep, *sweep.get("extra", [])]:
        grid = block.get("grid") or {}
        for key in ("train.tokens_per_param", "train.tokens"):
            if key in grid:
                grid[key] = [value * scale for value in grid[key]]
        for group in block.get("zip") or []:
            for key in ("train.tokens_per_param", "train.tokens"):
                if key in group:
                    group[key] = [value * scale for value in group[key]]
    train = design.get("train") or {}
    for key in ("tokens_per_param", "tokens"):
        if train.get(key) is not None:
            train[key] *= scale
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(design), folder / f"{name}.yaml")
    return folder


def run(command: list[str], env: dict) -> tuple[int, float]:
    print("$", shlex.join(command), flush=True)
    start = time.perf_counter()
    code = subprocess.run(command, env=env).returncode
    return code, time.perf_counter() - start


def summarise_store(root: str) -> dict:
    """What the sweep trained, from its run folders: runs, tokens, FLOPs, per-pack wall, compile, evals."""
    from scaling_cli.store import RunStore

    store = RunStore(root)
    out = {"runs": 0, "states": defaultdict(int), "tokens": 0.0, "flops": 0.0, "eval_s": 0.0}
    packs: dict[str, dict] = {}
    for run_id in store.run_ids():
        status, spec = store.status(run_id), store.read_json(run_id, "spec.json")
        out["runs"] += 1
        out["states"][status["state"]] += 1
        if status["state"] not in ("done", "diverged"):
            continue
        step = status.get("step") or spec["steps"]
        start = (spec.get("parent") or {}).get("step", 0)
        out["tokens"] += (step - start) * spec["batch_size_tokens"]
        out["flops"] += (step - start) * spec["batch_size_tokens"] * spec["flops_per_token"]
        out["eval_s"] += status.get("downstream_eval_s") or 0.0
        pack = packs.setdefault(status.get("pack_id") or run_id, {"wall_s": 0.0, "compile_s": 0.0})
        pack["wall_s"] = max(pack["wall_s"], status.get("elapsed_s") or 0.0)
        pack["compile_s"] = max(pack["compile_s"], status.get("compile_s") or 0.0)  # the pack's, on every member
    out["packs"] = len(packs)
    out["pack_wall_s"] = sum(p["wall_s"] for p in packs.values())
    out["compile_s"] = sum(p["compile_s"] for p in packs.values())
    return out


def gpu_peak() -> tuple[str, float | None]:
    import torch

    from scaling_cli.train.throughput import peak_flops

    if not torch.cuda.is_available():
        return "CPU (no CUDA)", None
    name = torch.cuda.get_device_name()
    return f"{name}; torch {torch.__version__}", peak_flops(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default="small", help="sweep to time (default: small, the GPU default)")
    parser.add_argument("--tokens-scale", type=float, default=1.0,
                        help="multiply every token budget (time-boxed check; the full wall time is projected)")
    parser.add_argument("--overrides", default="", help="extra Hydra overrides for the sweep (space-separated)")
    parser.add_argument("--cache", choices=("fresh", "keep"), default="fresh",
                        help="fresh: an empty SCALING_CLI_CACHE (cold data and compile caches); keep: the current one")
    parser.add_argument("--out", default=None, help="copy fit.json, predict.json and the memory records here")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of the fit (default 200)")
    args = parser.parse_args()
    if args.tokens_scale <= 0:
        parser.error("--tokens-scale must be > 0")

    machine, peak = gpu_peak()
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_sweep_"))
    env = dict(os.environ)
    if args.cache == "fresh":
        env["SCALING_CLI_CACHE"] = str(work / "cache")
        for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            env.pop(key, None)
    store = str(work / "runs")
    sweep_args = ["--no-progress", f"sweep={args.sweep}", f"store.root={store}", *shlex.split(args.overrides)]
    if args.tokens_scale != 1.0:
        sweep_args = ["--sweeps-dir", str(scaled_sweep(args.sweep, args.tokens_scale, work / "sweeps")), *sweep_args]
    print(f"machine: {machine}; sweep={args.sweep} tokens x {args.tokens_scale:g}; cache {args.cache} "
          f"({env.get('SCALING_CLI_CACHE', '~/.cache/scaling-cli')})", flush=True)
    code, wall = run([sys.executable, "-m", "scaling_cli.cli", "sweep", *sweep_args], env)
    print(f"sweep exit code {code}; wall time {wall:.1f} s ({wall / 60:.2f} min)", flush=True)
    try:
        s = summarise_store(store)
    except Exception as err:  # a sweep that failed early may leave no readable store; its wall time stands
        print(f"could not read the store: {err!r}")
        return code or 1
    hours = wall / 3600
    mfu = f"{100 * s['flops'] / wall / peak:.1f}%" if peak else "n/a (no known GPU peak)"
    print(f"runs: {s['runs']} {dict(s['states'])} in {s['packs']} packs; {s['tokens']:.3g} tokens, {s['flops']:.3g} FLOPs")
    print(f"proxies per GPU-hour: {s['runs'] / hours:,.0f}; summed tokens/s: {s['tokens'] / wall:,.0f}; MFU over the "
          f"wall time: {mfu}")
    print(f"compile: {s['compile_s']:.1f} s = {100 * s['compile_s'] / wall:.1f}% of the wall time; downstream evals: "
          f"{s['eval_s']:.1f} s = {100 * s['eval_s'] / wall:.1f}%; outside packs (start-up, data, planning): "
          f"{wall - s['pack_wall_s']:.1f} s")
    if args.tokens_scale != 1.0:
        training = max(0.0, s["pack_wall_s"] - s["compile_s"] - s["eval_s"])
        projected = wall + (1 / args.tokens_scale - 1) * training
        print(f"projection to the full budgets (x {1 / args.tokens_scale:g} the training part, {training:.1f} s here): "
              f"~{projected:.0f} s ({projected / 60:.1f} min); a projection, not a measurement")

    fit_code, fit_s = run([sys.executable, "-m", "scaling_cli.cli", "fit", store, "--n-boot", str(args.n_boot)], env)
    print(f"fit exit code {fit_code}; {fit_s:.1f} s", flush=True)
    fit_json = Path(store) / "_fit" / "fit.json"
    if fit_json.exists():
        report = json.loads(fit_json.read_text())
        law = (report.get("selection") or {}).get("loss_law")
        holdout = report.get("holdout") or {}
        score = (holdout.get("scores") or {}).get(law or "", {})
        if "mean_abs_rel_error" in score:
            print(f"backtest: {law} fitted without the largest size (N ~ {holdout['heldout_params']:.3g}, "
                  f"{holdout['n_test']} runs) predicts it with mean |rel err| {100 * score['mean_abs_rel_error']:.2f}%, "
                  f"RMSE(log L) {score['rmse_log']:.4f}")
        else:
            print(f"backtest: none ({holdout.get('reason') or score.get('reason') or 'no score'})")
    predict = [sys.executable, "-m", "scaling_cli.cli", "predict", "--params", "7e9", "--fit", str(fit_json)]
    run(predict, env)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predict.json", "w") as f:
            subprocess.run([*predict, "--json"], env=env, stdout=f)
        for source in (fit_json, Path(env.get("SCALING_CLI_CACHE", "~/.cache/scaling-cli")).expanduser()
                       / "packs" / "memory.json"):
            if source.exists():
                shutil.copy(source, out / source.name)
    return code or fit_code


if __name__ == "__main__":
    sys.exit(main())
