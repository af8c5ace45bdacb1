"""A plugin whose register_losses hook registers one loss and then raises a BaseException subclass."""

from typing import Any

from segloss_registry import NoParams, hookimpl


class FxHookAbort(BaseException):
    pass


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_half_base", lambda inp, params: inp.prob.mean(), params=NoParams)
    raise FxHookAbort("fx_hook_base_exc: boom")
