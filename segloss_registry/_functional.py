"""The plain-function form of a loss, for code that wants no registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from ._errors import LossConfigError, did_you_mean
from ._inputs import InputOptions, check_inputs, no_autocast, normalise
from ._params import MODES, LossParams, validate_params

__all__ = ["functional_loss"]


def functional_loss(
    name: str,
    fn: Callable[..., Tensor],
    params_model: type[LossParams],
    modes: Sequence[str],
    logits: Tensor,
    target: Tensor,
    *,
    mode: str = "binary",
    from_logits: bool = True,
    ignore_index: int | None = None,
    check_values: bool = True,
    **params: Any,
) -> Tensor:
    """Validate ``params``, check and normalise the inputs, and compute ``fn`` eagerly."""
    if mode not in MODES:
        raise LossConfigError(f"{name}: mode must be one of {', '.join(MODES)}{did_you_mean(str(mode), MODES)} (got {mode!r})")
    if mode not in modes:
        raise LossConfigError(f"{name}: not defined for mode '{mode}'; it supports {', '.join(modes)}")
    p = validate_params(name, params_model, params, mode)
    opts = InputOptions(mode, from_logits, ignore_index)
    check_inputs(logits, target, opts, values=check_values)
    with no_autocast(logits.device.type):
        return fn(normalise(logits, target, opts), p)
