"""Run a planned sweep on the configured backend: this machine, a Ray cluster, or SLURM.

The launcher writes every run's spec up front (so `status` sees the whole sweep at once),
checks devices and prepares data before any training, then hands runs to workers. Workers
claim runs through leases in the store (scaling_cli.worker), so re-running a sweep, running
two sweeps on one store, or mixing backends never trains a run twice, and finished runs are
skipped. Runs of one architecture are grouped into packs that train as one batched model on a
GPU (scaling_cli.packs; the pack size comes from GPU memory unless launcher.pack_size sets it).
Validation targets (sweep.validate) go first, then packs largest-first (so the long ones do not
straggle at the end); unpacked runs on a single worker go smallest-first (early results). With
several local workers a WSD branch starts as soon as its stable run has finished.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from scaling_cli.config import LauncherConfig
from scaling_cli.errors import UserError
from scaling_cli.plan import RunSpec
from scaling_cli.store import RunStore
from scaling_cli.packs import free_gpu_bytes, make_packs
from scaling_cli.worker import SKIP_STATES, execute_pack, prepared_data, verify_finished


@dataclass
class SweepResult:
    states: Counter
    trained: int
    skipped: int


def register_runs(specs: list[RunSpec], store: RunStore) -> None:
    """Write every run's spec and config up front, so `status` sees the whole sweep at once."""
    from omegaconf import OmegaConf

    provenance = {"version": _version(), "git_sha": _git_sha()}
    for spec in specs:
        if not store.exists(spec.run_id, "spec.json"):
            # config first: a folder only counts as a run once spec.json exists
            store.write_bytes(spec.run_id, "config.yaml", OmegaConf.to_yaml(OmegaConf.create(spec.config)).encode())
            store.write_json(spec.run_id, "spec.json", {**spec.summary(), **provenance})


def run_sweep(specs: list[RunSpec], store: RunStore, launcher: LauncherConfig | None = None,
              show_progress: bool = True) -> SweepResult:
    from scaling_cli.train.trainer import pick_device

    launcher = launcher or LauncherConfig()
    # Bad input fails here, before any run folder exists: devices, then data.
    for spec in specs:
        if launcher.name == "local":
            pick_device(spec.config["train"]["device"])
        prepared_data(spec)
    register_runs(specs, store)
    todo = [s for s in specs
            if not (store.status(s.run_id)["state"] in SKIP_STATES and verify_finished(store, s.run_id))]
    workers = _local_workers(launcher) if launcher.name == "local" else len(todo)
    free_bytes = free_gpu_bytes() if launcher.name == "local" and not launcher.pack_size else None
    outcomes: list[str] = []
    waves = launch_waves(todo, launcher, free_bytes, workers)
    if launcher.name == "local" and workers > 1:
        outcomes += _run_processes(*waves, store.root, launcher, workers)
        return SweepResult(states=Counter(outcomes), trained=len(todo), skipped=len(specs) - len(todo))
    for packs in waves:  # the second wave (WSD branches) starts once the first has finished
        if not packs:
            continue
        if launcher.name == "ray":
            outcomes += _run_ray(packs, store.root, launcher)
        elif launcher.name == "slurm":
            outcomes += _run_slurm(packs, store.root, launcher)
        else:
            outcomes += _run_here(packs, store.root, launcher, show_progress)
    return SweepResult(states=Counter(outcomes), trained=len(todo), skipped=len(specs) - len(todo))


def launch_waves(todo: list[RunSpec], launcher: LauncherConfig, free_bytes: int | None,
                 workers: int) -> tuple[list[list[RunSpec]], list[list[RunSpec]]]:
    """(packs that can start at once, WSD branch packs that start from their stable runs' checkpoints).

    The first wave puts validation targets (sweep.validate) first: usually the longest runs of the
    sweep, so with several workers one trains the target while the others train the grid, instead of
    the target straggling at the end. One worker without packing goes smallest first (early results)."""
    waves = []
    for wave in ([s for s in todo if not s.parent], [s for s in todo if s.parent]):
        packs = make_packs(wave, launcher, free_bytes)
        if all(len(p) == 1 for p in packs) and workers == 1:
            packs.sort(key=lambda p: p[0].flops)
        else:
            packs.sort(key=lambda p: not any(s.role == "validation" for s in p))  # stable: largest first after them
        waves.append(packs)
    return waves[0], waves[1]


def _local_workers(launcher: LauncherConfig) -> int:
    if launcher.workers:
        return launcher.workers
    import torch

    return max(1, torch.cuda.device_count())


