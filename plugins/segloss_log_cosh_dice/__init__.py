"""Log-cosh Dice loss (Jadon 2020, arXiv 2006.14822): ``log(cosh(L_dice))``.

::

    L_dice = mean_c (1 - (2 I_c + s) / (P_c + T_c + s))       (exactly the ``dice`` loss)
    L      = log(cosh(L_dice))

The log-cosh is applied to the Dice loss after the mean over classes, as the paper defines
it. ``log cosh x`` is about ``x^2 / 2`` near 0 and ``|x| - log 2`` far from it; on Dice's
range [0, 1] it is a smooth, convex reshaping with ``L <= log cosh 1 = 0.4338``, whose
gradient ``tanh(L_dice)`` shrinks as the Dice loss goes to 0.

Defaults: smooth s = 1; ``per_image``, ``class_weights``, ``include_background`` as in dice.
Modes: binary, multiclass, multilabel. Empty masks: both empty give 0 (any s >= 0); an empty
target with a non-empty prediction gives ``log cosh(1 - s / (P + s))``, close to 0.4338.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from segloss_dice import DiceParams, dice
from segloss_registry import Inputs, functional_loss, hookimpl

__all__ = ["LogCoshDiceParams", "log_cosh_dice", "log_cosh_dice_loss"]

MODES = ("binary", "multiclass", "multilabel")


class LogCoshDiceParams(DiceParams):
    """The Dice loss's parameters (smooth, per_image, class_weights, include_background, sync)."""


def log_cosh_dice(inp: Inputs, params: LogCoshDiceParams) -> Tensor:
    """Log-cosh Dice loss from normalised inputs; a 0-dim tensor."""
    return torch.log(torch.cosh(dice(inp, params)))  # dice is in [0, 1]: cosh cannot overflow


def log_cosh_dice_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """Log-cosh Dice loss of ``logits`` (N, C, *S) against ``target``; see the module docstring."""
    return functional_loss("log_cosh_dice", log_cosh_dice, LogCoshDiceParams, MODES, logits, target,
                           mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("log_cosh_dice", log_cosh_dice, params=LogCoshDiceParams, modes=MODES,
             summary="log(cosh(dice loss)) (Jadon 2020), after the class mean")
