"""The seed's own modules (``seed_reference``) as peers: binary only, logits, default parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from . import seed_reference as seed
from ._common import PeerFn, one_weight, param, refuse_if, scaled

FOCAL_NOTE = "seed's focal: on the batch-mean BCE, alpha 0.8"


def _binary(mode: str) -> None:
    refuse_if(mode != "binary", "the seed's losses are binary only")


def _region_defaults(term: Any) -> None:
    refuse_if(param(term, "smooth", 1.0) != 1.0, f"{term.info.name}: the seed's smooth is 1")
    refuse_if(param(term, "per_image", False), f"{term.info.name}: the seed flattens the batch (no per_image)")


def _module(cls: type[nn.Module], terms: Sequence[Any]) -> PeerFn:
    mod = cls()
    return scaled(mod, one_weight(terms))


def dice_bce(terms: Sequence[Any], mode: str) -> PeerFn:
    _binary(mode)
    bce, dice = terms
    refuse_if(param(bce, "pos_weight") is not None, "bce: the seed has no pos_weight")
    _region_defaults(dice)
    return _module(seed.DiceBCELoss, terms)


def dice(terms: Sequence[Any], mode: str) -> PeerFn:
    _binary(mode)
    _region_defaults(terms[0])
    return _module(seed.DiceLoss, terms)


def iou(terms: Sequence[Any], mode: str) -> PeerFn:
    _binary(mode)
    _region_defaults(terms[0])
    return _module(seed.IoULoss, terms)


def focal(terms: Sequence[Any], mode: str) -> PeerFn:
    _binary(mode)  # the seed's formula ignores alpha and gamma (FOCAL_NOTE)
    return _module(seed.FocalLoss, terms)
