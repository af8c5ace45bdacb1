"""Determinism on the CPU: the same inputs give bitwise the same loss and gradient, run after run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import segloss_registry as sr
from segloss_registry import CompileWarning, build_loss

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    LOSSES = [info for info in sr.list_losses() if info.recipe is None]
CASES = [pytest.param(info.name, mode, id=f"{info.name}-{mode}") for info in LOSSES for mode in info.modes]
DIMS = {info.name: info.dims for info in LOSSES}

# computes every loss on fixed inputs and prints the float64 bits of value and gradient sum
_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
import segloss_registry as sr
torch.set_num_threads(int(sys.argv[1]))
out = {}
for info in sr.list_losses():
    if info.recipe is not None:
        continue
    for mode in info.modes:
        ndim = 2 if 2 in info.dims else max(info.dims)
        g = torch.Generator().manual_seed(1234)
        C = 1 if mode == "binary" else 3
        shape = (2, C, *([9] * ndim))
        x = (torch.randn(shape, generator=g) * 3).requires_grad_(True)
        if mode == "multiclass":
            t = torch.randint(0, C, (2, *shape[2:]), generator=g)
        else:
            t = (torch.rand(shape, generator=g) > 0.5).float()
        loss = sr.build_loss(info.name, mode=mode)(x, t)
        loss.backward()
        out[f"{info.name}-{mode}"] = [float(loss).hex(), float(x.grad.double().pow(2).sum()).hex()]
print(json.dumps(out))
"""


def inputs(mode: str, ndim: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    C = 1 if mode == "binary" else 3
    shape = (2, C, *([9] * ndim))
    x = torch.randn(shape, generator=g) * 3
    t = torch.randint(0, C, (2, *shape[2:]), generator=g) if mode == "multiclass" else (
        torch.rand(shape, generator=g) > 0.5).float()
    return x, t


def run(crit: sr.CompositeLoss, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    loss = crit(x, t)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("name,mode", CASES)
def test_eager_bitwise_repeatable(name: str, mode: str) -> None:
    x, t = inputs(mode, 2 if 2 in DIMS[name] else max(DIMS[name]))
    first = run(build_loss(name, mode=mode), x, t)
    for crit in (build_loss(name, mode=mode), build_loss(name, mode=mode)):  # fresh and reused criteria
        for _ in range(2):
            again = run(crit, x, t)
            assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_bitwise_repeatable_across_processes() -> None:
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    other = json.loads(subprocess.run([sys.executable, "-c", _SCRIPT, threads], capture_output=True, text=True,
                                      check=True, env=env, timeout=300).stdout)
    assert len(other) == len(CASES)
    # a fresh interpreter and this process, with the same thread count, give the same bits
    for key, (value, grad) in other.items():
        name, mode = key.rsplit("-", 1)
        loss, g = run(build_loss(name, mode=mode), *inputs(mode, 2 if 2 in DIMS[name] else max(DIMS[name])))
        assert float(loss).hex() == value, key
        assert float(g.double().pow(2).sum()).hex() == grad, key


@pytest.fixture(scope="module")
def compiled() -> sr.CompositeLoss:
    crit = build_loss("bce+dice+focal", compile=True)
    x, t = inputs("binary", 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crit(x, t)
    if any(issubclass(w.category, CompileWarning) for w in caught):
        pytest.skip("torch.compile is not available here (no C++ compiler?)")
    return crit


@pytest.mark.compile
def test_compiled_bitwise_repeatable(compiled: sr.CompositeLoss) -> None:
    assert compiled.uses_compile(torch.device("cpu"))
    x, t = inputs("binary", 2)
    first = run(compiled, x, t)
    for _ in range(3):
        again = run(compiled, x, t)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    # and it computes the eager value (fused kernels may round differently: close, not bitwise)
    eager = run(build_loss("bce+dice+focal", compile=False), x, t)
    torch.testing.assert_close(first[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first[1], eager[1], rtol=1e-4, atol=1e-7)
