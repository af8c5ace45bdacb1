"""Named recipes: spec strings registered under a name, expanded into their terms."""

from __future__ import annotations

from typing import Any

from segloss_registry import hookimpl


@hookimpl
def register_losses(register: Any) -> None:
    register("dice_bce", "bce+dice", summary="the seed's DiceBCELoss: bce + dice with weights 1 and 1")
