"""A plugin that registers one valid loss and several invalid ones."""

from typing import Any

from segloss_registry import NoParams, hookimpl


def _loss(inp: Any, params: Any) -> Any:
    return inp.prob.mean()


def _one_arg(inp: Any) -> Any:
    return inp.prob.mean()


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_no_params", _loss)                              # no parameter model
    register("Bad-Name", _loss, params=NoParams)                 # not a valid loss name
    register("fx_not_callable", 42, params=NoParams)             # fn is neither callable nor a spec
    register("fx_one_arg", _one_arg, params=NoParams)            # fn cannot take (inputs, params)
    register("fx_params_not_model", _loss, params=dict)          # params is not a LossParams model
    register("fx_bad_recipe", "bce + + (", summary="broken")     # a recipe that does not parse
    register("fx_bad_mode", _loss, params=NoParams, modes=("softmax",))
    register("fx_valid_too", _loss, params=NoParams)             # the one that is fine
