"""The one ``make_inputs``: random logits and a target for a mode (the bench's and the testing kit's)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._errors import SeglossError
from .config import DTYPES

__all__ = ["make_inputs", "usable_device"]


def usable_device(device: str) -> torch.device:
    """``torch.device(device)`` after a tiny allocation on it; a ``SeglossError`` naming the fix if it fails."""
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        raise SeglossError(f"bench: device {device!r} is not usable here ({str(exc).splitlines()[0]}); "
                           f"use --device cpu") from None
    return dev


def make_inputs(mode: str, shape: Sequence[int], dtype: str = "float32", device: str = "cpu", seed: int = 0, *,
                scale: float = 2.0, foreground: float = 0.3, empty: bool = False,
                requires_grad: bool = True) -> tuple[Tensor, Tensor]:
    """Random logits ``scale * randn(shape)`` and a target for ``mode``, from one seeded generator.

    binary / multilabel: target in {0, 1} of the logits' shape and dtype (``foreground`` of it 1);
    multiclass: int64 class ids (N, *S) drawn uniformly from [0, C). ``empty``: an all-background
    target. ``requires_grad``: the logits are a leaf that requires grad (the benchmark's step).
    """
    if dtype not in DTYPES:
        raise SeglossError(f"bench: dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    dev = usable_device(device)
    from ..scenarios import parse_shape

    shp = parse_shape(list(shape))
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(shp, generator=g)).to(device=dev, dtype=DTYPES[dtype])
    if mode == "multiclass":
        target = torch.randint(0, shp[1], (shp[0], *shp[2:]), generator=g).to(dev)
    elif mode in ("binary", "multilabel"):
        target = (torch.rand(shp, generator=g) < foreground).to(device=dev, dtype=DTYPES[dtype])
    else:
        raise SeglossError(f"bench: mode must be binary, multiclass or multilabel (got {mode!r})")
    if empty:
        target.zero_()
    return logits.requires_grad_(requires_grad), target
