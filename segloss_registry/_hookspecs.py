"""The hooks a plugin implements: ``register_losses`` (its losses) and ``register_peers`` (which
other library computes them, for the benchmark and the conformance kit). Both take one
``register`` callback, as in simonw/llm."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from ._params import LossParams

__all__ = ["PROJECT", "Register", "RegisterPeer", "hookimpl", "hookspec"]

PROJECT = "segloss_registry"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The ``register`` argument of ``register_losses``."""

    def __call__(
        self,
        name: str,
        fn: Callable[..., Any] | str,
        *,
        params: type[LossParams] | None = None,
        aliases: Sequence[str] = (),
        summary: str = "",
        modes: Sequence[str] = ...,
        dims: Sequence[int] = (1, 2, 3),
        hints: Mapping[str, str] | None = None,
    ) -> None: ...


class RegisterPeer(Protocol):
    """The ``register`` argument of ``register_peers`` (see ``segloss_registry.bench``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> None: ...


@hookspec
def register_losses(register: Register) -> None:
    """Call ``register(name, fn, params=Model, aliases=(), summary=..., modes=..., dims=..., hints=...)`` once per loss."""


@hookspec
def register_peers(register: RegisterPeer) -> None:
    """Call ``register(...)`` once per peer implementation of registered losses (another library's)."""
