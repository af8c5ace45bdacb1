"""Asymmetric unified focal loss (Yeung et al. 2022, Computerized Medical Imaging and Graphics
95:102026; MONAI ``AsymmetricUnifiedFocalLoss``), binary and multiclass.

Class 0 is the background; every other class is a (rare) foreground class. With C classes
(binary mode: the two classes background ``1 - p`` and foreground ``p``)::

    L    = weight * L_aF + (1 - weight) * L_aFT
    L_aF = mean_pixels (1/C) [(1 - delta)(1 - p_0)^gamma CE_0 + delta sum_{c>0} CE_c],  CE_c = -t_c log p_c
    TI_c = (I_c + s) / (I_c + delta FN_c + (1 - delta) FP_c + s),  FN = T - I, FP = P - I
    L_aFT = mean_{n,c} [1 - TI_0 (c = 0),  (1 - TI_c)^(1 - gamma) (c > 0)]

``I``, ``P``, ``T`` are the soft counts of ``inp.region_stats`` (``I = sum p t`` over the valid
pixels) per image (MONAI's form; ``per_image=False``: over the batch); the background counts
of binary mode are ``n - P - T + I``, ``n - P``, ``n - T`` (n the valid pixels). The
background's focal term is suppressed, the foreground's Tversky term enhanced: the
asymmetry of the paper. ``delta`` weighs false negatives (and the foreground CE),
``gamma`` both focal exponents.

Defaults (MONAI's): ``weight = 0.5``, ``delta = 0.7``, ``gamma = 0.5``, ``smooth = 1e-7``
(MONAI's epsilon). Binary mode equals MONAI's ``AsymmetricUnifiedFocalLoss`` (which takes
probabilities and also clamps them to [1e-7, 1 - 1e-7]; here log p comes from the logits),
and so does multiclass mode with C = 2; MONAI has no C > 2 form (its terms read channels 0
and 1 only). ``gamma = 0, delta = 0.5`` treats all classes alike.

Empty masks: nothing valid gives 0; both empty (a confident all-background prediction of an
all-background target) gives about 0 (every TI is 1); an empty target with a confident
foreground prediction gives ``(1 - weight) * 1 + weight * L_aF`` (every TI close to 0, and
L_aF the background's CE, growing with the logits).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, safe_ratio

__all__ = ["UnifiedFocalParams", "unified_focal", "unified_focal_loss"]


class UnifiedFocalParams(LossParams):
    weight: float = Field(0.5, ge=0, le=1, description="lambda: weight of the asymmetric focal loss; "
                          "1 - lambda weighs the asymmetric focal Tversky loss; in [0, 1]")
    delta: float = Field(0.7, ge=0, le=1, description="weight of false negatives in the Tversky index and of the "
                         "foreground CE (1 - delta: false positives, background CE); in [0, 1]")
    gamma: float = Field(0.5, ge=0, le=1, description="focal exponent: (1 - p_0)^gamma on the background CE, "
                         "(1 - TI)^(1 - gamma) on the foreground Tversky terms; in [0, 1]")
    smooth: float = Field(1e-7, ge=0, description="s, added to the numerator and denominator of the Tversky index")
    per_image: bool = Field(True, description="Tversky counts per sample, then the mean (MONAI); False: over the batch")


def _safe_pow(x: Tensor, e: float) -> Tensor:
    """``x ** e`` for x >= 0 with a finite gradient at 0 (0 there) when e < 1."""
    if e == 0:
        return torch.ones_like(x)
    if e >= 1:
        return x.clamp_min(0) ** e
    return torch.where(x > 0, x.clamp_min(torch.finfo(x.dtype).tiny) ** e, torch.zeros_like(x))


def _two_class(inp: Inputs) -> tuple[Tensor, Tensor, Tensor]:
    """(target, prob, log prob) with one channel per class: binary mode as (background, foreground)."""
    if inp.mode == "multiclass":
        return inp.target, inp.prob, inp.log_prob
    t, p = inp.target, inp.prob
    # the background target is 1 at ignored pixels: inp.pixel_mean gives them weight 0
    return torch.cat([1 - t, t], 1), torch.cat([1 - p, p], 1), torch.cat([inp.log1m_prob, inp.log_prob], 1)


def _region_counts(inp: Inputs, per_image: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(I, P, T) per class, (N, C) or (C,); binary mode adds the background from the foreground counts."""
    inter, p_sum, t_sum = inp.region_stats(per_image)
    if inp.mode == "multiclass":
        return inter, p_sum, t_sum
    valid = torch.ones_like(inp.logits[:, :1]) if inp.mask is None else inp.mask.expand_as(inp.logits[:, :1])
    count = inp.class_sums(valid, per_image)  # n: the valid pixels (the mask's weight)
    bg = (count - p_sum - t_sum + inter, count - p_sum, count - t_sum)
    return tuple(torch.cat([b, f], -1) for b, f in zip(bg, (inter, p_sum, t_sum)))  # type: ignore[return-value]


