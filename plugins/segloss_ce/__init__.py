"""Softmax cross-entropy: ``-sum_c w_c t'_c log p_c`` per pixel, then the weighted mean.

``t' = (1 - ls) t + ls / C`` with ``ls = label_smoothing``; ``w`` = ``class_weights``
(1 by default). As ``torch.nn.functional.cross_entropy``: with class ids the mean divides by
the summed weights ``w_y`` of the valid pixels; with soft targets by the number of pixels.
Multiclass mode only (``bce`` is the binary and multilabel form).
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, check_class_weights, losses_hook, per_class, safe_ratio

__all__ = ["CEParams", "ce", "ce_loss"]


class CEParams(LossParams):
    class_weights: list[float] | None = Field(
        None, description="weight of each class, >= 0 (one per class)", json_schema_extra=per_class()
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ls in [0, 1): mixes the target with uniform 1/C")

    @field_validator("class_weights")
    @classmethod
    def _weights_ok(cls, v: list[float] | None) -> list[float] | None:
        return check_class_weights(v)


def ce(inp: Inputs, params: CEParams) -> Tensor:
    r"""Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``; a 0-dim tensor.

    .. math::

        \ell = -\sum_c w_c t'_c \log p_c,\quad t' = (1 - ls)\, t + ls / C,\quad p = \operatorname{softmax}(x)

    then the mean of ``ell`` over the valid pixels; with class ids and ``class_weights`` the
    sum divided by the summed weights ``w_y`` of the valid pixels (PyTorch's weighted mean).

    Shapes (plain function ``ce_loss(logits, target)``, multiclass mode only):
        - logits ``(N, C, *S)``, C >= 2; target ``(N, *S)`` or ``(N, 1, *S)`` class ids in
          [0, C), or ``(N, C, *S)`` one-hot or soft; ``*S`` 1D, 2D or 3D;
        - returns a 0-dim tensor.

    Parameters (``CEParams``):
        class_weights: ``w``, one per class, finite and >= 0, not all 0; None weighs all 1.
        label_smoothing: ``ls`` in [0, 1), default 0.

    Example:
        >>> import torch
        >>> from segloss_ce import ce_loss
        >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # (N=1, C=3, 2)
        >>> target = torch.tensor([[0, 2]])                                   # (N=1, 2) class ids
        >>> round(ce_loss(logits, target).item(), 4)
        0.8606
        >>> round(ce_loss(logits, target, label_smoothing=0.1).item(), 4)
        0.9273
        >>> round(ce_loss(logits, target, class_weights=[1.0, 1.0, 3.0]).item(), 4)
        1.206
    """
    t = inp.target
    C = inp.num_classes
    ls = params.label_smoothing
    soft = t * (1 - ls) + ls / C if ls > 0 else t
    if params.class_weights is None:
        return -inp.log_prob_mean(soft)  # the sign on the mean: no full-size negation in the backward
    cw = params.class_weights
    if inp.hard:  # the weighted mean does not depend on the scale: bring tiny weights to 1 on the host
        cw = [x / max(cw) for x in cw]
    w = torch.tensor(cw, dtype=t.dtype, device=t.device).view(1, C, *([1] * (t.dim() - 2)))
    if not inp.hard:
        return -inp.log_prob_mean(w * soft)
    per_pixel = -(w * soft * inp.log_prob).sum(1, keepdim=True)
    den = inp.masked((w * t).sum(1, keepdim=True)).sum()
    return safe_ratio(inp.masked(per_pixel).sum(), den, empty=0.0)


ce_loss = Loss("ce", ce, CEParams, modes=("multiclass",), aliases=("cross_entropy",),
               summary="softmax cross-entropy, class_weights, label_smoothing",
               hints={"binary": "use 'bce' for binary and multilabel targets",
                      "multilabel": "use 'bce' for binary and multilabel targets"})

register_losses = losses_hook(ce_loss)
