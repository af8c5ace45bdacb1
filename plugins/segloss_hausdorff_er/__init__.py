"""Erosion-based Hausdorff loss, HD-ER (Karimi and Salcudean 2019, "Reducing the Hausdorff distance in
medical image segmentation with convolutional neural networks", IEEE TMI).

A differentiable surrogate of the Hausdorff distance: the squared error map is eroded
``erosions`` times (K, default 10), and the k-th erosion is weighted by ``k^alpha`` (alpha,
default 2.0), so errors that survive many erosions (thick, far-reaching ones) cost most::

    f_0 = (p - t)^2
    f_k = normalise(relu(f_{k-1} * B - 0.5)),      k = 1..K
    loss = mean_{n, c, pixels} sum_{k=1..K} k^alpha f_k

``* B`` is a same-size convolution with zero padding and a cross-shaped kernel whose weights
sum to 1 (2D: the pixel and its 4 neighbours, 1/5 each; 3D: the voxel and its 6 face
neighbours, 1/7 each); ``relu(. - 0.5)`` is the paper's soft threshold at 0.5; ``normalise``
maps each (image, channel) map to [0, 1] by its min and max, and leaves a constant map as it
is. All on the device with convolutions (no SciPy, no NumPy), and differentiable throughout:
the widely copied reference (PatRyg99/HausdorffLoss) computes the erosions under no_grad in
NumPy and so gives no gradient; kornia's ``HausdorffERLoss`` is the same formula in torch.

Probabilities are the sigmoid (binary, multilabel) or the softmax (multiclass, every class
including the background, as kornia); the mean runs over batch, channels and pixels.
Ignored pixels get f_0 = 0 and leave the mean. 2D and 3D.

Values: 0 for a perfect prediction, and 0 whenever every squared error, averaged over the
kernel, stays below 0.5 (|p - t| below about 0.71 everywhere): the first threshold removes
small errors, so train it together with a region loss, as the paper does (``"dice +
hausdorff_er"``). At most ``sum_{k=1..K} k^alpha`` (385 at the defaults). Both masks empty:
0 (for predictions below 0.7). Empty target, non-empty prediction: grows with the size of
the predicted region (each erosion it survives adds up to ``k^alpha`` on its pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook

__all__ = ["HausdorffERParams", "hausdorff_er", "hausdorff_er_loss", "erosion_kernel"]


class HausdorffERParams(LossParams):
    alpha: float = Field(
        2.0, ge=0, le=16,
        description="exponent of the weight k^alpha of the k-th erosion, in [0, 16] (larger overflows float32)",
    )
    erosions: int = Field(10, ge=1, le=100, description="number of erosions K, 1..100")


def erosion_kernel(ndim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The (1, 1, 3, 3[, 3]) cross-shaped kernel: 1/5 on the 2D cross, 1/7 on the 3D one."""
    k = torch.zeros((3,) * ndim, dtype=dtype, device=device)
    for axis in range(ndim):
        idx = [1] * ndim
        for j in (0, 2):
            idx[axis] = j
            k[tuple(idx)] = 1.0
    k[(1,) * ndim] = 1.0
    return (k / (2 * ndim + 1)).view(1, 1, *k.shape)


def hausdorff_er(inp: Inputs, params: HausdorffERParams) -> Tensor:
    r"""Erosion-based Hausdorff loss HD-ER (Karimi and Salcudean 2019); a 0-dim tensor.

    .. math::

        f_0 = (p - t)^2,\quad
        f_k = \operatorname{normalise}\big(\operatorname{relu}(f_{k-1} * B - 0.5)\big),\quad
        L = \operatorname{mean}_{n,c,x} \sum_{k=1}^{K} k^\alpha f_k

    ``B`` the cross-shaped kernel of weight sum 1 (the pixel and its 2D or 3D face neighbours),
    a same-size convolution with zero padding; ``normalise`` maps each (image, channel) map to
    [0, 1] by its min and max (a constant map is left as it is). ``p`` is the sigmoid (binary,
    multilabel) or the softmax (multiclass, every class); ignored pixels get ``f_0 = 0`` and
    leave the mean.

    Shapes (plain function ``hausdorff_er_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 2D or 3D; returns a 0-dim tensor, in [0, sum_k k^alpha].

    Parameters (``HausdorffERParams``):
        alpha: exponent of the weight ``k^alpha`` of the k-th erosion, default 2.
        erosions: the number of erosions K, default 10.

    Example:
        >>> import torch
        >>> logits = torch.full((1, 1, 3, 3), 10.0)  # p = 1 on a 3 x 3 image of background
        >>> target = torch.zeros(1, 1, 3, 3)
        >>> # f_0 * B - 0.5: 0.5 at the centre, 0.3 on the edges, 0.1 at the corners -> 1, 0.5, 0
        >>> round(hausdorff_er_loss(logits, target, erosions=1).item(), 4)  # (1 + 4 * 0.5) / 9
        0.3333
    """
    p, t = inp.prob, inp.target
    nd = len(inp.spatial_dims)  # 2 or 3: the core enforces dims=(2, 3)
    C = p.shape[1]
    conv = F.conv2d if nd == 2 else F.conv3d
    # one depthwise convolution over the channels keeps the class axis static under dynamic shapes
    kernel = erosion_kernel(nd, p.dtype, p.device).expand(C, *([-1] * (nd + 1)))
    dims = tuple(range(2, 2 + nd))
    f = inp.masked((p - t) ** 2)
    total = torch.zeros_like(f)
    for k in range(1, params.erosions + 1):
        f = F.relu(conv(f, kernel, padding=1, groups=C) - 0.5)
        lo = f.amin(dim=dims, keepdim=True)
        span = f.amax(dim=dims, keepdim=True) - lo
        ok = span > 0
        f = torch.where(ok, (f - lo) / torch.where(ok, span, torch.ones_like(span)), f)
        total = total + f * float(k) ** params.alpha
    return inp.pixel_mean(total)


hausdorff_er_loss = Loss("hausdorff_er", hausdorff_er, HausdorffERParams, dims=(2, 3),
                         summary="erosion-based Hausdorff loss HD-ER (Karimi & Salcudean 2019): "
                         "sum_k k^alpha eroded (p - t)^2")

register_losses = losses_hook(hausdorff_er_loss)
