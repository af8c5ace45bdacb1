"""The error hierarchy. Every error the library raises on purpose is a ``SeglossError``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "SeglossError",
    "UnknownLossError",
    "AmbiguousLossError",
    "SpecSyntaxError",
    "LossConfigError",
    "InputError",
    "PluginError",
    "did_you_mean",
]


class SeglossError(ValueError):
    """Base class of every error raised by segloss-registry."""


class UnknownLossError(SeglossError):
    """A loss name that no loaded plugin registers."""


class AmbiguousLossError(SeglossError):
    """A short loss name that two plugins register; use the qualified ``plugin:name``."""


class SpecSyntaxError(SeglossError):
    """A spec string that is not ``w*name(k=v) + ...``."""


class LossConfigError(SeglossError):
    """Bad hyperparameters, weights or options, found at build time."""


class InputError(SeglossError):
    """Tensors given to a loss that do not fit its mode (shape, dtype, values, device)."""


class PluginError(SeglossError):
    """A plugin that failed to load or registered something invalid."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
