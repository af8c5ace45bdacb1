"""Boundary loss of Bokhovkin et al. 2019 (arXiv 1905.07852): ``mean_{n,c}(1 - BF1)``.

Per sample n and class c, with ``pool_k`` a max-pool of size k, stride 1, same padding::

    y_b  = pool_theta0(1 - y) - (1 - y)      the boundary of a map y (target or prediction)
    y_be = pool_theta(y_b)                   its extended boundary
    P = sum(p_b * t_be) / (sum(p_b) + 1e-7),  R = sum(p_be * t_b) / (sum(t_b) + 1e-7)
    BF1 = 2 P R / (P + R + 1e-7)

Probabilities are the softmax over classes; binary mode uses the two classes background
(1 - p) and foreground (p), multilabel each channel's sigmoid. ``theta0`` = 3 and
``theta`` = 5 must be odd (an even size changes the pooled shape). 2D and 3D. Boundaries
are taken inside the valid pixels only (ignored pixels take no part in the max-pools), and
the mean runs over the (sample, class) pairs with a valid pixel (0 when all are ignored).
A class with no boundary in the target has R = 0 and contributes 1, as in the paper's
formula; a perfect prediction of images in which every class has a boundary gives about 0.
Unlike the seed, the batch axis survives a batch of one, targets are not clamped (an id >= C
is an error) and shapes must match (no crop).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, odd_int

__all__ = ["BoundaryParams", "boundary", "boundary_loss"]

_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class BoundaryParams(LossParams):
    theta0: int = Field(3, le=255, description="size of the boundary's max-pool, odd, in [1, 255]")
    theta: int = Field(5, le=255, description="size of the extended boundary's max-pool, odd, in [1, 255]")

    @field_validator("theta0", "theta")
    @classmethod
    def _odd(cls, v: int, info: Any) -> int:
        return odd_int(info.field_name, v)


def boundary(inp: Inputs, params: BoundaryParams) -> Tensor:
    r"""Boundary F1 loss of Bokhovkin et al. 2019, ``mean_{n,c}(1 - BF1)``; a 0-dim tensor.

    Per sample ``n`` and class ``c``, with ``pool_k`` a max-pool of size ``k``, stride 1 and
    same padding over the valid pixels::

        y_b  = pool_theta0(1 - y) - (1 - y),   y_be = pool_theta(y_b)     (y = p or t)
        P = sum(p_b t_be) / (sum(p_b) + 1e-7),  R = sum(p_be t_b) / (sum(t_b) + 1e-7)
        BF1 = 2 P R / (P + R + 1e-7)

    ``p`` is the softmax over classes; binary mode uses the two classes ``1 - p`` and ``p``,
    multilabel each channel's sigmoid.

    Shapes (plain function ``boundary_loss(logits, target, mode="multiclass")``):
        - multiclass (the default): logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``BoundaryParams``):
        theta0: size of the boundary's max-pool, an odd integer in [1, 255], default 3.
        theta: size of the extended boundary's max-pool, an odd integer in [1, 255], default 5.

    Example:
        >>> import torch
        >>> from segloss_boundary import boundary_loss
        >>> logits = torch.tensor([[[[0.0, 2.0, 2.0, 0.0],
        ...                          [0.0, 2.0, 2.0, 0.0],
        ...                          [-2.0, -2.0, 0.0, 0.0]]]])  # (N=1, C=1, 3, 4)
        >>> target = torch.tensor([[[[0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 0.0, 0.0, 0.0]]]])
        >>> round(boundary_loss(logits, target, mode="binary").item(), 4)
        0.1353
    """
    p, t = inp.prob, inp.target
    if inp.mode == "binary":
        p = torch.cat([1 - p, p], dim=1)
        t = torch.cat([1 - t, t], dim=1)
    pool = _POOL[len(inp.spatial_dims)]

    def edge(y: Tensor, k: int) -> Tensor:
        # the pool sees valid pixels only, so ignored pixels neither make nor hide a boundary
        return pool(inp.masked(1 - y), kernel_size=k, stride=1, padding=(k - 1) // 2) - (1 - y)

    t_b = inp.masked(edge(t, params.theta0))
    p_b = inp.masked(edge(p, params.theta0))
    th = params.theta
    t_be = pool(t_b, kernel_size=th, stride=1, padding=(th - 1) // 2)
    p_be = pool(p_b, kernel_size=th, stride=1, padding=(th - 1) // 2)
    dims = inp.spatial_dims
    precision = (p_b * t_be).sum(dims) / (p_b.sum(dims) + 1e-7)
    recall = (p_be * t_b).sum(dims) / (t_b.sum(dims) + 1e-7)
    bf1 = 2 * precision * recall / (precision + recall + 1e-7)
    if inp.mask is None:
        return (1 - bf1).mean()
    # mean over the (sample, class) pairs that have a valid pixel; 0 when every pixel is ignored
    seen = (inp.mask.sum(dims) > 0).to(bf1.dtype).expand_as(bf1)
    count = seen.sum()
    return ((1 - bf1) * seen).sum() / torch.where(count > 0, count, torch.ones_like(count))


boundary_loss = Loss("boundary", boundary, BoundaryParams, aliases=("boundary_f1",), default_mode="multiclass",
                     summary="boundary F1 loss of Bokhovkin et al. 2019 (theta0, theta)")

register_losses = losses_hook(boundary_loss)
