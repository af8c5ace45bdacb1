"""Binary cross-entropy from logits: ``mean(-(w t log p + (1 - t) log(1 - p)))``.

``log p`` and ``log(1 - p)`` come from the logits (stable for any logit, safe under
autocast), ``w`` is ``pos_weight`` (1 by default; one value, or one per channel). The mean
runs over every valid element. Binary and multilabel modes (use ``ce`` for multiclass).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, LossParams, functional_loss, hookimpl, per_class

__all__ = ["BCEParams", "bce", "bce_loss"]

MODES = ("binary", "multilabel")


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
    """BCE from normalised inputs; a 0-dim tensor."""
    t = inp.target
    pw = params.pos_weight
    if pw is None:
        return inp.pixel_mean(inp.bce_elements())  # shared with focal
    pos = t * inp.log_prob
    w = torch.tensor(pw if isinstance(pw, list) else [pw], dtype=t.dtype, device=t.device)
    pos = pos * w.view(1, -1, *([1] * (t.dim() - 2)))
    return inp.pixel_mean(-(pos + (1 - t) * inp.log1m_prob))


def bce_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """BCE of ``logits`` against ``target`` in [0, 1]; see the module docstring."""
    return functional_loss("bce", bce, BCEParams, MODES, logits, target, mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("bce", bce, params=BCEParams, modes=MODES, summary="binary cross-entropy from logits, pos_weight")
