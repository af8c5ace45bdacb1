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

import torch
from segloss_dice import DiceParams, dice
from torch import Tensor

from segloss_registry import Inputs, Loss, losses_hook

__all__ = ["LogCoshDiceParams", "log_cosh_dice", "log_cosh_dice_loss"]


class LogCoshDiceParams(DiceParams):
    """The Dice loss's parameters (smooth, per_image, class_weights, include_background, sync)."""


def log_cosh_dice(inp: Inputs, params: LogCoshDiceParams) -> Tensor:
    r"""Log-cosh Dice loss (Jadon 2020): the log-cosh of the Dice loss, after the class mean; a 0-dim tensor.

    .. math::

        L = \log\cosh\Big(\operatorname{mean}_c \Big(1 - \frac{2 I_c + s}{P_c + T_c + s}\Big)\Big)

    the Dice loss inside exactly as ``dice`` computes it (same sums, same parameters).

    Shapes (plain function ``log_cosh_dice_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor in [0, log cosh 1 = 0.4338].
    Parameters (``LogCoshDiceParams``, those of dice):
        smooth: ``s`` >= 0, default 1.
        per_image: sums per sample, then the mean over samples (default False).
        class_weights: weights of the mean over classes (multiclass, multilabel).
        include_background: multiclass only; False leaves class 0 out (default True).
        sync: ``"global"`` sums the statistics over the DistributedDataParallel ranks.
    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): binary, 1D, p = (0.5, 0.881)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> round(log_cosh_dice_loss(logits, target).item(), 4)  # log cosh(1 - 2.762 / 3.381)
        0.0167
    """
    return torch.log(torch.cosh(dice(inp, params)))  # dice is in [0, 1]: cosh cannot overflow


log_cosh_dice_loss = Loss("log_cosh_dice", log_cosh_dice, LogCoshDiceParams,
                          summary="log(cosh(dice loss)) (Jadon 2020), after the class mean")

register_losses = losses_hook(log_cosh_dice_loss)
