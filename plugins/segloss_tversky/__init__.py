"""Tversky loss (Salehi et al. 2017, arXiv 1706.05721): ``1 - TI`` per class, then the class mean.

::

    TI_c = (I_c + s) / (I_c + alpha * FP_c + beta * FN_c + s)
    FP_c = P_c - I_c = sum(p (1 - t)),   FN_c = T_c - I_c = sum((1 - p) t)

with ``I = sum(p t)``, ``P = sum(p)``, ``T = sum(t)`` over the valid pixels of each class
(shared with dice and iou through ``inp.region_stats``): over the batch, or per sample with
``per_image=True``. **alpha weighs false positives and beta false negatives** (Salehi's
letters; Abraham & Khan 2019 and some code swap them). beta > alpha favours recall, which is
what small structures usually need. ``alpha = beta = 0.5`` is the Dice loss (with
smoothing 2s), ``alpha = beta = 1`` the IoU loss. Defaults: alpha = 0.3, beta = 0.7 (Salehi's best
setting), smooth s = 1.

Modes: binary, multiclass (softmax), multilabel (sigmoid); ``class_weights`` and
``include_background`` act on the mean over classes. Empty masks: prediction and target both
empty give 0 (any s >= 0); an empty target with a non-empty prediction gives
``1 - s / (alpha P + s)``, close to 1.

Peers: ``monai.losses.TverskyLoss(alpha, beta, smooth_nr=s, smooth_dr=s, batch=True)`` is
this loss (same letters); ``kornia.losses.tversky_loss`` is ``per_image=True`` with s = 0,
but leaves classes absent from an image out of its mean (here they count, with the value above).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook, safe_ratio

__all__ = ["TverskyParams", "tversky", "tversky_index", "tversky_loss"]


class TverskyParams(RegionParams):
    alpha: float = Field(0.3, ge=0, le=1e6, description="weight of false positives FP = P - I; in [0, 1e6]")
    beta: float = Field(0.7, ge=0, le=1e6, description="weight of false negatives FN = T - I; in [0, 1e6]")
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to numerator and denominator; >= 0 and finite; "
                          "<= 1e6 (larger gives about 0 for any input)")

    @model_validator(mode="after")
    def _not_both_zero(self) -> TverskyParams:
        if self.alpha + self.beta <= 0:
            raise ValueError("alpha + beta must be > 0 (with both 0 the index is 1 for any prediction)")
        return self


def tversky_index(inter: Tensor, p_sum: Tensor, t_sum: Tensor, alpha: float, beta: float, smooth: float) -> Tensor:
    """``(I + s) / (I + alpha (P - I) + beta (T - I) + s)``, 1 where the denominator is 0."""
    fp = (p_sum - inter).clamp_min(0)
    fn = (t_sum - inter).clamp_min(0)
    return safe_ratio(inter + smooth, inter + alpha * fp + beta * fn + smooth, empty=1.0)


def tversky(inp: Inputs, params: TverskyParams) -> Tensor:
    r"""Tversky loss, per class then the mean over classes; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_c \Big(1 - \frac{I_c + s}{I_c + \alpha\,\mathrm{FP}_c + \beta\,\mathrm{FN}_c + s}\Big),
        \quad \mathrm{FP}_c = \sum p (1 - t),\ \mathrm{FN}_c = \sum (1 - p) t

    with ``I_c = sum p t`` and the sums over the batch and the valid pixels of class ``c``,
    ``p`` the sigmoid (binary, multilabel) or softmax (multiclass) and ``t`` the target.

    Shapes (plain function ``tversky_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor in [0, 1].
    Parameters (``TverskyParams``):
        alpha: weight of the false positives, default 0.3.
        beta: weight of the false negatives, default 0.7.
        smooth: ``s`` >= 0, default 1.
        per_image: sums per sample, then the mean over samples (default False).
        class_weights: weights of the mean over classes (multiclass, multilabel).
        include_background: multiclass only; False leaves class 0 out (default True).
        sync: ``"global"`` sums the statistics over the DistributedDataParallel ranks.
    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): binary, 1D, p = (0.5, 0.881)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> round(tversky_loss(logits, target).item(), 4)  # I = 0.881, FP = 0.5, FN = 0.119
        0.1104
        >>> round(tversky_loss(logits, target, alpha=1.0, beta=1.0).item(), 4)  # the IoU loss
        0.2477
    """
    inter, p_sum, t_sum = inp.region_stats(params.per_image, params.sync)
    per_class = 1 - tversky_index(inter, p_sum, t_sum, params.alpha, params.beta, params.smooth)
    return inp.class_mean(per_class, params)


tversky_loss = Loss("tversky", tversky, TverskyParams,
                    summary="1 - (I + s) / (I + alpha FP + beta FN + s), alpha on FP, beta on FN; per class then mean")

register_losses = losses_hook(tversky_loss)
