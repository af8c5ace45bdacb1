"""clDice loss (Shit et al., CVPR 2021, arXiv 2003.07311): ``1 - clDice``, 2D and 3D.

Soft skeleton by iterated min/max pooling (the authors' code, as in MONAI)::

    erode(x)  = min over the axes a of minpool_a(x)   (3-wide along one axis: a cross-shaped element)
    dilate(x) = maxpool_{3x3(x3)}(x)
    open(x)   = dilate(erode(x))
    skel_0 = relu(x - open(x));  x_k = erode(x_{k-1}),  d_k = relu(x_k - open(x_k)),
    skel_k = skel_{k-1} + relu(d_k - skel_{k-1} d_k),   k = 1..iterations   (default 3)

Per class, with ``S_p = skel(p)``, ``S_t = skel(t)`` and sums over the batch and space
(``per_image=True``: over space per image, then the mean over images)::

    Tprec = (sum(S_p t) + s) / (sum(S_p) + s)      topology precision
    Tsens = (sum(S_t p) + s) / (sum(S_t) + s)      topology sensitivity
    loss  = 1 - 2 Tprec Tsens / (Tprec + Tsens)

``smooth`` s = 1 by default, as in the authors' code: it keeps both ratios defined when a
skeleton is empty and pulls them towards 1 for tiny skeletons. Unlike MONAI there is no
extra 1e-4 in the harmonic mean's denominator (a ratio of 0/0 there gives clDice 0).
Probabilities are the sigmoid (binary, multilabel) or the softmax (multiclass). Classes are
averaged with ``class_weights``; ``include_background=False`` drops class 0 (multiclass).
The authors' code and MONAI leave channel 0 out and pool the remaining channels into one
pair of sums; here every class has its own clDice, then the mean (equal for one foreground
class). MONAI sums per image (our ``per_image=True``); the authors' code over the batch (the
default here). This is the clDice term alone: the paper trains ``(1 - a) dice + a clDice``,
which is ``build_loss("dice + cldice", weights=[1 - a, a])`` here.

Ignored pixels (``ignore_index``) are 0 in both maps before skeletonisation, so neither
skeleton reaches them and they add nothing to the four sums.

Empty masks: both empty give 0 (both ratios are s/s = 1); an empty target with a non-empty
prediction gives ``1 - 2 Tprec / (Tprec + 1)`` with ``Tprec = s / (sum(S_p) + s)``: close to 1
for a large predicted skeleton (with s = 0 exactly 1). A prediction with no skeleton (a
constant map, say) has Tprec = 1. A perfect hard prediction (p = t, t binary) gives exactly
0, since a binary map's soft skeleton lies inside the map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from segloss_registry import InputError, Inputs, Loss, RegionParams, losses_hook, safe_ratio
from segloss_registry.distributed import sync_sum

__all__ = ["ClDiceParams", "cldice", "cldice_loss", "soft_erode", "soft_dilate", "soft_open", "soft_skel"]

_POOLS: dict[int, Callable[..., Tensor]] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class ClDiceParams(RegionParams):
    iterations: int = Field(3, ge=0, le=100, description="skeletonisation iterations (erosions), 0..100")
    smooth: float = Field(1.0, ge=0, le=1e6, description="s, added to the numerators and denominators of Tprec and "
                          "Tsens; <= 1e6 (larger gives about 0 for any input)")


def _pool(x: Tensor) -> Callable[..., Tensor]:
    # the loss is declared for 2D and 3D (the core checks); the soft morphology itself works on 1 to 3 axes
    pool = _POOLS.get(x.dim() - 2)
    if pool is None:
        raise InputError(f"soft morphology takes (N, C, *S) with 1 to 3 spatial axes; got shape {tuple(x.shape)}")
    return pool


def soft_erode(x: Tensor) -> Tensor:
    """Soft erosion of (N, C, *S), S 2D or 3D: min of 3-wide min-pools along each axis."""
    pool, d = _pool(x), x.dim() - 2
    out = None
    for axis in range(d):
        k = tuple(3 if a == axis else 1 for a in range(d))
        pad = tuple(1 if a == axis else 0 for a in range(d))
        y = -pool(-x, k, (1,) * d, pad)
        out = y if out is None else torch.minimum(out, y)
    assert out is not None  # x has at least one spatial axis
    return out


def soft_dilate(x: Tensor) -> Tensor:
    """Soft dilation of (N, C, *S): max-pool 3x3(x3), stride 1, same size."""
    d = x.dim() - 2
    return _pool(x)(x, (3,) * d, (1,) * d, (1,) * d)


def soft_open(x: Tensor) -> Tensor:
    """Soft opening of (N, C, *S): ``soft_dilate(soft_erode(x))``."""
    return soft_dilate(soft_erode(x))


def soft_skel(x: Tensor, iterations: int) -> Tensor:
    """Soft skeleton of (N, C, *S) values in [0, 1]; see the module docstring."""
    skel = F.relu(x - soft_open(x))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_open(x))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def cldice(inp: Inputs, params: ClDiceParams) -> Tensor:
    r"""clDice loss (Shit et al. 2021), ``1 - clDice`` per class, then the class mean; a 0-dim tensor.

    .. math::

        T_{prec} = \frac{\sum S_p t + s}{\sum S_p + s},\quad
        T_{sens} = \frac{\sum S_t p + s}{\sum S_t + s},\quad
        L = 1 - \frac{2 T_{prec} T_{sens}}{T_{prec} + T_{sens}}

    ``S_p = soft_skel(p)`` and ``S_t = soft_skel(t)`` are the soft skeletons (iterated soft
    erosions and openings, see the module docstring); the sums run over the batch and space
    of each class (``per_image``: over space, then the mean over images).

    Shapes (plain function ``cldice_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, H, W[, D])`` or ``(N, H, W[, D])``, target the same in [0, 1];
        - multiclass: logits ``(N, C, H, W[, D])``, target class ids ``(N, H, W[, D])`` or one-hot;
        - multilabel: logits and target ``(N, C, H, W[, D])``;
        - 2D and 3D only; returns a 0-dim tensor.

    Parameters (``ClDiceParams``):
        iterations: soft-skeleton iterations (erosions), 0..100, default 3.
        smooth: ``s`` >= 0, default 1.
        per_image, class_weights, include_background, sync: as in ``dice``.

    Example:
        >>> import torch
        >>> from segloss_cldice import cldice_loss
        >>> logits = torch.tensor([[[[0.0, 2.0, 2.0, 0.0],
        ...                          [0.0, 2.0, 2.0, 0.0],
        ...                          [-2.0, -2.0, 0.0, 0.0]]]])  # (N=1, C=1, 3, 4): binary, 2D
        >>> target = torch.tensor([[[[0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 1.0, 1.0, 0.0],
        ...                          [0.0, 0.0, 0.0, 0.0]]]])
        >>> round(cldice_loss(logits, target).item(), 4)
        0.1692
    """
    p = inp.masked(inp.prob)
    t = inp.target  # 0 where ignored
    skel_p = soft_skel(p, params.iterations)
    skel_t = soft_skel(t, params.iterations)
    s = params.smooth
    sums = tuple(inp.class_sums(x, params.per_image) for x in (skel_p * t, skel_p, skel_t * p, skel_t))
    # sync="global" (DistributedDataParallel): the sums of every rank, so the loss is the global batch's
    sp_t, sp, st_p, st = sync_sum(sums, params.sync, "cldice")
    tprec = safe_ratio(sp_t + s, sp + s)
    tsens = safe_ratio(st_p + s, st + s)
    cl = safe_ratio(2 * tprec * tsens, tprec + tsens, empty=0.0)
    return inp.class_mean(1 - cl, params)


cldice_loss = Loss("cldice", cldice, ClDiceParams, dims=(2, 3),
                   summary="1 - clDice (Shit et al. 2021): harmonic mean of topology precision and sensitivity "
                   "on soft skeletons")

register_losses = losses_hook(cldice_loss)
