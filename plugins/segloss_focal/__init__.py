"""Focal loss (Lin et al. 2017, arXiv 1708.02002), per pixel.

Binary and multilabel (sigmoid per element)::

    FL = mean(alpha_t * (1 - p_t)^gamma * BCE),   p_t = p t + (1 - p)(1 - t),
    alpha_t = a_c t + (1 - a_c)(1 - t)            (alpha = None: alpha_t = 1)

Multiclass (softmax), per pixel summed over classes, then the mean over pixels::

    FL = mean_pixels(-sum_c a_c t_c (1 - p_c)^gamma log p_c)

``alpha`` is one number or a list of one value per class (the length is checked against C at
call time; binary mode: a list of one):

- a scalar ``alpha``: sigmoid modes ``a_c = alpha`` for every channel; multiclass
  ``a_0 = 1 - alpha`` (background), ``a_c = alpha`` for c > 0 (MONAI's convention);
- a list ``[a_0, ..., a_{C-1}]``: sigmoid modes weigh the positives of channel c by ``a_c``
  and its negatives by ``1 - a_c`` (the scalar rule per channel, so ``[alpha] * C`` is the
  scalar ``alpha``); multiclass weighs class c by ``a_c`` (as MONAI's
  ``FocalLoss(alpha=[...], use_softmax=True)``; ``[1 - alpha, alpha, ...]`` is the scalar).

MONAI's multiclass value averages over the class axis too, so it is this one divided by C.
MONAI's sigmoid list form weighs negatives by 1 instead of ``1 - a_c``. Not the seed's
formula, which applied the focal term to the batch-mean BCE and so focused on nothing.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, per_class

__all__ = ["FocalParams", "focal", "focal_loss"]

def _alpha_rule(v: Any) -> str | None:
    """The rule a number for alpha breaks, or None (non-numbers are left to pydantic's type check)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if not math.isfinite(v):
        return "must be finite"
    if v < 0:
        return "must be >= 0"
    if v > 1:
        return "must be <= 1"
    return None


_Unit = Annotated[float, Field(ge=0, le=1)]


class FocalParams(LossParams):
    alpha: _Unit | list[_Unit] | None = Field(
        0.25,
        description="weight of positives in [0, 1]: one value, or a list of one per class "
        "(multiclass: the weight of each class); None disables weighting",
        json_schema_extra=per_class(),
    )
    gamma: float = Field(2.0, ge=0, le=100, description="focusing exponent in [0, 100] (0 gives weighted BCE/CE)")

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha_ok(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError(
                    "alpha must be a number in [0, 1], a non-empty list of one per class, or None (got [])"
                )
            if any(_alpha_rule(a) is not None for a in v):
                raise ValueError(f"alpha must hold finite values in [0, 1], one per class (got {list(v)!r})")
            return list(v)
        rule = _alpha_rule(v)
        if rule is not None:
            raise ValueError(f"alpha {rule} (got {v!r})")
        return v


def _modulator(one_minus_pt: Tensor, gamma: float) -> Tensor:
    # clamp: rounding can push 1 - p_t a hair below 0; for gamma < 1 the pow's slope at 0 is infinite
    if gamma == 2.0:
        return one_minus_pt * one_minus_pt  # the default; no clamp needed for an even power
    base = one_minus_pt.clamp_min(1e-12 if gamma < 1 else 0.0)
    return base**gamma


def _class_view(values: list[float], t: Tensor) -> Tensor:
    """A per-class list as a (1, C, 1, ...) tensor broadcasting against ``t`` (N, C, *S)."""
    return torch.tensor(values, dtype=t.dtype, device=t.device).view(1, -1, *([1] * (t.dim() - 2)))


def focal(inp: Inputs, params: FocalParams) -> Tensor:
    r"""Focal loss of Lin et al. 2017, per pixel; a 0-dim tensor.

    Sigmoid modes (binary, multilabel), per element:

    .. math::

        L = \operatorname{mean}\big(\alpha_t (1 - p_t)^\gamma \operatorname{BCE}\big),\quad
        p_t = p t + (1 - p)(1 - t),\quad \alpha_t = a_c t + (1 - a_c)(1 - t)

    Multiclass (softmax), summed over classes per pixel, then the mean over pixels:

    .. math::

        L = \operatorname{mean}_{pixels}\Big(-\sum_c a_c t_c (1 - p_c)^\gamma \log p_c\Big)

    Shapes (plain function ``focal_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``FocalParams``):
        alpha: in [0, 1], default 0.25; a list of one per class (C entries; binary: one);
            None disables the weighting (see the module docstring for the multiclass rule).
        gamma: focusing exponent in [0, 100], default 2; 0 gives the (weighted) BCE or CE.

    Example:
        >>> import torch
        >>> from segloss_focal import focal_loss
        >>> logits = torch.tensor([[[-1.0, 0.0, 2.0, 3.0]]])  # (N=1, C=1, 4): binary, 1D
        >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> round(focal_loss(logits, target).item(), 4)
        0.0369
        >>> round(focal_loss(logits, target, alpha=None, gamma=0.0).item(), 4)  # the BCE
        0.2955
    """
    t, p, gamma, alpha = inp.target, inp.prob, params.gamma, params.alpha
    C = inp.num_classes  # a list alpha has C entries: the core checks it before the call
    if inp.mode == "multiclass":
        loss = -(t * inp.log_prob)
        if gamma > 0:
            loss = loss * _modulator(1 - p, gamma)
        if alpha is not None:
            weights = alpha if isinstance(alpha, list) else [1 - alpha] + [alpha] * (C - 1)
            loss = loss * _class_view(weights, t)
        return inp.pixel_mean(loss.sum(1, keepdim=True))
    # alpha_t (1 - p_t)^gamma bce, 1 - p_t = p + t - 2 p t: the core's shared element (closed-form backward eager)
    return inp.focal_mean(gamma, alpha)  # pixel_mean(focal_elements(...)), eager without the per-element tensor


focal_loss = Loss("focal", focal, FocalParams,
                  summary="per-pixel focal loss of Lin et al. 2017: alpha_t (1 - p_t)^gamma BCE")

register_losses = losses_hook(focal_loss)
