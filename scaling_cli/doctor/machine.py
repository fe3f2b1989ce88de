"""What the machine is: versions of torch, triton, CUDA and the driver, and the GPU."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess

import torch


def driver_version() -> str | None:
    """The NVIDIA driver's version (nvidia-smi), or None where there is none or it does not answer."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Host, Python, torch, triton, CUDA (torch's build), driver, and the first GPU (None without one)."""
    info = {"host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "triton": package_version("triton"), "cuda": torch.version.cuda, "driver": driver_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpus=torch.cuda.device_count(), sms=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def describe(info: dict) -> str:
    """One line naming the machine, as every printed ratio needs."""
    where = (f"{info['gpu']} ({info.get('sms')} SMs, {info.get('gpu_memory_gib')} GiB, driver {info['driver'] or '?'})"
             if info["gpu"] else f"CPU only ({info['cpu']}, {info['cpu_threads']} threads; no CUDA GPU)")
    return (f"{where} | torch {info['torch']} | triton {info['triton'] or 'not installed'} | "
            f"CUDA {info['cuda'] or 'n/a'} | {info['host']}")
