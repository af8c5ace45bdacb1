"""Lovasz loss (Berman, Rannen Triki and Blaschko, CVPR 2018, arXiv 1705.08790).

The Lovasz extension of the Jaccard loss ``1 - IoU``, evaluated at per-pixel errors ``e``.
For one set of M pixels (one class, over the batch or over one image)::

    e sorted descending -> e_(1) >= ... >= e_(M),  g the labels in that order
    J_i = 1 - (G - sum_{j<=i} g_j) / (G + sum_{j<=i} (1 - g_j)),   G = sum_j g_j
    L   = sum_i f(e_(i)) (J_i - J_{i-1}),                          J_0 = 0

- binary and multilabel (Lovasz hinge, per channel): ``e = 1 - z (2 t - 1)`` on the logits
  ``z`` and ``f = relu``; with ``from_logits=False`` ``z = log p - log(1 - p)``.
- multiclass (Lovasz softmax): ``e = |t_c - p_c|`` on the softmax, ``f`` the identity.

``per_image=False`` (default): one set per class over the whole batch; ``per_image=True``:
one set per image and class, then the mean over images (Berman's hinge defaults to
per-image, his softmax to the batch; SMP defaults both to the batch, as here).
Classes are averaged with ``class_weights`` (default equal); in multiclass mode
``classes="present"`` (default, Berman's) averages only the classes present in the target
(of the image, with ``per_image``), ``"all"`` every class; ``include_background=False`` drops
class 0. ``ignore_index``: ignored pixels take no part in the sort or the sums (their
error becomes -inf, sorted last, with weight 0), as if they were removed.

Empty masks: a set with no positive pixel has ``J = (1, 1, ...)`` so ``L = f(max e)``: the hinge
gives ``relu(1 + max z)``, 0 when every logit is below -1 (both empty) and ``1 + max z`` > 1
when some pixel is predicted (empty target, non-empty prediction); the softmax form gives
``max p_c`` (only with ``classes="all"``; ``"present"`` skips such a class). A set with no
valid pixel (all ignored), or an image/batch with no class to average, gives 0.

The loss is piecewise linear in ``e``: its gradient jumps where two errors tie, and the
value does not depend on how ties are ordered. ``torch.sort`` and ``cumsum`` trace, so the
loss compiles with ``fullgraph=True``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, model_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook

__all__ = ["LovaszParams", "lovasz", "lovasz_loss", "lovasz_from_errors"]


class LovaszParams(RegionParams):
    classes: Literal["present", "all"] = Field(
        "present",
        description="multiclass: average over the classes present in the target ('present') or all classes ('all')",
    )

    @model_validator(mode="after")
    def _classes_ok(self, info: ValidationInfo) -> LovaszParams:
        if self.sync == "global":
            raise ValueError(
                "sync='global' is not available for lovasz: its sort runs over the pixels of one rank, and a "
                "global Lovasz extension would need every rank's errors; use sync='local' (the default)"
            )
        mode = (info.context or {}).get("mode")
        if mode is not None and mode != "multiclass" and self.classes != "present":
            raise ValueError(
                f"classes='{self.classes}' applies to mode='multiclass' only (the hinge of binary and multilabel "
                f"modes scores every channel); drop it (got mode='{mode}')"
            )
        return self


def lovasz_from_errors(errors: Tensor, labels: Tensor, valid: Tensor | None, hinge: bool) -> Tensor:
    """Lovasz extension of the Jaccard loss per row: errors, labels, valid (R, M) -> (R,).

    ``valid`` is None or 0/1; rows without a valid pixel give 0. ``hinge`` applies relu to the
    sorted errors.
    """
    if valid is not None:
        errors = torch.where(valid > 0, errors, torch.full_like(errors, float("-inf")))
    e_sorted, perm = torch.sort(errors, dim=-1, descending=True)
    g = labels.gather(-1, perm)
    neg = 1 - g
    if valid is not None:
        v = valid.gather(-1, perm)
        g, neg = g * v, neg * v
    total = g.sum(-1, keepdim=True)
    inter = total - g.cumsum(-1)
    union = total + neg.cumsum(-1)  # >= 1 from the first valid pixel on
    jac = 1 - inter / torch.where(union > 0, union, torch.ones_like(union))
    step = torch.cat([jac[..., :1], jac[..., 1:] - jac[..., :-1]], dim=-1)
    if hinge:
        e_sorted = F.relu(e_sorted)
    if valid is not None:
        e_sorted = torch.where(v > 0, e_sorted, torch.zeros_like(e_sorted))
    return (e_sorted * step).sum(-1)


def lovasz(inp: Inputs, params: LovaszParams) -> Tensor:
    r"""Lovasz hinge (binary, multilabel) or Lovasz softmax (multiclass) loss; a 0-dim tensor.

    .. math::

        L = \sum_{i=1}^{M} f(e_{(i)}) \, (J_i - J_{i-1}),\quad
        J_i = 1 - \frac{G - \sum_{j \le i} g_j}{G + \sum_{j \le i} (1 - g_j)},\ J_0 = 0

    per set of M pixels (one class over the batch, or over one image with ``per_image``), with
    the errors ``e`` sorted descending, ``g`` the labels in that order and ``G = sum g``. Hinge:
    ``e = 1 - z (2 t - 1)`` on the logits ``z``, ``f = relu``; softmax: ``e = |t_c - p_c|``,
    ``f`` the identity. The sets are then averaged over classes (and images).

    Shapes (plain function ``lovasz_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``LovaszParams``):
        per_image: one set per image and class, then the mean over images (default False).
        classes: multiclass only; ``"present"`` (default) averages the classes present in the
            target, ``"all"`` every class.
        class_weights: weights of the mean over classes (multiclass, multilabel).
        include_background: multiclass only; False leaves class 0 out (default True).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[1.0, -0.5]]])  # (N=1, C=1, 2): binary, 1D
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> lovasz_loss(logits, target).item()  # e = (2, 1.5), J = (0.5, 1): 2 * 0.5 + 1.5 * 0.5
        1.75
    """
    t = inp.target
    N, C = t.shape[:2]
    if inp.mode == "multiclass":
        errors = (t - inp.prob).abs()
        hinge = False
    else:
        z = inp.logits if inp.from_logits else inp.log_prob - inp.log1m_prob
        errors = 1 - z * (2 * t - 1)
        hinge = True
    valid = None if inp.mask is None else inp.mask.expand_as(t)

    def rows(x: Tensor) -> Tensor:
        # (N, C, *S) -> (N*C, M) per image, or (C, N*M) over the batch
        return x.reshape(N * C, -1) if params.per_image else x.movedim(1, 0).reshape(C, -1)

    per_set = lovasz_from_errors(rows(errors), rows(t), None if valid is None else rows(valid), hinge)
    per_set = per_set.view(N, C) if params.per_image else per_set.view(C)
    present = None
    if inp.mode == "multiclass" and params.classes == "present":
        present = inp.class_sums(t, params.per_image) > 0  # t is 0 at ignored pixels
    return inp.class_mean(per_set, params, present)


lovasz_loss = Loss("lovasz", lovasz, LovaszParams,
                   summary="Lovasz extension of 1 - IoU (Berman et al. 2018): hinge (binary, multilabel), "
                   "softmax (multiclass)")

register_losses = losses_hook(lovasz_loss)
