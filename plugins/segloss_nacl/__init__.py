"""Neighbour-aware calibration loss (Murugesan et al., MICCAI 2023, arXiv 2303.06268; MONAI
``NACLLoss``), multiclass, 1D/2D/3D.

Cross-entropy plus a linear penalty pulling the network's outputs toward the class
proportions of each pixel's neighbourhood::

    u    = K * t                      the one-hot (or soft) target filtered per class, zero padding
    NACL = mean_pixels(-sum_c t_c log p_c) + alpha * mean_{n,c,pixels} |u - z|     ("l1")
                                                + alpha * mean (u - z)^2           ("l2")

``z`` are the logits (the network's output, as MONAI; probabilities with
``from_logits=False``). ``K``: ``kernel_ops="mean"``, a box of ``kernel_size`` per axis with
weights ``1 / kernel_size^dim``; ``"gaussian"``, MONAI's ``GaussianFilter(sigma)`` (the
"erf" kernel ``0.5 (erf((x + 1/2)/(sqrt(2) sigma)) - erf((x - 1/2)/(sqrt(2) sigma)))``,
``|x| <= int(max(4 sigma, 0.5) + 0.5)``, not normalised); ``kernel_size`` is then unused, as
in MONAI. Both filters are separable, applied one axis at a time.

Defaults (MONAI's): ``kernel_size=3``, ``kernel_ops="mean"``, ``distance_type="l1"``,
``alpha=0.1``, ``sigma=1.0``. Equal to MONAI's ``NACLLoss(classes=C, dim=...)`` in 2D and 3D.
Ignored pixels (``ignore_index``, mask weight 0) count in neither mean; their target is 0
for every class, so they lower the neighbourhood proportions ``u`` next to them. Empty masks
have no special case: a mean of per-pixel terms, 0 when nothing is valid.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, odd_int

__all__ = ["NACLParams", "nacl", "nacl_loss", "smoothing_kernel"]


class NACLParams(LossParams):
    kernel_size: int = Field(3, description="edge of the mean filter, an odd integer >= 1 (kernel_ops='mean')")
    kernel_ops: Literal["mean", "gaussian"] = Field("mean", description="the filter of the one-hot target: "
                                                    "'mean' (box) or 'gaussian'")
    distance_type: Literal["l1", "l2"] = Field("l1", description="penalty |u - z| ('l1') or (u - z)^2 ('l2')")
    alpha: float = Field(0.1, ge=0, description="weight of the penalty beside the cross-entropy; >= 0")
    sigma: float = Field(1.0, gt=0, le=64, description="standard deviation of the Gaussian filter, in pixels "
                         "(kernel_ops='gaussian'); in (0, 64]")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        return odd_int("kernel_size", v)


def smoothing_kernel(params: NACLParams) -> list[float]:
    """The 1D filter applied along every spatial axis (mean: ``1/k`` each; gaussian: MONAI's erf kernel)."""
    if params.kernel_ops == "mean":
        return [1.0 / params.kernel_size] * params.kernel_size
    tail = int(max(params.sigma * 4.0, 0.5) + 0.5)
    scale = 0.70710678 / params.sigma  # MONAI's constant for 1 / sqrt(2)
    return [max(0.0, 0.5 * (math.erf(scale * (x + 0.5)) - math.erf(scale * (x - 0.5)))) for x in range(-tail, tail + 1)]


def _filter(x: Tensor, kernel: list[float]) -> Tensor:
    """Separable filtering of every channel of ``x`` (N, C, *S) with zero padding ("same" size)."""
    n, c, *spatial = x.shape
    d = len(spatial)
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    out = x.reshape(n * c, 1, *spatial)
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device)
    pad = (len(kernel) - 1) // 2
    for axis in range(d):
        shape = [1, 1] + [1] * d
        shape[2 + axis] = len(kernel)
        padding = [0] * d
        padding[axis] = pad
        out = conv(out, k.view(shape), padding=tuple(padding))
    return out.reshape(x.shape)


def nacl(inp: Inputs, params: NACLParams) -> Tensor:
    r"""Neighbour-aware calibration loss (Murugesan et al. 2023, MONAI ``NACLLoss``); a 0-dim tensor.

    .. math::

        u = K * t,\quad
        L = \operatorname{mean}_x \Big(-\sum_c t_c \log p_c\Big)
            + \alpha \operatorname{mean}_{n,c,x} d(u - z),\quad d = |\cdot| \text{ or } (\cdot)^2

    ``t`` the one-hot (or soft) target, ``K`` a separable mean or Gaussian filter with zero
    padding, ``z`` the logits (probabilities with ``from_logits=False``), ``p`` the softmax.

    Shapes (plain function ``nacl_loss(logits, target)``, multiclass only):
        - logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)`` one-hot / soft;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``NACLParams``):
        kernel_size: edge of the mean filter, odd, default 3 (``kernel_ops="mean"``).
        kernel_ops: ``"mean"`` (default) or ``"gaussian"``.
        distance_type: ``"l1"`` (default) or ``"l2"``.
        alpha: weight of the penalty, default 0.1.
        sigma: standard deviation of the Gaussian filter, default 1.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1)  # (N=1, C=2, 1 pixel): p = (0.5, 0.5)
        >>> target = torch.tensor([[1]])  # class ids (N, 1)
        >>> # CE = log 2; u = (0, 1/3) (a 3-box of zero padding); penalty mean |u - 0| = 1/6
        >>> round(nacl_loss(logits, target).item(), 4)  # log 2 + 0.1 / 6
        0.7098
    """
    t = inp.target
    ce = inp.pixel_mean(-(t * inp.log_prob).sum(1, keepdim=True))
    kernel = smoothing_kernel(params)
    u = inp.shared(("nacl_filtered_target", tuple(kernel)), lambda: _filter(t, kernel))
    diff = u - inp.logits
    penalty = diff.abs() if params.distance_type == "l1" else diff * diff
    return ce + params.alpha * inp.pixel_mean(penalty)


nacl_loss = Loss("nacl", nacl, NACLParams, modes=("multiclass",),
                 summary="CE + alpha |filtered one-hot target - logits| (Murugesan et al. 2023, MONAI NACLLoss)")

register_losses = losses_hook(nacl_loss)
