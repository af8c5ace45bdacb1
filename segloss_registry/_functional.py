"""The plain-function form of a loss, for code that wants no registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from ._errors import InputError, LossConfigError, did_you_mean
from ._inputs import InputOptions, check_inputs, no_autocast, normalise
from ._params import MODES, LossParams, validate_params

__all__ = ["functional_loss", "mode_problem"]


def mode_problem(name: str, mode: str, modes: Sequence[str], hints: Mapping[str, str] | None) -> str:
    """The one-line error for a loss used in a mode it does not support, with the plugin's advice."""
    hint = (hints or {}).get(mode)
    return f"{name}: not defined for mode '{mode}'; it supports {', '.join(modes)}" + (f"; {hint}" if hint else "")


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
    dims: Sequence[int] = (1, 2, 3),
    hints: Mapping[str, str] | None = None,
    **params: Any,
) -> Tensor:
    """Validate ``params``, check and normalise the inputs, and compute ``fn`` eagerly."""
    if mode not in MODES:
        raise LossConfigError(f"{name}: mode must be one of {', '.join(MODES)}{did_you_mean(str(mode), MODES)} (got {mode!r})")
    if mode not in modes:
        raise LossConfigError(mode_problem(name, mode, modes, hints))
    p = validate_params(name, params_model, params, mode)
    opts = InputOptions(mode, from_logits, ignore_index)
    ndim = check_inputs(logits, target, opts, values=check_values)
    if ndim not in dims:
        raise InputError(f"{name}: defined for {' or '.join(f'{d}D' for d in sorted(dims))} inputs, got {ndim}D "
                         f"(logits {tuple(logits.shape)})")
    with no_autocast(logits.device.type):
        return fn(normalise(logits, target, opts), p)
