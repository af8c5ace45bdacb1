"""Matthews correlation coefficient loss ``1 - MCC`` from soft counts, per class, then the mean.

::

    TP = I + s,  FP = P - I,  FN = T - I,  TN = n - P - T + I + s
    MCC = (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))
    L   = mean_c (1 - MCC_c)                                          in [0, 2]

``I``, ``P``, ``T`` as in dice (shared ``inp.region_stats``), ``n`` the number of valid
pixels of the class (over the batch; per sample with ``per_image=True``). The smoothing s
adds one virtual correctly found foreground pixel and one virtual correct background pixel,
which makes MCC defined for every input: without it an empty target makes ``TP + FN = 0``
and MCC 0/0 whatever the prediction. With s > 0 a perfect prediction gives exactly 0, and an
empty target with prediction mass P gives ``1 - sqrt(s (n - P + s) / ((P + s)(n + s)))``,
which falls to 0 as P does (a gradient towards the empty prediction). With s = 0 the plain
soft MCC; where its denominator is 0 MCC is taken as 0 (scikit-learn's convention), loss 1.

Defaults: smooth s = 1. Modes: binary, multiclass (one class against the rest), multilabel;
``class_weights`` and ``include_background`` act on the mean over classes. Empty masks: both
empty give 0 (s > 0); an empty target with a non-empty prediction gives the value above,
close to 1 when P >> s.

Peer: ``monai.losses.MCCLoss`` with ``smooth_nr = smooth_dr = 0`` (and ``batch=True``) is
this loss at s = 0. With its defaults (``smooth_dr = 1e-5`` under the square root) an empty
target gives ``1 - 0`` for any prediction, with zero gradient.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook

__all__ = ["MCCParams", "mcc", "mcc_loss", "valid_count"]


class MCCParams(RegionParams):
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to TP and to TN; >= 0 and finite; "
                          "<= 1e6 (larger gives about 0 for any input)")


def valid_count(inp: Inputs, per_image: bool, sync: str = "local") -> Tensor | float:
    """Valid pixels per class: a number, or a tensor broadcasting to the (C,) / (N, C) class sums."""
    n: Tensor
    if inp.mask is None:
        spatial = math.prod(inp.logits.shape[2:])
        count = float(spatial if per_image else spatial * inp.logits.shape[0])
        if sync == "local":
            return count
        n = torch.full((1,), count, dtype=inp.logits.dtype, device=inp.logits.device)
    else:
        n = inp.class_sums(inp.mask, per_image)
    if sync != "local":
        from segloss_registry.distributed import sync_sum

        (n,) = sync_sum((n,), sync, "mcc")
    return n


def mcc(inp: Inputs, params: MCCParams) -> Tensor:
    r"""Matthews correlation loss ``1 - MCC`` of soft counts, per class then the mean; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_c \Big(1 - \frac{TP \cdot TN - FP \cdot FN}
            {\sqrt{(TP + FP)(TP + FN)(TN + FP)(TN + FN)}}\Big)

    with ``TP = I + s``, ``FP = P - I``, ``FN = T - I``, ``TN = n - P - T + I + s`` per class
    (``I``, ``P``, ``T`` as in dice, ``n`` the valid pixels); MCC is 0 where the root is 0.

    Shapes (plain function ``mcc_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor in [0, 2].
    Parameters (``MCCParams``):
        smooth: ``s`` >= 0 added to TP and TN, default 1.
        per_image: sums per sample, then the mean over samples (default False).
        class_weights: weights of the mean over classes (multiclass, multilabel).
        include_background: multiclass only; False leaves class 0 out (default True).
        sync: ``"global"`` sums the statistics over the DistributedDataParallel ranks.
    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): binary, 1D, p = (0.5, 0.881)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> round(mcc_loss(logits, target).item(), 4)  # TP = 1.881, FP = 0.5, FN = 0.119, TN = 1.5
        0.2967
    """
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    n = valid_count(inp, params.per_image, params.sync)
    s = params.smooth
    tp = inter + s
    fp = (p_sum - inter).clamp_min(0)
    fn = (t_sum - inter).clamp_min(0)
    tn = (n - p_sum - t_sum + inter).clamp_min(0) + s
    a = (tp + fp) * (tp + fn)  # two factors each, so that the products stay well inside float32
    b = (tn + fp) * (tn + fn)
    ok = (a > 0) & (b > 0)
    one = torch.ones_like(a)
    den = torch.sqrt(torch.where(ok, a, one)) * torch.sqrt(torch.where(ok, b, one))
    score = torch.where(ok, (tp * tn - fp * fn) / den, torch.zeros_like(a))
    return inp.class_mean(1 - score, params)


mcc_loss = Loss("mcc", mcc, MCCParams,
                summary="1 - Matthews correlation of soft TP/FP/FN/TN per class (s added to TP and TN), then mean")

register_losses = losses_hook(mcc_loss)
