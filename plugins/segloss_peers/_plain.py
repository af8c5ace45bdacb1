"""The "plain" peers: each loss's formula written plainly, one function per term, as a user would.

Each term computes its own sigmoid / softmax (nothing is shared between terms), with torch's
fused ``binary_cross_entropy_with_logits`` / ``cross_entropy`` where torch has one, focal as
torchvision's ``sigmoid_focal_loss``, Dice and IoU from the per-class sums. Wrapped in
``torch.compile`` by the benchmark, they answer "what does a user get who compiles their own code?".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import PeerFn, no_class_weights, param, refuse_if, scaled


def _probs_and_onehot(logits: Tensor, target: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    if mode == "multiclass":
        p = torch.softmax(logits.float(), 1)
        y = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).to(p.dtype)
        return p, y
    return torch.sigmoid(logits.float()), target.float()


def _sums(term: Any, mode: str, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, sum of p, sum of t per class (C,), or per sample and class (N, C)."""
    p, y = _probs_and_onehot(logits, target, mode)
    dims = [0, *range(2, p.dim())]
    if param(term, "per_image", False):
        dims = list(range(2, p.dim()))
    return (p * y).sum(dims), p.sum(dims), y.sum(dims)


def _class_mean(term: Any, mode: str, per_class: Tensor) -> Tensor:
    if mode == "multiclass" and not param(term, "include_background", True):
        per_class = per_class[..., 1:]
    return per_class.mean()


def dice(terms: Sequence[Any], mode: str) -> PeerFn:
    (t,) = terms
    no_class_weights(t)
    s = float(t.params.smooth)

    def run(logits: Tensor, target: Tensor) -> Tensor:
        i, ps, ts = _sums(t, mode, logits, target)
        return _class_mean(t, mode, 1 - (2 * i + s) / (ps + ts + s))

    return scaled(run, t.weight)


def iou(terms: Sequence[Any], mode: str) -> PeerFn:
    (t,) = terms
    no_class_weights(t)
    s = float(t.params.smooth)

    def run(logits: Tensor, target: Tensor) -> Tensor:
        i, ps, ts = _sums(t, mode, logits, target)
        return _class_mean(t, mode, 1 - (i + s) / (ps + ts - i + s))

    return scaled(run, t.weight)


def bce(terms: Sequence[Any], mode: str) -> PeerFn:
    (t,) = terms
    refuse_if(mode == "multiclass", "bce is for binary and multilabel targets")
    pw = param(t, "pos_weight")

    def run(logits: Tensor, target: Tensor) -> Tensor:
        w = None
        if pw is not None:
            vals = pw if isinstance(pw, list) else [pw]
            w = torch.tensor(vals, device=logits.device).view(1, -1, *([1] * (logits.dim() - 2)))
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=w)

    return scaled(run, t.weight)


def ce(terms: Sequence[Any], mode: str) -> PeerFn:
    (t,) = terms
    refuse_if(mode != "multiclass", "ce is for multiclass targets")
    cw = param(t, "class_weights")
    ls = float(param(t, "label_smoothing", 0.0))

    def run(logits: Tensor, target: Tensor) -> Tensor:
        w = None if cw is None else torch.tensor(cw, device=logits.device)
        return F.cross_entropy(logits.float(), target.long(), weight=w, label_smoothing=ls)

    return scaled(run, t.weight)


def focal(terms: Sequence[Any], mode: str) -> PeerFn:
    """torchvision's ``sigmoid_focal_loss`` (mean); multiclass: the softmax form per pixel."""
    (t,) = terms
    alpha = param(t, "alpha")
    gamma = float(t.params.gamma)
    refuse_if(isinstance(alpha, list), "focal: a per-class alpha list")

    def sigmoid_focal(logits: Tensor, target: Tensor) -> Tensor:
        x, y = logits.float(), target.float()
        p = torch.sigmoid(x)
        ce_loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce_loss * ((1 - p_t) ** gamma)
        if alpha is not None:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
        return loss.mean()

    def softmax_focal(logits: Tensor, target: Tensor) -> Tensor:
        ids = target.long().unsqueeze(1)
        logp = torch.log_softmax(logits.float(), 1).gather(1, ids)
        loss = -((1 - logp.exp()) ** gamma) * logp
        if alpha is not None:  # class 0: 1 - alpha, the others alpha (MONAI's convention)
            loss = torch.where(ids == 0, 1 - alpha, alpha) * loss
        return loss.mean()

    return scaled(softmax_focal if mode == "multiclass" else sigmoid_focal, t.weight)


def tversky(terms: Sequence[Any], mode: str) -> PeerFn:
    """``1 - (I + s) / (I + alpha FP + beta FN + s)`` per class, then the class mean."""
    (t,) = terms
    no_class_weights(t)
    a, b, s = float(t.params.alpha), float(t.params.beta), float(t.params.smooth)

    def run(logits: Tensor, target: Tensor) -> Tensor:
        i, ps, ts = _sums(t, mode, logits, target)
        return _class_mean(t, mode, 1 - (i + s) / (i + a * (ps - i) + b * (ts - i) + s))

    return scaled(run, t.weight)
