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

from typing import Any

import torch
from pydantic import Field
from segloss_surface import DistanceParams, check_spacing, pixel_mean_per_class
from torch import Tensor

from segloss_registry import Inputs, functional_loss, hookimpl
from segloss_registry.ops import distance_field

__all__ = ["HausdorffDTParams", "hausdorff_dt", "hausdorff_dt_loss", "log_hausdorff_dt", "log_hausdorff_dt_loss"]

MODES = ("binary", "multiclass", "multilabel")


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
    """Karimi's distance-transform Hausdorff loss from normalised inputs; a 0-dim tensor."""
    return _hd(inp, params, "hausdorff_dt")


def log_hausdorff_dt(inp: Inputs, params: HausdorffDTParams) -> Tensor:
    """``log(1 + hausdorff_dt)`` (MONAI's ``LogHausdorffDTLoss``); a 0-dim tensor."""
    return torch.log1p(_hd(inp, params, "log_hausdorff_dt"))


def hausdorff_dt_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """Distance-transform Hausdorff loss of ``logits`` against ``target``; see the module docstring."""
    return functional_loss("hausdorff_dt", hausdorff_dt, HausdorffDTParams, MODES, logits, target, mode=mode, **kwargs)


def log_hausdorff_dt_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """``log(1 + hausdorff_dt)``; see the module docstring."""
    return functional_loss("log_hausdorff_dt", log_hausdorff_dt, HausdorffDTParams, MODES, logits, target,
                           mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register("hausdorff_dt", hausdorff_dt, params=HausdorffDTParams, modes=MODES,
             summary="Karimi's distance-transform Hausdorff loss: mean((p - t)^2 (d_p^alpha + d_t^alpha)), as MONAI")
    register("log_hausdorff_dt", log_hausdorff_dt, params=HausdorffDTParams, modes=MODES,
             summary="log(1 + hausdorff_dt), as MONAI LogHausdorffDTLoss")
