"""Combo loss (Taghanaki et al. 2019, arXiv 1805.02798): weighted cross-entropy plus Dice.

::

    L    = alpha * WCE + (1 - alpha) * (1 - DSC)
    WCE  = mean_c mean_pixels -(beta t log p + (1 - beta)(1 - t) log(1 - p))
    DSC  = mean_c (2 I_c + s) / (P_c + T_c + s)

``alpha`` in [0, 1] balances the cross-entropy against the Dice term; ``beta`` in [0, 1]
weighs the positive part of the cross-entropy: **beta > 0.5 penalises false negatives more,
beta < 0.5 false positives** (the paper's reading of its beta). Defaults alpha = 0.5,
beta = 0.5, smooth s = 1. ``p`` is the sigmoid per channel (binary, multilabel), or the
softmax for multiclass, where the cross-entropy is taken one class against the rest with
``log(1 - p_c)`` computed in log space (``log sum_{j != c} p_j``), finite for any logits.
``class_weights`` and ``include_background`` act on both class means; ``per_image`` on the
Dice statistics (the cross-entropy is a mean over pixels either way).

Differences from the paper and from common code, on purpose: the paper writes
``alpha * WCE - (1 - alpha) * sum_c DSC_c``; this uses ``1 - mean_c DSC_c`` so the loss is
>= 0 and 0 at a perfect prediction (the constant changes nothing, the class mean instead of
the sum keeps the balance set by alpha independent of the number of classes). The widely
copied Kaggle ``ComboLoss`` multiplies both cross-entropy parts by its ALPHA (its negatives
get ``ALPHA (1 - ALPHA)``, so at 0.5 it is not neutral), returns ``CE_RATIO * ce -
(1 - CE_RATIO) * dice`` (negative), and clamps probabilities at 1e-7.

Modes: binary, multiclass, multilabel. Empty masks: both empty give 0 (s > 0, up to the
cross-entropy of the near-zero probabilities); an empty target with a non-empty prediction
gives ``alpha * WCE + (1 - alpha)(1 - s / (P + s))``, with ``WCE`` the cross-entropy of the
predicted mass, close to ``1 - alpha`` plus that.
"""

from __future__ import annotations

import torch
from pydantic import Field
from segloss_dice import dice_per_class
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook, safe_ratio

__all__ = ["ComboParams", "combo", "combo_loss", "log1m_softmax"]


class ComboParams(RegionParams):
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the cross-entropy; 1 - alpha weighs 1 - Dice")
    beta: float = Field(
        0.5, ge=0, le=1, description="weight of the positive part of the cross-entropy: > 0.5 penalises FN, < 0.5 FP"
    )
    smooth: float = Field(1.0, ge=0, le=1e6, description="s of the Dice term, added to numerator and denominator; "
                          ">= 0; <= 1e6 (larger gives about 0 for any input)")


def log1m_softmax(log_p: Tensor) -> Tensor:
    """``log(1 - p_c) = log sum_{j != c} p_j`` over axis 1 from log-probabilities, without cancellation."""
    edge = torch.full_like(log_p[:, :1], float("-inf"))
    before = torch.cat([edge, torch.logcumsumexp(log_p, 1)[:, :-1]], 1)  # log sum_{j < c}
    after = torch.cat([torch.logcumsumexp(log_p.flip(1), 1).flip(1)[:, 1:], edge], 1)  # log sum_{j > c}
    return torch.logaddexp(before, after)


def _log1m_prob(inp: Inputs) -> Tensor:
    if inp.mode != "multiclass":
        return inp.log1m_prob
    if inp.from_logits:
        return log1m_softmax(inp.log_prob)
    p = inp.prob  # probabilities given: sum the others (no 1 - p cancellation), clamp for a finite log
    zero = torch.zeros_like(p[:, :1])
    before = torch.cat([zero, torch.cumsum(p, 1)[:, :-1]], 1)
    after = torch.cat([torch.cumsum(p.flip(1), 1).flip(1)[:, 1:], zero], 1)
    return torch.log((before + after).clamp_min(torch.finfo(p.dtype).tiny))


def combo(inp: Inputs, params: ComboParams) -> Tensor:
    r"""Combo loss (Taghanaki et al. 2019), weighted cross-entropy plus Dice; a 0-dim tensor.

    .. math::

        L = \alpha\, \mathrm{WCE} + (1 - \alpha)(1 - \mathrm{DSC}),\quad
        \mathrm{WCE} = \operatorname{mean}_c \operatorname{mean}_{pixels}
            -\big(\beta t \log p + (1 - \beta)(1 - t) \log(1 - p)\big),\quad
        \mathrm{DSC} = \operatorname{mean}_c \frac{2 I_c + s}{P_c + T_c + s}

    Shapes (plain function ``combo_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``
          (the cross-entropy one class against the rest, ``log(1 - p_c)`` in log space);
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``ComboParams``):
        alpha: weight of the cross-entropy in [0, 1], default 0.5 (``1 - alpha`` weighs ``1 - DSC``).
        beta: weight of the positive part of the cross-entropy in [0, 1], default 0.5
            (> 0.5 penalises false negatives, < 0.5 false positives).
        smooth: ``s`` of the Dice term, >= 0, default 1.
        per_image, class_weights, include_background, sync: as in ``dice`` (``per_image`` and
            ``sync`` act on the Dice statistics).

    Example:
        >>> import torch
        >>> from segloss_combo import combo_loss
        >>> logits = torch.tensor([[[-1.0, 0.0, 2.0, 3.0]]])  # (N=1, C=1, 4): binary, 1D
        >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> round(combo_loss(logits, target).item(), 4)
        0.1574
    """
    t, b = inp.target, params.beta
    wce = -(b * t * inp.log_prob + (1 - b) * (1 - t) * _log1m_prob(inp))
    if inp.mask is None:
        ce_per_class = wce.mean(dim=(0, *inp.spatial_dims))
    else:
        m = inp.mask.expand_as(wce) if inp.mask.shape != wce.shape else inp.mask
        ce_per_class = safe_ratio(inp.class_sums(wce * m), inp.class_sums(m), empty=0.0)
    a = params.alpha
    return a * inp.class_mean(ce_per_class, params) + (1 - a) * inp.class_mean(dice_per_class(inp, params), params)


combo_loss = Loss("combo", combo, ComboParams,
                  summary="alpha * beta-weighted CE + (1 - alpha)(1 - Dice) (Taghanaki et al. 2019)")

register_losses = losses_hook(combo_loss)
