"""Deep supervision: one composite applied to logits at several resolutions.

``criterion([logits_full, logits_half, ...], target, level_weights=None)`` computes::

    loss = sum_l w_l * criterion(logits_l, resize(target, size of logits_l))

``resize`` is nearest-neighbour with PyTorch's ``"nearest-exact"`` rule (source index
``floor((i + 0.5) * in / out)``, the pixel centres; MONAI's ``DeepSupervisionLoss`` uses
the same), done by indexing, so class ids stay integers, bool stays bool and
``ignore_index`` values survive. Default weights: ``1, 1/2, 1/4, ...``; every set of weights,
the default or written out by the caller, is normalised to sum 1 (the loss keeps the scale of a
single-level loss, as nnU-Net's deep supervision does; MONAI's ``DeepSupervisionLoss`` does not
normalise, so its value is ours times the sum of the weights). Each level runs the criterion's own
forward (compiled or eager; every level size is one more shape for ``torch.compile``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._errors import InputError, LossConfigError
from ._options import check_level_weights, plain

__all__ = ["default_level_weights", "level_weights", "resize_nearest", "deep_supervised"]


def default_level_weights(n: int) -> list[float]:
    """``1, 1/2, 1/4, ...`` for ``n`` levels, normalised to sum 1."""
    raw = [0.5**i for i in range(n)]
    s = sum(raw)
    return [w / s for w in raw]


def level_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    """The per-level weights, normalised to sum 1: the defaults, or ``weights`` checked first
    (one per level, finite, >= 0, not all 0). One rule for both: written-out weights give the
    loss the same scale as the defaults (``[1, 0.5, 0.25]`` is the default for three levels)."""
    if weights is None:
        return default_level_weights(n)
    listlike = isinstance(weights, (Sequence, Tensor)) or hasattr(weights, "tolist")
    if isinstance(weights, (str, bytes)) or not listlike:
        raise LossConfigError(
            f"deep supervision: level_weights must be a list of numbers (got {type(weights).__name__})"
        )
    try:
        values = check_level_weights(plain(weights), n)
    except ValueError as exc:
        raise LossConfigError(f"deep supervision: {exc}") from None
    s = sum(values)
    return [w / s for w in values]


def _spatial(logits: Tensor, mode: str) -> tuple[int, ...]:
    if mode == "binary" and not (logits.dim() >= 3 and logits.shape[1] == 1):
        return tuple(logits.shape[1:])
    return tuple(logits.shape[2:])


def _nearest_index(n_in: int, n_out: int, device: torch.device) -> Tensor:
    # PyTorch's own "nearest-exact" source indices, read off a ramp (exact below 2**24)
    ramp = torch.arange(n_in, dtype=torch.float32, device=device).view(1, 1, n_in)
    return F.interpolate(ramp, size=n_out, mode="nearest-exact").view(n_out).long()


def resize_nearest(target: Tensor, size: Sequence[int]) -> Tensor:
    """Resize the last ``len(size)`` axes of ``target`` (any dtype) to ``size``, nearest-exact."""
    out = target
    k = len(size)
    for j, n_out in enumerate(size):
        axis = target.dim() - k + j
        n_in = target.shape[axis]
        if n_in != n_out:
            out = out.index_select(axis, _nearest_index(n_in, int(n_out), target.device))
    return out


def deep_supervised(
    criterion: Any,
    levels: Sequence[Any],
    target: Any,
    return_terms: bool,
    weights: Sequence[float] | None,
    mask: Tensor | None = None,
) -> Any:
    """Run ``criterion`` on every level; see the module docstring. Returns what forward returns."""
    mode = criterion.options.mode
    if len(levels) == 0:
        raise InputError(f"{mode}: deep supervision got an empty list of logits; pass at least one tensor")
    for i, x in enumerate(levels):
        if not isinstance(x, Tensor):
            raise InputError(
                f"{mode}: deep supervision level {i} is {type(x).__name__}, not a torch.Tensor; pass a list of logits"
            )
    if not isinstance(target, Tensor):
        raise InputError(f"{mode}: target must be a torch.Tensor (got {type(target).__name__})")
    w = level_weights(len(levels), weights)
    ref = _spatial(levels[0], mode)
    rank = len(ref)
    if target.dim() < rank + 1:
        raise InputError(
            f"{mode}: target {tuple(target.shape)} has fewer axes than batch + the {rank}D spatial axes of the "
            f"level 0 logits {tuple(levels[0].shape)}"
        )
    t_size = tuple(target.shape[-rank:])
    for i, x in enumerate(levels):
        size = _spatial(x, mode)
        if x.dim() == 0 or x.shape[0] != target.shape[0]:
            raise InputError(
                f"{mode}: deep supervision level {i}: logits {tuple(x.shape)} have batch "
                f"{x.shape[0] if x.dim() else 'none'} but target {tuple(target.shape)} has batch {target.shape[0]}; "
                f"every level must hold the same images"
            )
        if any(n == 0 for n in x.shape):
            raise InputError(
                f"{mode}: deep supervision level {i}: logits {tuple(x.shape)} have a zero-size axis; every axis "
                f"needs at least one element (drop that level)"
            )
        if len(size) != rank:
            raise InputError(
                f"{mode}: deep supervision level {i}: logits {tuple(x.shape)} have {len(size)}D spatial axes but "
                f"level 0 {tuple(levels[0].shape)} has {rank}D; every level must have the same spatial rank"
            )
        if any(a > b for a, b in zip(size, t_size)):
            raise InputError(
                f"{mode}: deep supervision level {i}: logits spatial size {size} is larger than the target's "
                f"{t_size} along some axis; the target is only downsampled, so give it at the full resolution"
            )
    total: Tensor | None = None
    summed: dict[str, Tensor] = {}
    for x, wl in zip(levels, w):
        if wl == 0:
            continue
        size = _spatial(x, mode)
        m = None if mask is None else resize_nearest(mask, size)
        loss, terms = criterion.forward(x, resize_nearest(target, size), return_terms=True, mask=m)
        total = loss * wl if total is None else total + loss * wl
        for k, v in terms.items():
            summed[k] = v * wl if k not in summed else summed[k] + v * wl
    assert total is not None  # some weight is > 0
    criterion.last_terms = {k: v.detach() for k, v in summed.items()}
    return (total, summed) if return_terms else total