def unified_focal(inp: Inputs, params: UnifiedFocalParams) -> Tensor:
    r"""Asymmetric unified focal loss (Yeung et al. 2022, MONAI ``AsymmetricUnifiedFocalLoss``); a 0-dim tensor.

    .. math::

        L = \lambda L_{aF} + (1 - \lambda) L_{aFT},\quad
        L_{aF} = \operatorname{mean}_x \tfrac{1}{C}\Big[(1 - \delta)(1 - p_0)^\gamma \mathrm{CE}_0
                 + \delta \sum_{c > 0} \mathrm{CE}_c\Big]

    .. math::

        \mathrm{TI}_c = \frac{I_c + s}{I_c + \delta \mathrm{FN}_c + (1 - \delta) \mathrm{FP}_c + s},\quad
        L_{aFT} = \operatorname{mean}_{n,c}\big[1 - \mathrm{TI}_0,\ (1 - \mathrm{TI}_{c > 0})^{1 - \gamma}\big]

    ``CE_c = -t_c log p_c``; class 0 is the background (binary mode: the two classes ``1 - p``
    and ``p``); ``I``, ``FN = T - I``, ``FP = P - I`` the soft counts over the valid pixels of
    each image (or of the batch).

    Shapes (plain function ``unified_focal_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``UnifiedFocalParams``):
        weight: lambda, the weight of the focal term, default 0.5.
        delta: weight of false negatives and of the foreground CE, default 0.7.
        gamma: the focal exponent of both terms, default 0.5.
        smooth: ``s`` of the Tversky index, default 1e-7.
        per_image: Tversky counts per sample, then the mean (default True, MONAI's).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): binary, p = (0.5, 0.881)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> # L_aF = (0.3 * 0.5^0.5 * log 2 + 0.7 * log(1 + e^-2)) / 4 = 0.0590
        >>> # TI = (0.564, 0.790): L_aFT = (0.436 + 0.210^0.5) / 2 = 0.4466
        >>> round(unified_focal_loss(logits, target).item(), 4)
        0.2528
    """
    delta, gamma, lam = params.delta, params.gamma, params.weight
    t, p, log_p = _two_class(inp)
    C = t.shape[1]
    # asymmetric focal loss: background suppressed by (1 - p_0)^gamma, foreground CE as is
    ce = -(t * log_p)
    back = (1 - delta) * _safe_pow((1 - p[:, :1]).clamp_min(0), gamma) * ce[:, :1]
    fore = delta * ce[:, 1:].sum(1, keepdim=True)
    focal = inp.pixel_mean(back + fore) / C
    # asymmetric focal Tversky loss: foreground enhanced by the power 1 - gamma
    inter, p_sum, t_sum = _region_counts(inp, params.per_image)
    fn = (t_sum - inter).clamp_min(0)
    fp = (p_sum - inter).clamp_min(0)
    s = params.smooth
    ti = safe_ratio(inter + s, inter + delta * fn + (1 - delta) * fp + s)
    dist = (1 - ti).clamp_min(0)
    tversky = torch.cat([dist[..., :1], _safe_pow(dist[..., 1:], 1 - gamma)], -1).mean()
    return lam * focal + (1 - lam) * tversky


unified_focal_loss = Loss("unified_focal", unified_focal, UnifiedFocalParams, modes=("binary", "multiclass"),
                          summary="asymmetric unified focal loss (Yeung et al. 2022): focal + focal Tversky, "
                          "binary and multiclass")

register_losses = losses_hook(unified_focal_loss)
