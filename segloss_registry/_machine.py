"""Where a measurement comes from: the one ``machine_info(device)`` of ``segloss bench`` and the demo.

The keys (all of them always present unless said otherwise):

- ``machine``: one line for a report, ``"<CPU model> (<n> cores visible)"``, on CUDA
  ``"<GPU> (<GiB> GiB), CUDA <version>; host <CPU line>"``;
- ``cpu`` (the model name from ``/proc/cpuinfo``, else ``platform.processor()``), ``processor``
  (``platform.processor()`` or the architecture), ``cores`` and ``cpu_count`` (``os.cpu_count()``,
  the two names the bench and the demo used), ``threads`` and ``torch_threads``
  (``torch.get_num_threads()``, likewise), ``device``, ``platform``, ``python``, ``torch``;
- ``allocator``: how the process's host memory allocator was set up, from the environment:
  ``LD_PRELOAD=<library names>`` (jemalloc, tcmalloc, ...), ``GLIBC_TUNABLES=...`` and
  ``MALLOC_*`` variables, else ``"malloc defaults"``. Eager CPU timings depend on it: glibc's
  defaults give freed blocks of several MiB back to the OS, so each step page-faults its
  buffers afresh (README, Performance);
- ``load_average_1_5_15``: where the OS has a load average;
- on a CUDA device that torch sees: ``gpu`` and ``accelerator`` (its name), ``gpu_memory_gib``, ``cuda``.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["machine_info", "cpu_model", "allocator"]


def allocator() -> str:
    """The host allocator's setup as the environment states it (see the module docstring)."""
    env = os.environ
    parts = []
    if env.get("LD_PRELOAD"):
        parts.append("LD_PRELOAD=" + " ".join(os.path.basename(x) for x in env["LD_PRELOAD"].replace(":", " ").split()))
    if env.get("GLIBC_TUNABLES"):
        parts.append(f"GLIBC_TUNABLES={env['GLIBC_TUNABLES']}")
    parts += [f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("MALLOC_")]
    return "; ".join(parts) or "malloc defaults"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows of it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU, cores, threads, load, accelerator and versions of this process, for ``device``."""
    dev = torch.device(device)
    cores = os.cpu_count()
    threads = torch.get_num_threads()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "processor": platform.processor() or platform.machine(),
        "cores": cores,
        "cpu_count": cores,
        "threads": threads,
        "torch_threads": threads,
        "device": str(dev),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "allocator": allocator(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    machine = f"{info['cpu']} ({cores} cores visible)"
    if dev.type == "cuda" and torch.cuda.is_available():
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = info["accelerator"] = torch.cuda.get_device_name(idx)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        machine = f"{info['gpu']} ({info['gpu_memory_gib']} GiB), CUDA {info['cuda']}; host {machine}"
    info["machine"] = machine
    return info
