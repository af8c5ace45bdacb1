"""Generalized Dice loss (Sudre et al. 2017, arXiv 1707.03237): one ratio over all classes.

::

    GDL = 1 - (2 sum_c w_c I_c + s) / (sum_c w_c (P_c + T_c) + s)
    w_c ∝ 1 / T_c^2, normalised so that sum_c w_c = 1

``I``, ``P``, ``T`` as in dice (over the batch per class; ``per_image=True``: weights and
ratio per sample, then the mean over samples). The Sudre weight makes each class count
about equally whatever its size.

Absent classes (``T_c = 0``, weight 1/0): they get **the largest weight of the present
classes** (MONAI's choice), so probability put on a class that is not there is penalised as
much as a miss on the rarest present class; weight 0 would let a multilabel channel predict
anything where its target is empty. When no class is present all weights are equal.
``class_weights`` multiply the Sudre weights; ``include_background=False`` (multiclass)
drops class 0 before weighting.

The weights are normalised to sum 1 (computed as ``(T_min / T_c)^2``, which cannot overflow):
with s = 0 the loss is Sudre's exactly; with s > 0 the smoothing meets weighted sums on the
scale of the class sizes, as in dice. MONAI's ``GeneralizedDiceLoss`` adds its smoothing to
the raw ``1/T^2``-weighted sums (about ``1/T`` in size), where s = 1e-5 is not negligible, and
when no class is present its weights are all 0, so an empty target gives 0 for any
prediction; here that case gives ``1 - s / (mean_c P_c + s)``, close to 1.

Defaults: smooth s = 1. Modes: binary, multiclass, multilabel. Empty masks: both empty give
0 (any s >= 0); an empty target (no class present) with a non-empty prediction gives
``1 - s / (mean_c P_c + s)`` (binary: ``1 - s / (P + s)``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook, safe_ratio

__all__ = ["GeneralizedDiceParams", "generalized_dice", "generalized_dice_loss", "sudre_weights"]


class GeneralizedDiceParams(RegionParams):
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to numerator and denominator; >= 0 and finite; "
                          "<= 1e6 (larger gives about 0 for any input)")


def sudre_weights(t_sum: Tensor) -> Tensor:
    """Weights ``∝ 1 / T_c^2`` over the last axis, summing to 1; absent classes get the largest."""
    present = t_sum > 0
    big = torch.full_like(t_sum, float("inf"))
    t_min = torch.where(present, t_sum, big).amin(-1, keepdim=True)  # inf when no class is present
    ratio = torch.where(present, t_min / torch.where(present, t_sum, torch.ones_like(t_sum)), torch.ones_like(t_sum))
    w = ratio * ratio  # the smallest present class has 1, the largest possible weight
    return w / w.sum(-1, keepdim=True)


def generalized_dice(inp: Inputs, params: GeneralizedDiceParams) -> Tensor:
    r"""Generalized Dice loss (Sudre et al. 2017), one ratio over all classes; a 0-dim tensor.

    .. math::

        L = 1 - \frac{2 \sum_c w_c I_c + s}{\sum_c w_c (P_c + T_c) + s},\quad
        w_c \propto 1 / T_c^2,\ \textstyle\sum_c w_c = 1

    with ``I``, ``P``, ``T`` the soft counts of ``dice``; an absent class (``T_c = 0``) gets
    the largest weight of the present ones, ``class_weights`` multiply the weights.

    Shapes (plain function ``generalized_dice_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``GeneralizedDiceParams``):
        smooth: ``s`` >= 0, default 1.
        per_image: weights and ratio per sample, then the mean over samples (default False).
        class_weights, include_background, sync: as in ``dice``.

    Example:
        >>> import torch
        >>> from segloss_generalized_dice import generalized_dice_loss
        >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # (N=1, C=3, 2)
        >>> target = torch.tensor([[0, 2]])                                   # class ids
        >>> round(generalized_dice_loss(logits, target, mode="multiclass").item(), 4)
        0.2698
    """
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    cw = params.class_weights
    if inp.mode == "multiclass" and not params.include_background:
        inter, p_sum, t_sum = inter[..., 1:], p_sum[..., 1:], t_sum[..., 1:]
        cw = cw[1:] if cw is not None else None
    w = sudre_weights(t_sum)
    if cw is not None:
        w = w * torch.tensor(cw, dtype=w.dtype, device=w.device)
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    s = params.smooth
    score = safe_ratio(2 * (w * inter).sum(-1) + s, (w * (p_sum + t_sum)).sum(-1) + s, empty=1.0)
    return (1 - score).mean()


generalized_dice_loss = Loss("generalized_dice", generalized_dice, GeneralizedDiceParams, aliases=("gdl",),
                             summary="1 - (2 sum w I + s) / (sum w (P + T) + s), w ∝ 1/T^2 (Sudre 2017), "
                             "absent classes the max weight")

register_losses = losses_hook(generalized_dice_loss)
