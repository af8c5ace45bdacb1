"""Active contour loss (Chen et al. 2019): ``weight * length + region``, 2D and 3D.

``length = mean(sqrt(sum_k crop_k(diff_k(p))^2 + 1e-8))``: for each spatial axis k the
finite difference of the probabilities along k, cropped by one at the start of axis k and
by two at the end of every other axis, so that all the differences line up. In 2D these are
exactly the seed's differences and crops (whose comments swap horizontal and vertical).
``region = mean(p (t - 1)^2) + mean((1 - p) t^2)``. ``weight`` defaults to 10.

The seed's code cannot run (it uses an undefined ``C_in``) and expects probabilities; here
it takes logits like every other loss (``from_logits=False`` for probabilities).
Perfect prediction gives ``weight * length`` of the true contour, not 0: the length term
is a regulariser. Images smaller than 3 pixels along an axis have no length term (0).
Ignored pixels leave both terms. Multiclass: applied to every class's softmax map.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, safe_ratio

__all__ = ["ActiveContourParams", "active_contour", "active_contour_loss"]

class ActiveContourParams(LossParams):
    weight: float = Field(10.0, ge=0, le=1e6, description="weight of the length term, in [0, 1e6]")


def _aligned(x: Tensor, axis: int, dims: tuple[int, ...], combine: str) -> Tensor:
    """Difference (or product, for masks) of neighbours along ``axis``, cropped to (S - 2) per axis."""
    n = x.shape[axis]
    a, b = x.narrow(axis, 1, n - 1), x.narrow(axis, 0, n - 1)
    y = a - b if combine == "diff" else a * b
    for d in dims:
        y = y.narrow(d, 1, y.shape[d] - 1) if d == axis else y.narrow(d, 0, y.shape[d] - 2)
    return y


def active_contour(inp: Inputs, params: ActiveContourParams) -> Tensor:
    r"""Active contour loss (Chen et al. 2019), ``weight * length + region``; a 0-dim tensor.

    .. math::

        L = w \operatorname{mean}\Big(\sqrt{\textstyle\sum_k \Delta_k(p)^2 + 10^{-8}}\Big)
            + \operatorname{mean}\big(p (t - 1)^2\big) + \operatorname{mean}\big((1 - p) t^2\big)

    ``Delta_k`` is the finite difference along spatial axis ``k``, cropped so that all of them
    line up (in 2D exactly the seed's ``x[:, :, 1:, :-2]`` and ``y[:, :, :-2, 1:]``).

    Shapes (plain function ``active_contour_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, H, W[, D])`` or ``(N, H, W[, D])``, target the same in [0, 1];
        - multiclass: logits ``(N, C, H, W[, D])``, target class ids ``(N, H, W[, D])`` or one-hot;
        - multilabel: logits and target ``(N, C, H, W[, D])``;
        - 2D and 3D only; returns a 0-dim tensor.

    Parameters (``ActiveContourParams``):
        weight: ``w``, the weight of the length term in [0, 1e6], default 10.

    Example:
        >>> import torch
        >>> from segloss_active_contour import active_contour_loss
        >>> logits = torch.tensor([[[[0.0, 2.0, 2.0, 0.0],
        ...                          [0.0, 2.0, 2.0, 0.0],
        ...                          [-2.0, -2.0, 0.0, 0.0]]]])  # (N=1, C=1, 3, 4): binary, 2D
        >>> target = torch.tensor([[[[0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 0.0, 0.0, 0.0]]]])
        >>> round(active_contour_loss(logits, target).item(), 4)
        6.471
        >>> round(active_contour_loss(logits, target, weight=1.0).item(), 4)
        0.9257
    """
    p, t = inp.prob, inp.target
    region = inp.pixel_mean(p * (t - 1) ** 2 + (1 - p) * t**2)
    dims = inp.spatial_dims
    if params.weight == 0 or min(p.shape[d] for d in dims) < 3:
        return region
    sq = _aligned(p, dims[0], dims, "diff") ** 2
    for d in dims[1:]:
        sq = sq + _aligned(p, d, dims, "diff") ** 2
    length_map = torch.sqrt(sq + 1e-8)
    if inp.mask is None:
        length = length_map.mean()
    else:
        m = inp.mask.expand_as(p)
        mm = _aligned(m, dims[0], dims, "prod")
        for d in dims[1:]:
            mm = mm * _aligned(m, d, dims, "prod")
        length = safe_ratio((length_map * mm).sum(), mm.sum(), empty=0.0)
    return params.weight * length + region


active_contour_loss = Loss("active_contour", active_contour, ActiveContourParams, aliases=("acl",), dims=(2, 3),
                           summary="weight * contour length + region terms (Chen et al. 2019), 2D and 3D")

register_losses = losses_hook(active_contour_loss)
