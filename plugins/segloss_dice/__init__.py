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

from typing import Protocol

from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook, safe_ratio

__all__ = ["DiceParams", "dice", "dice_loss", "dice_per_class"]


class DiceParams(RegionParams):
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to numerator and denominator; >= 0 and finite; "
                          "<= 1e6 (larger gives about 0 for any input)")


class _DiceStats(Protocol):
    """What ``dice_per_class`` reads: any params model with these fields (DiceParams, ComboParams, ...)."""

    @property
    def smooth(self) -> float: ...
    @property
    def per_image(self) -> bool: ...
    @property
    def sync(self) -> str: ...


def dice_per_class(inp: Inputs, params: _DiceStats) -> Tensor:
    """``1 - (2 I + s) / (P + T + s)`` per class (C,), or per sample and class (N, C) with ``per_image``."""
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    s = params.smooth
    return 1 - safe_ratio(2 * inter + s, p_sum + t_sum + s)


def dice(inp: Inputs, params: DiceParams) -> Tensor:
    r"""Dice loss, per class then the mean over classes; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_c \Big(1 - \frac{2 I_c + s}{P_c + T_c + s}\Big),\quad
        I_c = \sum p t,\ P_c = \sum p,\ T_c = \sum t

    with the sums over the batch and the valid pixels of class ``c``, ``p`` the sigmoid
    (binary, multilabel) or softmax (multiclass) of the logits and ``t`` the target.

    Shapes (plain function ``dice_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``DiceParams``):
        smooth: ``s`` >= 0, default 1.
        per_image: sums per sample, then the mean over samples (default False).
        class_weights: weights of the mean over classes (multiclass, multilabel).
        include_background: multiclass only; False leaves class 0 out (default True).
        sync: ``"global"`` sums ``I``, ``P``, ``T`` over the DistributedDataParallel ranks.

    Example:
        >>> import torch
        >>> from segloss_dice import dice_loss
        >>> logits = torch.tensor([[[-1.0, 0.0, 2.0, 3.0]]])  # (N=1, C=1, 4): binary, 1D
        >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> round(dice_loss(logits, target).item(), 4)
        0.167
        >>> round(dice_loss(logits, target, smooth=0.0).item(), 4)
        0.2033
    """
    return inp.class_mean(dice_per_class(inp, params), params)


dice_loss = Loss("dice", dice, DiceParams, summary="1 - (2I + s) / (P + T + s), per class then mean")

register_losses = losses_hook(dice_loss)
