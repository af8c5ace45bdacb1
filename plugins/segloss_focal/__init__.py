"""Focal loss (Lin et al. 2017, arXiv 1708.02002), per pixel.

Binary and multilabel (sigmoid per element)::

    FL = mean(alpha_t * (1 - p_t)^gamma * BCE),   p_t = p t + (1 - p)(1 - t),
    alpha_t = alpha t + (1 - alpha)(1 - t)        (alpha = None: alpha_t = 1)

Multiclass (softmax), per pixel summed over classes, then the mean over pixels::

    FL = mean_pixels(-sum_c a_c t_c (1 - p_c)^gamma log p_c),  a_0 = 1 - alpha, a_c = alpha (c > 0)

The multiclass alpha convention is MONAI's (background weighted 1 - alpha); MONAI then also
averages over the class axis, so its value is this one divided by C. Not the seed's formula,
which applied the focal term to the batch-mean BCE and so focused on nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, LossParams, functional_loss, hookimpl

__all__ = ["FocalParams", "focal", "focal_loss"]

MODES = ("binary", "multiclass", "multilabel")


class FocalParams(LossParams):
    alpha: float | None = Field(0.25, ge=0, le=1, description="weight of positives in [0, 1]; None disables weighting")
    gamma: float = Field(2.0, ge=0, description="focusing exponent, >= 0 (0 gives weighted BCE/CE)")


def _modulator(one_minus_pt: Tensor, gamma: float) -> Tensor:
    # clamp: rounding can push 1 - p_t a hair below 0; for gamma < 1 the pow's slope at 0 is infinite
    if gamma == 2.0:
        return one_minus_pt * one_minus_pt  # the default; no clamp needed for an even power
    base = one_minus_pt.clamp_min(1e-12 if gamma < 1 else 0.0)
    return base**gamma


def focal(inp: Inputs, params: FocalParams) -> Tensor:
    """Focal loss from normalised inputs; a 0-dim tensor."""
    t, p, gamma, alpha = inp.target, inp.prob, params.gamma, params.alpha
    if inp.mode == "multiclass":
        loss = -(t * inp.log_prob)
        if gamma > 0:
            loss = loss * _modulator(1 - p, gamma)
        if alpha is not None:
            C = inp.num_classes
            a = torch.tensor([1 - alpha] + [alpha] * (C - 1), dtype=t.dtype, device=t.device)
            loss = loss * a.view(1, C, *([1] * (t.dim() - 2)))
        return inp.pixel_mean(loss.sum(1, keepdim=True))
    loss = inp.bce_elements()  # -(t log p + (1 - t) log(1 - p)), shared with bce
    if gamma > 0:
        one_minus_pt = torch.addcmul(t, p, 1 - 2 * t)  # 1 - p_t = p + t - 2 p t
        loss = loss * _modulator(one_minus_pt, gamma)
    if alpha is not None:
        loss = loss * (t * (2 * alpha - 1) + (1 - alpha))  # alpha_t = alpha t + (1 - alpha)(1 - t)
    return inp.pixel_mean(loss)


def focal_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """Focal loss of ``logits`` against ``target``; see the module docstring."""
    return functional_loss("focal", focal, FocalParams, MODES, logits, target, mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("focal", focal, params=FocalParams, modes=MODES,
             summary="per-pixel focal loss of Lin et al. 2017: alpha_t (1 - p_t)^gamma BCE")
