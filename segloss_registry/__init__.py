"""segloss-registry: segmentation losses as plugins, composed into one compiled graph.

>>> from segloss_registry import build_loss
>>> criterion = build_loss("bce+dice", weights=[0.3, 0.7])
>>> loss = criterion(logits, target)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ._composite import CompileWarning, CompositeLoss, Term, build_loss
from ._declare import Loss, Recipe, losses_hook
from ._describe import describe
from ._errors import (
    AmbiguousLossError,
    InputError,
    LossConfigError,
    PluginError,
    SeglossError,
    SpecSyntaxError,
    UnknownLossError,
)
from ._functional import functional_loss
from ._hookspecs import Register, RegisterPeer, hookimpl
from ._inputs import InputOptions, Inputs, safe_ratio
from ._params import LossParams, NoParams, RegionParams, check_class_mean_mode, check_class_weights, odd_int, per_class
from ._registry import LossInfo, PluginInfo, PluginWarning, RecipeInfo, Registry, get_registry

__version__ = "0.1.0"

__all__ = [
    "build_loss",
    "list_losses",
    "describe_loss",
    "list_plugins",
    "hookimpl",
    "Loss",
    "Recipe",
    "losses_hook",
    "Register",
    "RegisterPeer",
    "CompositeLoss",
    "Term",
    "Inputs",
    "InputOptions",
    "LossParams",
    "NoParams",
    "RegionParams",
    "per_class",
    "check_class_weights",
    "check_class_mean_mode",
    "odd_int",
    "LossInfo",
    "RecipeInfo",
    "PluginInfo",
    "Registry",
    "get_registry",
    "functional_loss",
    "safe_ratio",
    "SeglossError",
    "UnknownLossError",
    "AmbiguousLossError",
    "SpecSyntaxError",
    "LossConfigError",
    "InputError",
    "PluginError",
    "PluginWarning",
    "CompileWarning",
    "__version__",
]


def list_losses(pattern: str = "*") -> list[LossInfo | RecipeInfo]:
    """Registered losses whose name or alias matches ``pattern`` (wildcards), naturally sorted."""
    return get_registry().list(pattern)


def list_plugins() -> list[PluginInfo]:
    """Every plugin found, with its distribution, version, status and losses."""
    return get_registry().plugins()


def describe_loss(name: str, registry: Registry | None = None) -> dict[str, Any]:
    """Name, plugin, modes, summary and the parameters (type, default, rule) of one loss, JSON-able."""
    return describe((registry or get_registry()).resolve(name))
