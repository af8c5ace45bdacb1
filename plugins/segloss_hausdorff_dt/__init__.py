"""Distance-transform Hausdorff losses of Karimi and Salcudean 2019 ("Reducing the Hausdorff
distance in medical image segmentation with convolutional neural networks", IEEE TMI 39(2),
arXiv 1904.10030), as MONAI's ``HausdorffDTLoss`` and ``LogHausdorffDTLoss``::

    hausdorff_dt     = mean_{n, c} (1 / |Omega|) sum_x (p - t)^2 (d_p^alpha + d_t^alpha)
    log_hausdorff_dt = log(1 + hausdorff_dt)

``p`` is the sigmoid (binary, multilabel) or softmax (multiclass) probability, ``t`` the
target; ``d_t`` is the distance field of class ``c`` of target ``n`` and ``d_p`` that of the
thresholded prediction ``p > 0.5``: for a foreground element the distance to the nearest
background element, for a background element the distance to the nearest foreground one
(``segloss_registry.ops.distance_field``). ``alpha`` = 2 (the paper's and MONAI's default).
The mean over the ``|Omega|`` pixels of each sample and class comes first, then the mean
over classes (``include_background``, ``class_weights`` as in ``dice``) and samples.
``spacing``: one length per spatial axis for the distance fields.

The distance fields carry no gradient (the gradient flows through ``(p - t)^2`` only, as
in MONAI); they are computed on the device with an exact torch distance transform (no SciPy,
no host copy), once per call for the target and once for the prediction, and shared between
``hausdorff_dt``, ``log_hausdorff_dt`` and ``surface`` (``segloss_registry.ops``). With
``ignore_index`` (or a call-time mask) ignored pixels are neither foreground nor background
of either field, and the pixel mean runs over the valid pixels of each sample.

MONAI's ``HausdorffDTLoss`` defaults to ``include_background=False``; here the default is
True (every class counts, as in every loss of this library): ``include_background=False``
gives MONAI's default value in multiclass mode; binary and multilabel equal MONAI with
``include_background=True`` (MONAI drops channel 0 in multilabel mode too when told to).

Values: 0 for a prediction equal to a hard target. An empty or full class has a zero
distance field (no boundary), as in MONAI: both target and prediction empty give 0; an
empty target with a non-empty, non-full prediction (``p > 0.5`` somewhere) gives
``mean(p^2 d_p^alpha) > 0``, growing with how far the false positives reach; a prediction
that is everywhere above 0.5 against an empty target has both fields 0 and gives 0, so pair
it with a region loss (``"dice + hausdorff_dt"``), as the paper does.
"""

from __future__ import annotations

import torch
from pydantic import Field
from segloss_surface import DistanceParams, check_spacing, pixel_mean_per_class
from torch import Tensor

from segloss_registry import Inputs, Loss, losses_hook
from segloss_registry.ops import distance_field

__all__ = ["HausdorffDTParams", "hausdorff_dt", "hausdorff_dt_loss", "log_hausdorff_dt", "log_hausdorff_dt_loss"]

class HausdorffDTParams(DistanceParams):
    alpha: float = Field(2.0, ge=0, description="exponent of the distances, d_p^alpha + d_t^alpha; >= 0")


def _powered(d: Tensor, alpha: float) -> Tensor:
    return d * d if alpha == 2.0 else d**alpha


def _hd(inp: Inputs, params: HausdorffDTParams, name: str) -> Tensor:
    sp = check_spacing(name, inp, params)
    d_t = distance_field(inp, "target", sp, name)
    d_p = distance_field(inp, "prediction", sp, name)
    with torch.no_grad():
        weight = _powered(d_p, params.alpha) + _powered(d_t, params.alpha)
    err = inp.prob - inp.target
    return inp.class_mean(pixel_mean_per_class(inp, err * err * weight), params)


def hausdorff_dt(inp: Inputs, params: HausdorffDTParams) -> Tensor:
    r"""Karimi's distance-transform Hausdorff loss, as MONAI's ``HausdorffDTLoss``; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_{n, c} \frac{1}{|\Omega|} \sum_x (p - t)^2 (d_p^\alpha + d_t^\alpha)

    ``d_t`` is the distance field of the target and ``d_p`` that of the thresholded prediction
    ``p > 0.5``: for a foreground element the distance to the nearest background element, for a
    background element the distance to the nearest foreground one (0 for an empty or full
    class); the fields carry no gradient.

    Shapes (plain function ``hausdorff_dt_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``HausdorffDTParams``):
        alpha: exponent of the distances, >= 0, default 2.
        spacing: one length per spatial axis for the distance fields (default 1 each).
        class_weights, include_background: the mean over classes, as in ``dice``.

    Example:
        >>> import torch
        >>> from segloss_hausdorff_dt import hausdorff_dt_loss, log_hausdorff_dt_loss
        >>> logits = torch.tensor([[[[0.0, 2.0, 2.0, 0.0],
        ...                          [0.0, 2.0, 2.0, 0.0],
        ...                          [-2.0, -2.0, 0.0, 0.0]]]])  # (N=1, C=1, 3, 4): binary, 2D
        >>> target = torch.tensor([[[[0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 0.0, 0.0, 0.0]]]])
        >>> round(hausdorff_dt_loss(logits, target).item(), 4)
        0.3082
        >>> round(log_hausdorff_dt_loss(logits, target).item(), 4)  # log(1 + 0.3082...)
        0.2687
    """
    return _hd(inp, params, "hausdorff_dt")


def log_hausdorff_dt(inp: Inputs, params: HausdorffDTParams) -> Tensor:
    """``log(1 + hausdorff_dt)``, as MONAI's ``LogHausdorffDTLoss``; a 0-dim tensor.

    Shapes and parameters as ``hausdorff_dt``; the example there computes both.
    """
    return torch.log1p(_hd(inp, params, "log_hausdorff_dt"))


hausdorff_dt_loss = Loss("hausdorff_dt", hausdorff_dt, HausdorffDTParams,
                         summary="Karimi's distance-transform Hausdorff loss: mean((p - t)^2 (d_p^alpha + d_t^alpha)), "
                         "as MONAI")
log_hausdorff_dt_loss = Loss("log_hausdorff_dt", log_hausdorff_dt, HausdorffDTParams,
                             summary="log(1 + hausdorff_dt), as MONAI LogHausdorffDTLoss")

register_losses = losses_hook(hausdorff_dt_loss, log_hausdorff_dt_loss)
