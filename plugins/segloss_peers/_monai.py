"""MONAI's losses (and torch's BCE / cross-entropy, which MONAI leaves to torch) as peers.

Imported lazily: ``monai`` is a dev extra; without it the benchmark's MONAI row says "not installed".
The target adapters: MONAI wants a channel axis on class ids (``to_onehot_y``); torch's
``CrossEntropyLoss`` takes the ids as they are.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._common import PeerFn, no_class_weights, no_spacing, param, refuse_if, scaled

MULTICLASS_FOCAL_NOTE = "MONAI's multiclass focal also averages over classes (ours / C)"


def _losses() -> Any:
    return importlib.import_module("monai.losses")


def _act(mode: str) -> dict[str, Any]:
    return {"softmax": True, "to_onehot_y": True} if mode == "multiclass" else {"sigmoid": True}


def _with_target(mod: nn.Module, mode: str) -> PeerFn:
    """``mod(logits, target)`` with class ids given a channel axis in multiclass mode."""
    if mode != "multiclass":
        return mod

    def run(logits: Tensor, target: Tensor) -> Tensor:
        return mod(logits, target.unsqueeze(1))  # type: ignore[no-any-return]

    return run


def _region(term: Any, mode: str) -> dict[str, Any]:
    no_class_weights(term)
    kw: dict[str, Any] = {"smooth_nr": term.params.smooth, "smooth_dr": term.params.smooth,
                          "batch": not param(term, "per_image", False)}
    if mode == "multiclass":
        kw["include_background"] = param(term, "include_background", True)
    return kw


def _focal_kw(term: Any) -> dict[str, Any]:
    alpha = param(term, "alpha")
    refuse_if(isinstance(alpha, list), "focal: a per-class alpha list (MONAI weighs negatives differently)")
    return {"gamma": term.params.gamma, "alpha": alpha}


def _plain_ce(term: Any, what: str) -> None:
    refuse_if(param(term, "pos_weight") is not None or param(term, "class_weights") is not None,
              f"{what}: weighted cross-entropy")
    refuse_if(param(term, "label_smoothing", 0.0), f"{what}: label_smoothing")


def dice_focal(terms: Sequence[Any], mode: str) -> PeerFn:
    ml = _losses()

    d, f = terms
    mod = ml.DiceFocalLoss(**_act(mode), **_region(d, mode), **_focal_kw(f), lambda_dice=d.weight,
                           lambda_focal=f.weight)
    return _with_target(mod, mode)


def dice_ce(terms: Sequence[Any], mode: str) -> PeerFn:
    ml = _losses()

    d, c = terms
    _plain_ce(c, "DiceCELoss")
    mod = ml.DiceCELoss(**_act(mode), **_region(d, mode), lambda_dice=d.weight, lambda_ce=c.weight)
    return _with_target(mod, mode)


def dice(terms: Sequence[Any], mode: str) -> PeerFn:
    ml = _losses()

    (t,) = terms
    return scaled(_with_target(ml.DiceLoss(**_act(mode), **_region(t, mode)), mode), t.weight)


def jaccard(terms: Sequence[Any], mode: str) -> PeerFn:
    ml = _losses()

    (t,) = terms
    kw = _region(t, mode)  # MONAI's jaccard is 1 - (2I + s_nr) / (2U + s_dr): 2s gives ours, (I + s) / (U + s)
    kw["smooth_nr"] = kw["smooth_dr"] = 2 * t.params.smooth
    return scaled(_with_target(ml.DiceLoss(**_act(mode), **kw, jaccard=True), mode), t.weight)


def focal(terms: Sequence[Any], mode: str) -> PeerFn:
    ml = _losses()

    (t,) = terms
    kw: dict[str, Any] = {"use_softmax": True, "to_onehot_y": True} if mode == "multiclass" else {}
    return scaled(_with_target(ml.FocalLoss(**kw, **_focal_kw(t)), mode), t.weight)


def bce(terms: Sequence[Any], mode: str) -> PeerFn:
    (t,) = terms
    refuse_if(mode == "multiclass", "BCEWithLogitsLoss is for binary and multilabel targets")
    refuse_if(param(t, "pos_weight") is not None, "bce: pos_weight")
    return scaled(nn.BCEWithLogitsLoss(), t.weight)


def ce(terms: Sequence[Any], mode: str) -> PeerFn:
    (t,) = terms
    refuse_if(mode != "multiclass", "CrossEntropyLoss is for multiclass targets")
    _plain_ce(t, "ce")
    return scaled(nn.CrossEntropyLoss(), t.weight)


DISTANCE = {"surface": "BoundaryLoss", "hausdorff_dt": "HausdorffDTLoss", "log_hausdorff_dt": "LogHausdorffDTLoss"}


def distance(terms: Sequence[Any], mode: str) -> PeerFn:
    """MONAI's BoundaryLoss / HausdorffDTLoss / LogHausdorffDTLoss (scipy distance maps on the host)."""
    ml = _losses()

    (t,) = terms
    no_class_weights(t)
    no_spacing(t)
    kw: dict[str, Any] = {"include_background": param(t, "include_background", True), **_act(mode)}
    if t.info.name != "surface":
        kw["alpha"] = t.params.alpha
    return scaled(_with_target(getattr(ml, DISTANCE[t.info.name])(**kw), mode), t.weight)


def distance_maps(terms: Sequence[Any], mode: str) -> PeerFn:
    """MONAI's distance-map computations for ``terms``, as its losses run them (no loss, no backward)."""
    ml = _losses()
    one_hot = importlib.import_module("monai.networks").one_hot

    for t in terms:
        no_spacing(t)

    def maps(logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            if mode == "multiclass":
                p = torch.softmax(logits.detach(), 1)
                y = one_hot(target.unsqueeze(1), num_classes=logits.shape[1])
            else:
                p, y = torch.sigmoid(logits.detach()), target
            out = []
            for term in terms:
                keep_bg = param(term, "include_background", True) or mode != "multiclass"
                a, b = (p, y) if keep_bg else (p[:, 1:], y[:, 1:])
                if term.info.name == "surface":
                    out.append(ml.BoundaryLoss().compute_distance_map(b).sum())
                else:
                    hd = ml.HausdorffDTLoss()
                    for i in range(a.shape[1]):  # as HausdorffDTLoss.forward: per channel
                        out.append(hd.distance_field(a[:, [i]]).sum() + hd.distance_field(b[:, [i]]).sum())
            return torch.stack(out).sum()

    return maps


def tversky(terms: Sequence[Any], mode: str) -> PeerFn:
    ml = _losses()

    (t,) = terms
    kw = _region(t, mode)
    mod = ml.TverskyLoss(**_act(mode), **kw, alpha=t.params.alpha, beta=t.params.beta)
    return scaled(_with_target(mod, mode), t.weight)
