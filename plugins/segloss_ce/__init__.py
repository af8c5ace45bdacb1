"""Softmax cross-entropy: ``-sum_c w_c t'_c log p_c`` per pixel, then the weighted mean.

``t' = (1 - ls) t + ls / C`` with ``ls = label_smoothing``; ``w`` = ``class_weights``
(1 by default). As ``torch.nn.functional.cross_entropy``: with class ids the mean divides by
the summed weights ``w_y`` of the valid pixels; with soft targets by the number of pixels.
Multiclass mode only (``bce`` is the binary and multilabel form).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, LossParams, functional_loss, hookimpl, per_class, safe_ratio

__all__ = ["CEParams", "ce", "ce_loss"]

MODES = ("multiclass",)


class CEParams(LossParams):
    class_weights: list[float] | None = Field(
        None, description="weight of each class, >= 0 (one per class)", json_schema_extra=per_class()
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ls in [0, 1): mixes the target with uniform 1/C")

    @field_validator("class_weights")
    @classmethod
    def _weights_ok(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not math.isfinite(w) or w < 0 for w in v) or sum(v) <= 0):
            raise ValueError(f"class_weights must be a non-empty list of finite values >= 0, not all 0 (got {v})")
        return v


def ce(inp: Inputs, params: CEParams) -> Tensor:
    """Cross-entropy from normalised inputs; a 0-dim tensor."""
    t = inp.target
    C = inp.num_classes
    ls = params.label_smoothing
    soft = t * (1 - ls) + ls / C if ls > 0 else t
    if params.class_weights is None:
        return inp.pixel_mean(-(soft * inp.log_prob).sum(1, keepdim=True))
    cw = params.class_weights
    if inp.hard:  # the weighted mean does not depend on the scale: bring tiny weights to 1 on the host
        cw = [x / max(cw) for x in cw]
    w = torch.tensor(cw, dtype=t.dtype, device=t.device).view(1, C, *([1] * (t.dim() - 2)))
    per_pixel = -(w * soft * inp.log_prob).sum(1, keepdim=True)
    if not inp.hard:
        return inp.pixel_mean(per_pixel)
    den = inp.masked((w * t).sum(1, keepdim=True)).sum()
    return safe_ratio(inp.masked(per_pixel).sum(), den, empty=0.0)


def ce_loss(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
    """Cross-entropy of ``logits`` (N, C, *S) against class ids (N, *S) or soft targets (N, C, *S)."""
    kwargs.setdefault("mode", "multiclass")
    return functional_loss("ce", ce, CEParams, MODES, logits, target, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("ce", ce, params=CEParams, aliases=("cross_entropy",), modes=MODES,
             summary="softmax cross-entropy, class_weights, label_smoothing")
