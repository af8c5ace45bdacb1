"""IoU (Jaccard) loss: ``1 - (I + s) / (U + s)`` with ``U = P + T - I``, per class, then the mean.

Sums as in dice (per class over the batch; ``per_image=True`` per sample; ``sync="global"``
over the global batch of all DDP ranks). Empty masks:
both empty give 0; an empty target with a non-empty prediction gives ``1 - s / (P + s)``.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook, safe_ratio

__all__ = ["IoUParams", "iou", "iou_loss"]


class IoUParams(RegionParams):
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to intersection and union; >= 0 and finite; "
                          "<= 1e6 (larger gives about 0 for any input)")


def iou(inp: Inputs, params: IoUParams) -> Tensor:
    r"""IoU (Jaccard) loss, per class then the mean over classes; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_c \Big(1 - \frac{I_c + s}{U_c + s}\Big),\quad
        U_c = P_c + T_c - I_c,\ I_c = \sum p t,\ P_c = \sum p,\ T_c = \sum t

    with the sums over the batch and the valid pixels of class ``c``, ``p`` the sigmoid
    (binary, multilabel) or softmax (multiclass) of the logits and ``t`` the target.

    Shapes (plain function ``iou_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor in [0, 1].
    Parameters (``IoUParams``):
        smooth: ``s`` >= 0, default 1.
        per_image: sums per sample, then the mean over samples (default False).
        class_weights: weights of the mean over classes (multiclass, multilabel).
        include_background: multiclass only; False leaves class 0 out (default True).
        sync: ``"global"`` sums the statistics over the DistributedDataParallel ranks.
    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): binary, 1D, p = (0.5, 0.881)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> round(iou_loss(logits, target).item(), 4)  # I = 0.881, U = 1.5: 1 - 1.881 / 2.5
        0.2477
    """
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    s = params.smooth
    per_class = 1 - safe_ratio(inter + s, p_sum + t_sum - inter + s)
    return inp.class_mean(per_class, params)


iou_loss = Loss("iou", iou, IoUParams, aliases=("jaccard",),
                summary="1 - (I + s) / (U + s), U = P + T - I, per class then mean")

register_losses = losses_hook(iou_loss)
