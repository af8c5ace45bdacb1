"""The hooks a plugin implements: ``register_losses`` (its losses) and ``register_peers`` (which
other library computes them, for the benchmark and the conformance kit). Both take one
``register`` callback, as in simonw/llm."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from torch import Tensor

    from ._composite import Term
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
    """The ``register`` argument of ``register_peers``: one call per peer (see ``segloss_registry._peers``).

    ``register(library, name, losses, build, requires=(), note="", part=None, engine="", compile=True)``:
    ``library`` computes the registered ``losses`` together as ``name``; ``build(terms, mode)`` returns
    ``fn(logits, target)``, the weighted sum of those terms the library's way, or raises
    ``segloss_registry.bench.PeerUnsupported("why")``; ``requires``: the modules ``build`` imports.
    """

    def __call__(
        self,
        library: str,
        name: str,
        losses: Sequence[str],
        build: Callable[[Sequence[Term], str], Callable[[Tensor, Tensor], Tensor]],
        *,
        requires: Sequence[str] = (),
        note: str = "",
        part: str | None = None,
        engine: str = "",
        compile: bool = True,
    ) -> None: ...


@hookspec
def register_losses(register: Register) -> None:
    """Call ``register(name, fn, params=Model, aliases=(), summary=..., modes=..., dims=..., hints=...)``
    once per loss."""


@hookspec
def register_peers(register: RegisterPeer) -> None:
    """Call ``register(library, name, losses, build, ...)`` once per other library's implementation of losses."""
