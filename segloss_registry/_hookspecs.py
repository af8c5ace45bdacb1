"""The one hook a loss plugin implements."""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "segloss_registry"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_losses(register: Any) -> None:
    """Call ``register(name, fn, params=Model, aliases=(), summary=..., modes=..., dims=...)`` once per loss."""
