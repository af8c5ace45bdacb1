"""Surface (boundary) loss of Kervadec et al. 2019 ("Boundary loss for highly unbalanced
segmentation", MIDL 2019, arXiv 1812.07032), normalised as MONAI's ``BoundaryLoss``::

    surface = mean_{n, c} (1 / |Omega|) sum_x p_{n,c}(x) phi_{n,c}(x)

``p`` is the sigmoid (binary, multilabel) or softmax (multiclass) probability, ``phi`` the
signed distance map of class ``c`` of target ``n`` in Kervadec's convention (his
``one_hot2dist``; ``segloss_registry.ops.signed_distance``): the distance to the class
outside it, ``-(d - 1)`` inside it with ``d`` the distance to the nearest element outside,
so negative inside, 0 on the inner contour, positive outside. The mean over the ``|Omega|``
pixels of each sample and class comes first, then the mean over classes
(``include_background``, ``class_weights`` as in ``dice``) and samples. The defaults give
MONAI's ``BoundaryLoss(sigmoid=True)`` in binary and multilabel mode and
``BoundaryLoss(softmax=True, to_onehot_y=True)`` in multiclass mode (``include_background``
True as there). ``spacing``: one length per spatial axis, like ``one_hot2dist``'s
``resolution`` (the ``- 1`` inside stays unscaled, as there).

The distance maps come from the target only, without gradient, on the device (an exact
torch distance transform, no SciPy, no host copy), computed once per call and shared with
``hausdorff_dt`` and any term that asks for them (``segloss_registry.ops.class_distances``).
With ``ignore_index`` (or a call-time mask) an ignored pixel is neither foreground nor
background of the map, gets ``phi = 0`` and leaves the mean: the pixel mean runs over the
valid pixels of each sample (0 when none is).

Values: the loss is a signed, unbounded-below quantity, not a distance to 0: a prediction
equal to the target gives ``sum_inside -(d - 1) / |Omega| <= 0``; lower is better. An empty
class (no foreground in a sample) or a full one (no background) has no boundary and
contributes 0, as in MONAI; so an empty target gives 0 whatever the prediction: train it
together with a region loss, as the paper does (``"dice + 0.01*surface"``, ramping the
surface weight up).
"""

from __future__ import annotations

import math

from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor

from segloss_registry import (
    InputError,
    Inputs,
    Loss,
    LossParams,
    check_class_mean_mode,
    check_class_weights,
    losses_hook,
    per_class,
)
from segloss_registry.ops import signed_distance_map

__all__ = ["DistanceParams", "SurfaceParams", "check_spacing", "pixel_mean_per_class", "surface", "surface_loss"]


class DistanceParams(LossParams):
    """Options of the distance-map losses: the mean over classes and the pixel spacing."""

    include_background: bool = Field(
        True, description="multiclass only: False leaves class 0 out of the mean over classes."
    )
    class_weights: list[float] | None = Field(
        None,
        description="Weight of each class in the mean over classes (multiclass/multilabel), each >= 0.",
        json_schema_extra=per_class(),
    )
    spacing: list[float] | None = Field(
        None,
        description="Pixel/voxel size per spatial axis for the distance maps (scipy's sampling), each > 0; "
        "None: 1 on every axis.",
    )

    @field_validator("class_weights")
    @classmethod
    def _weights_ok(cls, v: list[float] | None) -> list[float] | None:
        return check_class_weights(v)

    @field_validator("spacing")
    @classmethod
    def _spacing_ok(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if not 1 <= len(v) <= 3:
            raise ValueError(f"spacing must give one length per spatial axis (1 to 3 of them; got {v})")
        if any(s <= 0 or not math.isfinite(s) for s in v):
            raise ValueError(f"spacing must be finite and > 0 on every axis (got {v})")
        return v

    @model_validator(mode="after")
    def _mode_ok(self, info: ValidationInfo) -> DistanceParams:
        check_class_mean_mode(self.include_background, self.class_weights, (info.context or {}).get("mode"))
        return self


class SurfaceParams(DistanceParams):
    """Kervadec's surface loss has no hyperparameters of its own."""


def check_spacing(name: str, inp: Inputs, params: DistanceParams) -> tuple[float, ...] | None:
    """``params.spacing`` as a tuple, after checking it has one entry per spatial axis (``InputError``)."""
    if params.spacing is None:
        return None
    nd = len(inp.spatial_dims)
    if len(params.spacing) != nd:
        raise InputError(
            f"{inp.mode}: {name}: spacing has {len(params.spacing)} entries but the logits "
            f"{tuple(inp.logits.shape)} have {nd} spatial axes; give one length per axis"
        )
    return tuple(params.spacing)


def pixel_mean_per_class(inp: Inputs, loss: Tensor) -> Tensor:
    """Mean of a per-element loss (N, C, *S) over the valid pixels of each sample and class: (N, C).

    Without a mask, the plain mean over the spatial axes (MONAI's normalisation); with one, the
    mask-weighted mean, 0 for a (sample, class) without valid pixels.
    """
    dims = inp.spatial_dims
    if inp.mask is None:
        return loss.mean(dim=dims)
    m = inp.mask
    total = (loss * m).sum(dim=dims)
    count = m.expand_as(loss).sum(dim=dims) if m.shape != loss.shape else m.sum(dim=dims)
    return total / count.clamp_min(1e-12) * (count > 0)


def surface(inp: Inputs, params: SurfaceParams) -> Tensor:
    r"""Kervadec's surface (boundary) loss, normalised as MONAI's ``BoundaryLoss``; a 0-dim tensor.

    .. math::

        L = \operatorname{mean}_{n, c} \frac{1}{|\Omega|} \sum_{x \in \Omega} p_{n,c}(x)\, \phi_{n,c}(x)

    ``phi`` the signed distance map of class ``c`` of target ``n`` in Kervadec's convention
    (the distance to the class outside it, ``-(d - 1)`` inside, ``d`` the distance to the
    nearest pixel outside), from the target only, without gradient; ``p`` the sigmoid (binary,
    multilabel) or softmax (multiclass). The mean over classes honours ``include_background``
    and ``class_weights``; ignored pixels have ``phi = 0`` and leave the pixel mean. A class
    without boundary (empty or full) contributes 0. Lower is better; the loss can be negative.

    Shapes (plain function ``surface_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``SurfaceParams``):
        include_background: multiclass only; False leaves class 0 out (default True).
        class_weights: weights of the mean over classes (multiclass, multilabel).
        spacing: pixel size per spatial axis for the distance maps (default 1 on every axis).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])  # (N=1, C=1, 6): binary, 1D
        >>> target = torch.tensor([[[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]]])  # phi = (1, 0, -1, 0, 1, 2)
        >>> round(surface_loss(logits, target).item(), 4)  # (0.731 * 1 + 0.5 * (-1 + 1 + 2)) / 6
        0.2885
    """
    phi = signed_distance_map(inp, check_spacing("surface", inp, params), "surface")
    return inp.class_mean(pixel_mean_per_class(inp, inp.prob * phi), params)


surface_loss = Loss("surface", surface, SurfaceParams, aliases=("kervadec",),
                    summary="Kervadec's boundary loss: mean(p * signed distance of the target), as MONAI BoundaryLoss")

register_losses = losses_hook(surface_loss)
