"""A working plugin: ``fx_good`` = mean |p - t| over the valid pixels."""

from typing import Any

from torch import Tensor

from segloss_registry import Inputs, NoParams, hookimpl


def fx_good(inp: Inputs, params: NoParams) -> Tensor:
    return inp.pixel_mean((inp.prob - inp.target).abs())


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_good", fx_good, params=NoParams, summary="mean |p - t|")
