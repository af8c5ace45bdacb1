"""Losses that return the wrong thing or write into the shared inputs (for the output checks)."""

from typing import Any

import torch
from torch import Tensor

from segloss_registry import Inputs, NoParams, hookimpl


def fx_not_scalar(inp: Inputs, params: NoParams) -> Tensor:
    return (inp.prob - inp.target).abs().mean(dim=(0, 2, 3))  # (C,) instead of 0-dim


def fx_integer(inp: Inputs, params: NoParams) -> Tensor:
    return (inp.prob > 0.5).sum()


def fx_python_float(inp: Inputs, params: NoParams) -> Any:
    return 0.5


def fx_other_device(inp: Inputs, params: NoParams) -> Tensor:
    return torch.zeros((), device="meta")


def fx_inplace_target(inp: Inputs, params: NoParams) -> Tensor:
    inp.target.mul_(0)  # corrupts every later term (and maybe the caller's target)
    return inp.prob.mean()


def fx_inplace_prob(inp: Inputs, params: NoParams) -> Tensor:
    p = inp.prob
    out = p.mean()
    p.clamp_(0.1, 0.9)
    return out


@hookimpl
def register_losses(register: Any) -> None:
    for fn in (fx_not_scalar, fx_integer, fx_python_float, fx_other_device, fx_inplace_target, fx_inplace_prob):
        register(fn.__name__, fn, params=NoParams)
