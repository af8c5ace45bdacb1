"""``machine_info``: the one description of the machine that the bench and the demo write."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch

from segloss_registry._machine import cpu_model, machine_info


def test_the_keys_of_both_former_versions_with_the_values_of_this_process() -> None:
    info = machine_info("cpu")
    # the bench's names and the demo's names, each set from the same source
    assert info["cores"] == info["cpu_count"] == os.cpu_count()
    assert info["threads"] == info["torch_threads"] == torch.get_num_threads()
    assert info["device"] == "cpu" and info["torch"] == torch.__version__
    assert info["python"] == platform.python_version() and info["platform"] == platform.platform()
    assert info["processor"] == (platform.processor() or platform.machine())
    assert info["machine"] == f"{info['cpu']} ({os.cpu_count()} cores visible)"
    assert not {"gpu", "accelerator", "gpu_memory_gib", "cuda"} & set(info)  # no CUDA device asked for
    if hasattr(os, "getloadavg"):
        load = info["load_average_1_5_15"]
        assert len(load) == 3 and all(isinstance(x, float) and x >= 0 for x in load)
    assert machine_info(torch.device("cpu")).keys() == info.keys()  # a device or its name


def test_thread_count_is_read_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    info = machine_info("cpu")
    assert info["threads"] == info["torch_threads"] == 7


def test_cpu_model_is_the_model_name_of_proc_cpuinfo() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        assert cpu_model() == (platform.processor() or platform.machine())
        return
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")]
    assert cpu_model() == (names[0] if names else platform.processor() or platform.machine())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only")
def test_a_cuda_device_names_the_gpu() -> None:
    info = machine_info("cuda")
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    assert info["gpu"] == info["accelerator"] == name and info["cuda"] == torch.version.cuda
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    assert info["gpu_memory_gib"] == round(total / 2**30, 1)
    assert info["machine"].startswith(f"{name} (") and info["machine"].endswith(f"; host {info['cpu']} "
                                                                               f"({os.cpu_count()} cores visible)")


def test_allocator_states_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("MALLOC_")] + ["LD_PRELOAD", "GLIBC_TUNABLES"]:
        monkeypatch.delenv(k, raising=False)
    assert machine_info("cpu")["allocator"] == "malloc defaults"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4294967296")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert machine_info("cpu")["allocator"] == ("LD_PRELOAD=libjemalloc.so.2; "
                                                "GLIBC_TUNABLES=glibc.malloc.trim_threshold=4294967296; "
                                                "MALLOC_ARENA_MAX=2")