def _run_here(packs: list[list[RunSpec]], root: str, launcher: LauncherConfig, show_progress: bool) -> list[str]:
    """One pack (or run) after another in this process, with a bar for the sweep and one for the pack."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    outcomes: list[str] = []
    with Progress(*columns, disable=not show_progress) as bar:
        sweep_task = bar.add_task("sweep", total=sum(len(p) for p in packs), info="")
        for pack in packs:
            name = pack[0].name if len(pack) == 1 else f"pack of {len(pack)} x {pack[0].name.split('-')[0]}"
            run_task = bar.add_task(name, total=max(s.steps for s in pack), info="")

            def hook(done: int, total: int, metrics: dict, task=run_task) -> None:
                bar.update(task, completed=done,
                           info=f"loss {metrics['loss']:.3f}  {metrics['tokens_per_s'] / 1e3:.1f}k tok/s")

            outcomes += execute_pack(pack, root, launcher.lease_ttl_s, progress=hook)
            bar.remove_task(run_task)
            counts = Counter(outcomes)
            bar.update(sweep_task, advance=len(pack), info=", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return outcomes


def _pin_gpu(queue) -> None:
    """Process-pool initializer: each worker takes one GPU index for its whole life."""
    index = queue.get()
    if index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)


def _run_processes(packs: list[list[RunSpec]], branches: list[list[RunSpec]], root: str, launcher: LauncherConfig,
                   workers: int) -> list[str]:
    """Several worker processes on this machine, one per GPU when there are GPUs. A pack of WSD
    branches is submitted as soon as the stable runs it starts from have finished, so a worker that
    is done with the stable runs trains branches while another still trains a long run."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    gpus = torch.cuda.device_count()
    queue = ctx.Queue()
    for i in range(workers):
        queue.put(i % gpus if gpus else None)
    in_sweep = {s.run_id for p in packs for s in p}
    finished: set[str] = set()
    outcomes: list[str] = []
    waiting = list(branches)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pin_gpu, initargs=(queue,)) as pool:
        running = {pool.submit(execute_pack, pack, root, launcher.lease_ttl_s): pack for pack in packs}
        while running or waiting:
            ready = [p for p in waiting if not running or all(
                s.parent["run_id"] in finished or s.parent["run_id"] not in in_sweep for s in p)]
            for pack in ready:
                waiting.remove(pack)
                running[pool.submit(execute_pack, pack, root, launcher.lease_ttl_s)] = pack
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes += future.result()
                finished.update(s.run_id for s in running.pop(future))
    return outcomes


def _run_ray(packs: list[list[RunSpec]], root: str, launcher: LauncherConfig) -> list[str]:
    """One Ray task per pack (or run), each asking for its GPUs and CPUs; the store root must be reachable
    from every node (a shared filesystem or an fsspec URL such as s3://)."""
    try:
        import ray
    except ImportError as err:
        raise UserError("launcher.name: 'ray' needs the ray package; pip install 'scaling-cli[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=launcher.ray_address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        task = ray.remote(num_gpus=launcher.ray_num_gpus, num_cpus=launcher.ray_num_cpus, max_retries=1)(execute_pack)
        results = ray.get([task.remote(pack, root, launcher.lease_ttl_s) for pack in packs])
        return [outcome for outcomes in results for outcome in outcomes]
    finally:
        if started_here:
            ray.shutdown()


def _run_slurm(packs: list[list[RunSpec]], root: str, launcher: LauncherConfig) -> list[str]:
    """The packs (or runs) as one SLURM array job through submitit ('local'/'debug' clusters run without SLURM)."""
    try:
        import submitit
    except ImportError as err:
        raise UserError("launcher.name: 'slurm' needs the submitit package; pip install 'scaling-cli[slurm]'") from err
    if not packs:
        return []
    executor = submitit.AutoExecutor(folder=launcher.slurm_folder, cluster=launcher.slurm_cluster)
    params = {"timeout_min": launcher.slurm_time_min}
    if launcher.slurm_cluster == "slurm":
        params.update(slurm_partition=launcher.slurm_partition, gpus_per_node=launcher.slurm_gpus_per_node,
                      cpus_per_task=launcher.slurm_cpus_per_task, mem_gb=launcher.slurm_mem_gb,
                      slurm_array_parallelism=launcher.slurm_array_parallelism)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = executor.map_array(execute_pack, packs, [root] * len(packs), [launcher.lease_ttl_s] * len(packs))
    return [outcome for job in jobs for outcome in job.result()]


def _version() -> str:
    from scaling_cli import __version__

    return __version__


def _git_sha() -> str | None:
    """The commit of the code that trained a run, when it runs from a git checkout."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


__all__ = ["SweepResult", "register_runs", "run_sweep"]
