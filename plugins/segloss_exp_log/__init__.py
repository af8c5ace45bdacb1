"""Exponential logarithmic loss (Wong, Moradi, Tang and Syeda-Mahmood, "3D Segmentation with
Exponential Logarithmic Loss for Highly Unbalanced Object Sizes", MICCAI 2018, arXiv 1809.00076),
eqs. (2)-(5) of the paper::

    L_Exp   = w_dice * L_Dice + w_cross * L_Cross
    L_Dice  = mean_c (-ln Dice_c)^gamma_dice,   Dice_c = (2 I_c + eps) / (P_c + T_c + eps)
    L_Cross = mean_pixels sum_l t_l w_l (-ln p_l)^gamma_cross,   w_l = (sum_k f_k / f_l)^0.5

``I``, ``P``, ``T``: the soft counts of ``inp.region_stats`` (``I = sum p t`` over the valid
pixels) per class, over the batch (``per_image=True``: per sample, then the mean); ``f_k``:
the frequency of label k, by default counted in the batch's (valid) target (``f_k = T_k``),
or fixed with ``label_frequencies`` (e.g. counted over the training set). A label absent from
the batch never weighs a pixel. Multiclass (softmax over the C labels, the paper's setting)
and binary (the two labels background ``1 - p`` and foreground ``p``).

Defaults, the paper's: ``w_dice = 0.8``, ``w_cross = 0.2``, ``gamma_dice = gamma_cross = 0.3``
(the values of its experiments), ``eps = smooth = 1`` (its pseudocount for additive smoothing).
``gamma_dice = gamma_cross = 1`` is ``-ln Dice`` plus the weighted cross-entropy.

Empty masks: nothing valid gives 0 (every Dice is 1); both empty (a confident all-background
prediction of an all-background target) gives about 0; an empty target with a confident
foreground prediction has Dice_fg = eps / (P + eps) and Dice_bg close to 0: a large loss.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, per_class

__all__ = ["ExpLogParams", "exp_log", "exp_log_loss"]


class ExpLogParams(LossParams):
    w_dice: float = Field(0.8, ge=0, description="weight of the exponential logarithmic Dice term; >= 0")
    w_cross: float = Field(0.2, ge=0, description="weight of the exponential weighted cross-entropy term; >= 0")
    gamma_dice: float = Field(0.3, ge=0, description="exponent of -ln Dice_c; >= 0")
    gamma_cross: float = Field(0.3, ge=0, description="exponent of -ln p_l; >= 0")
    smooth: float = Field(1.0, gt=0, description="eps, the pseudocount added to the Dice numerator and denominator; "
                          "> 0")
    per_image: bool = Field(False, description="Dice per sample, then the mean; otherwise over the whole batch")
    label_frequencies: list[float] | None = Field(
        None, description="f_k, one per label (binary: [background, foreground]), > 0; None: counted in the batch",
        json_schema_extra=per_class(),
    )

    @field_validator("label_frequencies")
    @classmethod
    def _freq_ok(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(f <= 0 or not math.isfinite(f) for f in v)):
            raise ValueError(f"label_frequencies must be a non-empty list of finite values > 0 (got {v})")
        return v


def _safe_pow(x: Tensor, e: float) -> Tensor:
    """``x ** e`` for x >= 0 with a finite gradient at 0 (0 there) when e < 1."""
    if e == 0:
        return torch.ones_like(x)
    if e >= 1:
        return x.clamp_min(0) ** e
    return torch.where(x > 0, x.clamp_min(torch.finfo(x.dtype).tiny) ** e, torch.zeros_like(x))


def _labels(inp: Inputs) -> tuple[Tensor, Tensor]:
    """(target, -log prob), one channel per label: binary mode as (background, foreground).

    The binary background target is 1 at ignored pixels: ``inp.pixel_mean`` and ``inp.masked``
    give them weight 0 wherever it is used.
    """
    if inp.mode == "multiclass":
        return inp.target, -inp.log_prob
    t = inp.target
    return torch.cat([1 - t, t], 1), -torch.cat([inp.log1m_prob, inp.log_prob], 1)


def _counts(inp: Inputs, per_image: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(I, P, T) per label, (N, C) or (C,); binary mode adds the background from the foreground counts."""
    inter, p_sum, t_sum = inp.region_stats(per_image)
    if inp.mode == "multiclass":
        return inter, p_sum, t_sum
    valid = torch.ones_like(inp.logits[:, :1]) if inp.mask is None else inp.mask.expand_as(inp.logits[:, :1])
    n = inp.class_sums(valid, per_image)
    bg = (n - p_sum - t_sum + inter, n - p_sum, n - t_sum)
    return tuple(torch.cat([b, f], -1) for b, f in zip(bg, (inter, p_sum, t_sum)))  # type: ignore[return-value]


