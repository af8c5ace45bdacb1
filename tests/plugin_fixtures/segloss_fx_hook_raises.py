"""A plugin that imports, but whose register_losses hook raises after registering one loss."""

from typing import Any

from segloss_registry import NoParams, hookimpl


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_half_registered", lambda inp, params: inp.prob.mean(), params=NoParams)
    raise RuntimeError("fx_hook_raises: boom while registering")
