"""IoU (Jaccard) loss: ``1 - (I + s) / (U + s)`` with ``U = P + T - I``, per class, then the mean.

Sums as in dice (per class over the batch; ``per_image=True`` per sample; ``sync="global"``
over the global batch of all DDP ranks). Empty masks:
both empty give 0; an empty target with a non-empty prediction gives ``1 - s / (P + s)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, RegionParams, functional_loss, hookimpl, safe_ratio

__all__ = ["IoUParams", "iou", "iou_loss"]

MODES = ("binary", "multiclass", "multilabel")


class IoUParams(RegionParams):
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to intersection and union; >= 0 and finite; <= 1e6 (larger gives about 0 for any input)")


def iou(inp: Inputs, params: IoUParams) -> Tensor:
    """IoU loss from normalised inputs; a 0-dim tensor."""
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    s = params.smooth
    per_class = 1 - safe_ratio(inter + s, p_sum + t_sum - inter + s)
    return inp.class_mean(per_class, params)


def iou_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """IoU loss of ``logits`` (N, C, *S) against ``target``; see the module docstring."""
    return functional_loss("iou", iou, IoUParams, MODES, logits, target, mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("iou", iou, params=IoUParams, aliases=("jaccard",), modes=MODES,
             summary="1 - (I + s) / (U + s), U = P + T - I, per class then mean")
