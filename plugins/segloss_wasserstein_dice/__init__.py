"""Generalised Wasserstein Dice loss (Fidon et al. 2017, arXiv 1707.00478; MONAI
``GeneralizedWassersteinDiceLoss``), multiclass.

A C x C matrix ``M`` of distances between classes (normalised by its largest entry, as MONAI)
says how wrong each confusion is. Per pixel i, with target t_i and softmax p_i::

    W_i  = sum_{l,c} t_il M_lc p_ic                    the Wasserstein distance of p_i to t_i
    TP   = sum_i sum_l a_l t_il (1 - sum_c M_lc p_ic)   the generalised true positives
    loss = 1 - (2 TP + s) / (2 TP + sum_i W_i + s)      weighting_mode = "default"
    loss = 1 - (2 TP + s) / (sum_i sum_l a_l t_il (2 - sum_c M_lc p_ic) + s)   "GDL"

``a_l``: "default" (Fidon et al.): 0 for the background (class 0), 1 for the other classes;
"GDL" (Tilborghs et al. 2020): ``1 / (V_l + 1)``, V_l the volume of class l. Sums run over the
valid pixels of each image, then the mean over the batch (``per_image=True``, MONAI's form),
or over the whole batch (``per_image=False``). For one-hot targets ``W_i = M[y_i] . p_i`` and
``TP = sum_i a_{y_i}(1 - W_i)``: MONAI's formulas; soft targets take the expectation over t.

``dist_matrix``: a C x C list of lists, square, symmetric, finite, >= 0, with a zero diagonal
and a positive entry (checked when the loss is built; its size is checked against C at call
time). None: every two different classes at distance 1 (``M = 1 - I``), for which
``W_i = 1 - sum_c t_ic p_ic``. Defaults: ``weighting_mode="default"``, ``smooth=1e-5`` (MONAI's
``smooth_nr = smooth_dr``), ``per_image=True``.

Empty masks: nothing valid gives 0; an all-background target gives TP = 0 under the default
weighting, so the loss is ``1 - s / (sum_i W_i + s)``: 0 for a perfect prediction, close to 1
as soon as a foreground class is predicted anywhere.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook, per_class, safe_ratio

__all__ = ["WassersteinDiceParams", "wasserstein_dice", "wasserstein_dice_loss"]


class WassersteinDiceParams(LossParams):
    dist_matrix: list[list[float]] | None = Field(
        None,
        description="C x C distances between the classes (one row per class): square, symmetric, finite, >= 0, "
        "zero diagonal; normalised by its largest entry. None: distance 1 between any two classes",
        json_schema_extra=per_class(),
    )
    weighting_mode: Literal["default", "GDL"] = Field(
        "default", description="'default': weight 0 for the background, 1 for the other classes (Fidon et al.); "
        "'GDL': 1 / (volume + 1) per class (Tilborghs et al.)",
    )
    smooth: float = Field(1e-5, ge=0, description="s, added to numerator and denominator; >= 0")
    per_image: bool = Field(True, description="per sample, then the batch mean (MONAI); False: over the whole batch")

    @field_validator("dist_matrix")
    @classmethod
    def _matrix_ok(cls, m: list[list[float]] | None) -> list[list[float]] | None:
        if m is None:
            return m
        C = len(m)
        if C < 2:
            raise ValueError(f"dist_matrix must be C x C with C >= 2 classes (got {m!r})")
        for i, row in enumerate(m):
            if len(row) != C:
                raise ValueError(f"dist_matrix must be square (C x C): row {i} has {len(row)} entries, "
                                 f"there are {C} rows (got {m!r})")
        if not all(math.isfinite(v) for row in m for v in row):
            raise ValueError(f"dist_matrix must be finite (got {m!r})")
        if any(v < 0 for row in m for v in row):
            raise ValueError(f"dist_matrix must be >= 0: distances are not negative (got {m!r})")
        if any(m[i][i] != 0 for i in range(C)):
            raise ValueError(f"dist_matrix must have a zero diagonal: a class is at distance 0 of itself "
                             f"(got diagonal {[m[i][i] for i in range(C)]})")
        bad = [(i, j) for i in range(C) for j in range(i + 1, C) if m[i][j] != m[j][i]]
        if bad:
            i, j = bad[0]
            raise ValueError(f"dist_matrix must be symmetric: M[{i}][{j}] = {m[i][j]:g} but M[{j}][{i}] = {m[j][i]:g}")
        if max(v for row in m for v in row) <= 0:
            raise ValueError("dist_matrix must have a positive entry (all classes at distance 0 says nothing)")
        return m


def _distances(params: WassersteinDiceParams, C: int, like: Tensor) -> Tensor:
    """The (C, C) matrix M, normalised by its largest entry (MONAI's rule)."""
    if params.dist_matrix is None:
        return 1 - torch.eye(C, dtype=like.dtype, device=like.device)
    top = max(v for row in params.dist_matrix for v in row)
    return torch.tensor(params.dist_matrix, dtype=like.dtype, device=like.device) / top


def wasserstein_dice(inp: Inputs, params: WassersteinDiceParams) -> Tensor:
    r"""Generalised Wasserstein Dice loss (Fidon et al. 2017, MONAI's GWDL); a 0-dim tensor.

    .. math::

        W_i = \sum_{l,c} t_{il} M_{lc} p_{ic},\quad
        \mathrm{TP} = \sum_i \sum_l a_l t_{il} \Big(1 - \sum_c M_{lc} p_{ic}\Big),\quad
        L = 1 - \frac{2 \mathrm{TP} + s}{2 \mathrm{TP} + \sum_i W_i + s}

    ``M`` the class distance matrix normalised by its largest entry, ``p`` the softmax, ``a_l``
    0 for the background and 1 otherwise (``weighting_mode="GDL"``: ``1 / (V_l + 1)`` with the
    denominator ``sum_i sum_l a_l t_il (2 - sum_c M_lc p_ic)``). Sums over the valid pixels of
    each image, then the mean over the batch (or over the whole batch).

    Shapes (plain function ``wasserstein_dice_loss(logits, target)``, multiclass only):
        - logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)`` one-hot / soft;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor in [0, 1].

    Parameters (``WassersteinDiceParams``):
        dist_matrix: the C x C distances (square, symmetric, >= 0, zero diagonal); None:
            distance 1 between any two classes. Its size is checked against C at call time.
        weighting_mode: ``"default"`` (Fidon et al.) or ``"GDL"`` (Tilborghs et al.).
        smooth: ``s``, default 1e-5.
        per_image: per sample, then the batch mean (default True, MONAI's).

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 2)  # (N=1, C=2, 2 pixels): p = 0.5 everywhere
        >>> target = torch.tensor([[0, 1]])  # class ids (N, 2)
        >>> # W = (0.5, 0.5); TP = 1 - 0.5 (the foreground pixel): 1 - (1 + s) / (1 + 1 + s)
        >>> round(wasserstein_dice_loss(logits, target).item(), 4)
        0.5
    """
    C = inp.num_classes  # the core checks that dist_matrix has C rows (a per_class() field)
    M = _distances(params, C, inp.logits)
    t = inp.masked(inp.target)  # (N, C, *S), 0 (or the mask weight) where ignored
    mp = torch.einsum("lc,nc...->nl...", M, inp.prob)  # (M p_i)_l: distance of p_i to class l
    dims = inp.spatial_dims if params.per_image else (0, *inp.spatial_dims)
    err = (t * mp).sum(dims)  # (N, C) or (C,): sum_i t_il W_il, per target class l
    correct = (t * (1 - mp)).sum(dims)
    if params.weighting_mode == "GDL":
        volume = t.sum(dims)
        alpha = 1 / (volume + 1)
        tp = (alpha * correct).sum(-1)
        den = (alpha * (2 * volume - err)).sum(-1)  # sum_i a_l t_il (2 - (M p_i)_l)
    else:  # background 0, every other class 1
        alpha = torch.tensor([0.0] + [1.0] * (C - 1), dtype=t.dtype, device=t.device)
        tp = (alpha * correct).sum(-1)
        den = 2 * tp + err.sum(-1)
    s = params.smooth
    return (1 - safe_ratio(2 * tp + s, den + s)).mean()


wasserstein_dice_loss = Loss("wasserstein_dice", wasserstein_dice, WassersteinDiceParams, modes=("multiclass",),
                             aliases=("gwdl",),
                             summary="generalised Wasserstein Dice loss (Fidon et al. 2017) with a class distance "
                             "matrix")

register_losses = losses_hook(wasserstein_dice_loss)
