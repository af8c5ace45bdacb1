"""The plain-function form of a loss, for code that wants no registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from ._errors import InputError, LossConfigError
from ._inputs import check_inputs, no_autocast, normalise
from ._options import LossOptions
from ._params import LossParams, per_class_fields, validate_params

__all__ = ["check_per_class", "functional_loss", "mode_problem"]


def mode_problem(name: str, mode: str, modes: Sequence[str], hints: Mapping[str, str] | None) -> str:
    """The one-line error for a loss used in a mode it does not support, with the plugin's advice."""
    hint = (hints or {}).get(mode)
    return f"{name}: not defined for mode '{mode}'; it supports {', '.join(modes)}" + (f"; {hint}" if hint else "")


def check_per_class(name: str, params: LossParams, mode: str, logits: Tensor) -> None:
    """Every list in a ``per_class()`` field of ``params`` has one entry per class (C; 1 in binary mode);
    a nested list (a class-by-class matrix) is C x C. The one rule of the plain function and ``build_loss``.
    """
    C = 1 if mode == "binary" else logits.shape[1]
    for field in per_class_fields(type(params)):
        value = getattr(params, field, None)
        if not isinstance(value, list):
            continue
        if any(isinstance(v, list) for v in value):
            rows = {len(v) if isinstance(v, list) else -1 for v in value}
            if len(value) != C or rows != {C}:
                size = f"{len(value)} x {next(iter(rows))}" if len(rows) == 1 else f"{len(value)} unequal rows"
                raise InputError(f"{mode}: {name}: {field} is {size} but the logits {tuple(logits.shape)} "
                                 f"have C = {C} classes; give a {C} x {C} matrix")
        elif len(value) != C:
            raise InputError(f"{mode}: {name}: {field} has {len(value)} entries but the logits "
                             f"{tuple(logits.shape)} have C = {C}; give one per class")


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
    opts = LossOptions.build({"mode": mode, "from_logits": from_logits, "ignore_index": ignore_index}, name).inputs
    if mode not in modes:
        raise LossConfigError(mode_problem(name, mode, modes, hints))
    p = validate_params(name, params_model, params, mode)
    ndim = check_inputs(logits, target, opts, values=check_values)
    if ndim not in dims:
        raise InputError(f"{name}: defined for {' and '.join(f'{d}D' for d in sorted(dims))} inputs, got {ndim}D "
                         f"(logits {tuple(logits.shape)})")
    check_per_class(name, p, opts.mode, logits)
    with no_autocast(logits.device.type):
        return fn(normalise(logits, target, opts), p)
