"""Focal Tversky loss (Abraham & Khan 2019, arXiv 1810.07842), the exponent per class.

::

    FTL = mean_c (1 - TI_c)^(1/gamma)
    TI_c = (I_c + s) / (I_c + alpha * FP_c + beta * FN_c + s)     (as in ``tversky``)

The exponent is applied to each class's ``1 - TI_c`` **before** the mean over classes, as in
the paper's ``sum_c (1 - TI_c)^(1/gamma)`` (divided by the number of classes so that the
value stays in [0, 1]; ``class_weights`` and ``include_background`` act on that mean).
Implementations that raise the class-mean Tversky loss to the power instead
(segmentation_models_pytorch's ``TverskyLoss(gamma=...)`` computes ``mean(1 - TI)^gamma``)
compute a different loss for more than one class: a poorly segmented small class is not
emphasised over the others.

**alpha weighs false positives and beta false negatives** (the paper writes the same
weights with the letters swapped: its alpha = 0.7 is the weight of false negatives).
Defaults: alpha = 0.3, beta = 0.7, gamma = 4/3 (the paper's), smooth s = 1. The slope of
``x^(1/gamma)`` is ``x^(1/gamma - 1) / gamma``: for gamma > 1 it grows as ``x = 1 - TI_c`` goes
to 0, so classes that are nearly right keep a strong gradient; gamma = 1 is the Tversky loss.

Modes: binary, multiclass, multilabel. Empty masks: both empty give 0 (any s >= 0; to
``1e-9`` for gamma > 1, where ``1 - TI`` is clamped at 1e-12 so that the gradient of the
power stays finite); an empty target with a non-empty prediction gives
``(1 - s / (alpha P + s))^(1/gamma)``, close to 1.
"""

from __future__ import annotations

from pydantic import Field
from segloss_tversky import TverskyParams, tversky_index
from torch import Tensor

from segloss_registry import Inputs, Loss, losses_hook

__all__ = ["FocalTverskyParams", "focal_tversky", "focal_tversky_loss"]


class FocalTverskyParams(TverskyParams):
    gamma: float = Field(4.0 / 3.0, gt=0, description="the per-class loss is (1 - TI)^(1/gamma); > 0")


def focal_tversky(inp: Inputs, params: FocalTverskyParams) -> Tensor:
    r"""Focal Tversky loss (Abraham & Khan 2019), the exponent per class; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_c (1 - TI_c)^{1/\gamma},\quad
        TI_c = \frac{I_c + s}{I_c + \alpha FP_c + \beta FN_c + s},\quad
        FP_c = P_c - I_c,\ FN_c = T_c - I_c

    with ``I``, ``P``, ``T`` the soft counts of ``dice`` (over the batch per class).

    Shapes (plain function ``focal_tversky_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``FocalTverskyParams``):
        alpha: weight of the false positives, default 0.3.
        beta: weight of the false negatives, default 0.7.
        gamma: > 0, default 4/3; the per-class loss is ``(1 - TI)^(1/gamma)`` (1: Tversky).
        smooth: ``s`` >= 0, default 1.
        per_image, class_weights, include_background, sync: as in ``dice``.

    Example:
        >>> import torch
        >>> from segloss_focal_tversky import focal_tversky_loss
        >>> logits = torch.tensor([[[-1.0, 0.0, 2.0, 3.0]]])  # (N=1, C=1, 4): binary, 1D
        >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> round(focal_tversky_loss(logits, target).item(), 4)
        0.19
    """
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    one_minus = 1 - tversky_index(inter, p_sum, t_sum, params.alpha, params.beta, params.smooth)
    power = 1.0 / params.gamma
    # for power < 1 the slope of x^power at 0 is infinite: clamp so a perfect class has a finite gradient
    per_class = one_minus.clamp_min(1e-12 if power < 1 else 0.0) ** power
    return inp.class_mean(per_class, params)


focal_tversky_loss = Loss("focal_tversky", focal_tversky, FocalTverskyParams,
                          summary="mean_c (1 - TI_c)^(1/gamma), the exponent per class (Abraham & Khan 2019), "
                          "gamma = 4/3")

register_losses = losses_hook(focal_tversky_loss)