def exp_log(inp: Inputs, params: ExpLogParams) -> Tensor:
    r"""Exponential logarithmic loss (Wong et al. 2018), eqs. (2)-(5); a 0-dim tensor.

    .. math::

        L = w_{dice} \operatorname{mean}_c (-\ln \mathrm{Dice}_c)^{\gamma_{dice}}
          + w_{cross} \operatorname{mean}_{pixels} \sum_l t_l w_l (-\ln p_l)^{\gamma_{cross}},\quad
        \mathrm{Dice}_c = \frac{2 I_c + \epsilon}{P_c + T_c + \epsilon},\quad
        w_l = \Big(\frac{\sum_k f_k}{f_l}\Big)^{1/2}

    ``f_k`` the frequency of label ``k`` (counted in the batch's valid target unless
    ``label_frequencies`` is given); binary mode uses the two labels ``1 - p`` and ``p``.

    Shapes (plain function ``exp_log_loss(logits, target, mode="multiclass")``):
        - multiclass (the default): logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``ExpLogParams``):
        w_dice, w_cross: weights of the two terms, >= 0, defaults 0.8 and 0.2.
        gamma_dice, gamma_cross: exponents >= 0, default 0.3 each.
        smooth: ``eps`` > 0, default 1.
        per_image: Dice per sample, then the mean (default False).
        label_frequencies: ``f_k``, one per class, > 0; None (default) counts them in the batch.

    Example:
        >>> import torch
        >>> from segloss_exp_log import exp_log_loss
        >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # (N=1, C=3, 2)
        >>> target = torch.tensor([[0, 2]])                                   # class ids
        >>> round(exp_log_loss(logits, target).item(), 4)
        0.8194
    """
    t, nll = _labels(inp)
    C = t.shape[1]
    inter, p_sum, t_sum = _counts(inp, params.per_image)
    s = params.smooth
    dice = (2 * inter + s) / (p_sum + t_sum + s)
    l_dice = _safe_pow(-torch.log(dice.clamp(max=1.0)), params.gamma_dice).mean(-1).mean()
    shape = (1, C, *([1] * (t.dim() - 2)))
    if params.label_frequencies is not None:
        f = torch.tensor(params.label_frequencies, dtype=t.dtype, device=t.device)
    else:
        f = inp.masked(t).sum(dim=(0, *inp.spatial_dims))  # label counts of the valid target
    w = torch.where(f > 0, (f.sum() / torch.where(f > 0, f, torch.ones_like(f))).sqrt(), torch.zeros_like(f))
    cross = (t * w.view(shape) * _safe_pow(nll, params.gamma_cross)).sum(1, keepdim=True)
    l_cross = inp.pixel_mean(cross)
    return params.w_dice * l_dice + params.w_cross * l_cross


exp_log_loss = Loss("exp_log", exp_log, ExpLogParams, modes=("binary", "multiclass"), default_mode="multiclass",
                    summary="exponential logarithmic loss (Wong et al. 2018): w_dice E[(-ln Dice)^g] "
                    "+ w_cross E[w_l (-ln p_l)^g]")

register_losses = losses_hook(exp_log_loss)
