"""Binary cross-entropy from logits: ``mean(-(w t log p + (1 - t) log(1 - p)))``.

``log p`` and ``log(1 - p)`` come from the logits (stable for any logit, safe under
autocast), ``w`` is ``pos_weight`` (1 by default; one value, or one per channel). The mean
runs over every valid element. Binary and multilabel modes (use ``ce`` for multiclass).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, per_class

__all__ = ["BCEParams", "bce", "bce_loss"]


class BCEParams(LossParams):
    pos_weight: float | list[float] | None = Field(
        None, description="weight of positive targets, in (0, 1e6]: one value or one per channel",
        json_schema_extra=per_class(),
    )

    @field_validator("pos_weight")
    @classmethod
    def _positive(cls, v: float | list[float] | None) -> float | list[float] | None:
        values = v if isinstance(v, list) else [] if v is None else [v]
        if isinstance(v, list) and not v:
            raise ValueError("pos_weight must not be an empty list")
        if any(not math.isfinite(x) or x <= 0 or x > 1e6 for x in values):
            raise ValueError(f"pos_weight must be in (0, 1e6] (got {v}); larger weights overflow float32 sums")
        return v


def bce(inp: Inputs, params: BCEParams) -> Tensor:
    r"""Binary cross-entropy from logits, the mean over the valid elements; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}\big(-(w\, t \log p + (1 - t) \log(1 - p))\big),\quad p = \sigma(x)

    ``log p`` and ``log(1 - p)`` are computed from the logits ``x`` (finite for any logit);
    ``w`` is ``pos_weight`` (1 when None), one value or one per channel.

    Shapes (plain function ``bce_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``BCEParams``):
        pos_weight: weight of the positive targets in (0, 1e6]: one number, or a list of one
            per channel (C entries in multilabel mode); None (default) weighs them 1.

    Example:
        >>> import torch
        >>> from segloss_bce import bce_loss
        >>> logits = torch.tensor([[[-1.0, 0.0, 2.0, 3.0]]])  # (N=1, C=1, 4): binary, 1D
        >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> round(bce_loss(logits, target).item(), 4)
        0.2955
        >>> round(bce_loss(logits, target, pos_weight=2.0).item(), 4)
        0.3394
    """
    t = inp.target
    pw = params.pos_weight
    if pw is None:
        return inp.bce_mean()  # pixel_mean(bce_elements()), eager without the per-element tensor
    pos = t * inp.log_prob
    w = torch.tensor(pw if isinstance(pw, list) else [pw], dtype=t.dtype, device=t.device)
    pos = pos * w.view(1, -1, *([1] * (t.dim() - 2)))
    return inp.pixel_mean(-(pos + (1 - t) * inp.log1m_prob))


bce_loss = Loss("bce", bce, BCEParams, modes=("binary", "multilabel"),
                summary="binary cross-entropy from logits, pos_weight",
                hints={"multiclass": "use 'ce' for multiclass targets"})

register_losses = losses_hook(bce_loss)
