"""Dice loss: ``1 - (2 I + s) / (P + T + s)`` per class, then the mean over classes.

``I = sum(p * t)``, ``P = sum(p)``, ``T = sum(t)`` over the batch and the spatial axes of
each class (``per_image=True``: per sample, then the mean over samples). Binary mode has one
class, so the sums run over the whole batch, as in the seed's flattened DiceLoss.
``sync="global"`` sums ``I``, ``P``, ``T`` over the ranks of the default process group
first (DistributedDataParallel): every rank gets the loss of the global batch.

Empty masks: prediction and target both empty give 0 (for any ``smooth`` >= 0); an empty
target with a non-empty prediction gives ``1 - s / (P + s)``, close to 1.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, RegionParams, functional_loss, hookimpl, safe_ratio

__all__ = ["DiceParams", "dice", "dice_loss", "dice_per_class"]

MODES = ("binary", "multiclass", "multilabel")


class DiceParams(RegionParams):
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to numerator and denominator; >= 0 and finite; <= 1e6 (larger gives about 0 for any input)")


def dice_per_class(inp: Inputs, params: DiceParams) -> Tensor:
    """``1 - (2 I + s) / (P + T + s)`` per class (C,), or per sample and class (N, C)."""
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    s = params.smooth
    return 1 - safe_ratio(2 * inter + s, p_sum + t_sum + s)


def dice(inp: Inputs, params: DiceParams) -> Tensor:
    """Dice loss from normalised inputs; a 0-dim tensor."""
    return inp.class_mean(dice_per_class(inp, params), params)


def dice_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """Dice loss of ``logits`` (N, C, *S) against ``target``; see the module docstring."""
    return functional_loss("dice", dice, DiceParams, MODES, logits, target, mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("dice", dice, params=DiceParams, modes=MODES, summary="1 - (2I + s) / (P + T + s), per class then mean")
