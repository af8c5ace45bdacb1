"""Peers of the built-in losses, for ``segloss bench`` (the ``register_peers`` hook).

Four libraries:

- ``seed``: the seed's own modules (``segloss_peers.seed_reference``, verbatim, bugs included):
  ``DiceBCELoss`` (bce + dice with one weight), ``DiceLoss``, ``IoULoss``, ``FocalLoss``; binary only;
- ``MONAI``: ``DiceFocalLoss``, ``DiceCELoss`` (dice with bce or ce), ``DiceLoss`` (and
  ``jaccard=True`` for iou), ``FocalLoss``, ``TverskyLoss``, torch's ``BCEWithLogitsLoss`` / ``CrossEntropyLoss``,
  and the distance-map losses ``BoundaryLoss``, ``HausdorffDTLoss``, ``LogHausdorffDTLoss``; its
  "distance maps only" part times scipy's transforms alone;
- ``plain``: each formula written plainly (torch's fused BCE and cross-entropy, torchvision's
  focal, Dice and IoU from per-class sums), one function per term;
- ``segloss``: our own distance maps alone (the "distance maps only" part).
"""

from __future__ import annotations

from segloss_registry import RegisterPeer, hookimpl

from . import _maps, _monai, _plain, _seed

__all__ = ["register_peers"]

_DISTANCE = tuple(_monai.DISTANCE)
_MAPS = "distance maps only"


@hookimpl
def register_peers(register: RegisterPeer) -> None:
    seed = "seed"
    register(seed, "DiceBCELoss", ("bce", "dice"), _seed.dice_bce)
    register(seed, "DiceLoss", ("dice",), _seed.dice)
    register(seed, "IoULoss", ("iou",), _seed.iou)
    register(seed, "FocalLoss", ("focal",), _seed.focal, note=_seed.FOCAL_NOTE)

    monai, need = "MONAI", ("monai",)
    register(monai, "DiceFocalLoss", ("dice", "focal"), _monai.dice_focal, requires=need)
    register(monai, "DiceCELoss", ("dice", "ce"), _monai.dice_ce, requires=need)
    register(monai, "DiceCELoss", ("dice", "bce"), _monai.dice_ce, requires=need)
    register(monai, "DiceLoss", ("dice",), _monai.dice, requires=need)
    register(monai, "DiceLoss(jaccard)", ("iou",), _monai.jaccard, requires=need)
    register(monai, "FocalLoss", ("focal",), _monai.focal, requires=need)
    register(monai, "TverskyLoss", ("tversky",), _monai.tversky, requires=need)
    register(monai, "BCEWithLogits", ("bce",), _monai.bce)
    register(monai, "CrossEntropy", ("ce",), _monai.ce)
    for name in _DISTANCE:
        register(monai, _monai.DISTANCE[name], (name,), _monai.distance, requires=need, engine="scipy",
                 compile=False)
        register(monai, _MAPS, (name,), _monai.distance_maps, requires=need, part=_MAPS, engine="scipy",
                 compile=False)
        register("segloss", _MAPS, (name,), _maps.distance_maps, part=_MAPS)

    plain = "plain"
    register(plain, "bce", ("bce",), _plain.bce)
    register(plain, "ce", ("ce",), _plain.ce)
    register(plain, "dice", ("dice",), _plain.dice)
    register(plain, "iou", ("iou",), _plain.iou)
    register(plain, "focal", ("focal",), _plain.focal)
    register(plain, "tversky", ("tversky",), _plain.tversky)
