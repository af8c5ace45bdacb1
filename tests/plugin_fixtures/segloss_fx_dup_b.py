"""The other plugin registering ``fx_same``: here mean(1 - p)."""

from typing import Any

from segloss_registry import NoParams, hookimpl


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_same", lambda inp, params: inp.pixel_mean(1 - inp.prob), params=NoParams)
