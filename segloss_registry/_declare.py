"""Plugins declare, the core does: one ``Loss`` (or ``Recipe``) per loss gives the plain function
and the hook registration, so a plugin file holds its params model, its formula and one line.

>>> from segloss_registry import Inputs, Loss, NoParams, losses_hook
>>> def mean_error(inp: Inputs, params: NoParams) -> Tensor:
...     return inp.pixel_mean((inp.prob - inp.target).abs())
>>> mean_error_loss = Loss("mean_error", mean_error, summary="mean |p - t|")
>>> register_losses = losses_hook(mean_error_loss)  # the plugin module's hook
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from torch import Tensor

from ._hookspecs import Register, hookimpl
from ._params import MODES, LossParams, NoParams

if TYPE_CHECKING:
    from ._inputs import Inputs

__all__ = ["Loss", "Recipe", "losses_hook"]

P = TypeVar("P", bound=LossParams)


@dataclass(frozen=True)
class Loss(Generic[P]):
    """A loss declared once: ``fn(inputs, params)`` is its formula on normalised ``Inputs``.

    Calling the ``Loss`` is the plain function ``loss(logits, target, mode=..., **params)``:
    the same validation, input checks and normalisation as ``build_loss``, computed eagerly.
    ``hints`` maps a mode the loss does not support to the advice its error gives (for example
    ``{"binary": "use 'bce' for binary targets"}``).
    """

    name: str
    fn: Callable[[Inputs, P], Tensor]
    params: type[P] = NoParams  # type: ignore[assignment]
    modes: tuple[str, ...] = MODES
    dims: tuple[int, ...] = (1, 2, 3)
    aliases: tuple[str, ...] = ()
    summary: str = ""
    hints: Mapping[str, str] = field(default_factory=dict)
    default_mode: str | None = None  # the plain function's default: "binary" when supported, else modes[0]

    def __post_init__(self) -> None:
        # the plain function's help is the formula's docstring (formula, shapes, parameters, example)
        if self.fn.__doc__:
            object.__setattr__(self, "__doc__", self.fn.__doc__)

    @property
    def mode(self) -> str:
        """The plain function's default mode."""
        if self.default_mode is not None:
            return self.default_mode
        return "binary" if "binary" in self.modes else self.modes[0]

    def __call__(self, logits: Tensor, target: Tensor, *, mode: str | None = None, from_logits: bool = True,
                 ignore_index: int | None = None, check_values: bool = True, **params: Any) -> Tensor:
        from ._functional import functional_loss

        return functional_loss(self.name, self.fn, self.params, self.modes, logits, target,
                               mode=self.mode if mode is None else mode, from_logits=from_logits,
                               ignore_index=ignore_index, check_values=check_values, dims=self.dims,
                               hints=self.hints, **params)

    def register(self, register: Register) -> None:
        register(self.name, self.fn, params=self.params, aliases=self.aliases, summary=self.summary,
                 modes=self.modes, dims=self.dims, hints=self.hints)


@dataclass(frozen=True)
class Recipe:
    """A named spec string (``Recipe("dice_bce", "bce+dice")``), expanded into its terms at build time."""

    name: str
    spec: str
    aliases: tuple[str, ...] = ()
    summary: str = ""

    def register(self, register: Register) -> None:
        register(self.name, self.spec, aliases=self.aliases, summary=self.summary)


def losses_hook(*declared: Loss[Any] | Recipe) -> Callable[[Register], None]:
    """The ``register_losses`` hook implementation that registers ``declared``, in order.

    Assign it in the plugin module: ``register_losses = losses_hook(dice_loss, iou_loss)``.
    """
    if not declared or not all(isinstance(d, (Loss, Recipe)) for d in declared):
        raise TypeError(f"losses_hook takes Loss or Recipe objects (got {declared!r})")

    def register_losses(register: Register) -> None:
        for d in declared:
            d.register(register)

    register_losses.__doc__ = f"Register {', '.join(d.name for d in declared)}."
    return hookimpl(register_losses)
