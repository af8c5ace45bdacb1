"""Online hard example mining cross-entropy (mmsegmentation's ``OhemCrossEntropy``, from PIDNet).

The cross-entropy averaged over the hard pixels only: those whose probability of the target
class is below ``threshold``, and at least the ``min_kept`` pixels where it is lowest::

    q_i   = sum_c t_ic p_ic              multiclass (softmax): the target-class probability
    q_i   = p_i t_i + (1 - p_i)(1 - t_i) binary, multilabel (sigmoid), per element
    CE_i  = -sum_c w_c t_ic log p_ic     multiclass;  -w_c (t log p + (1 - t) log(1 - p)) sigmoid
    kept  = {i valid : q_i < threshold} ∪ {the min_kept valid i with the lowest q_i}
    OHEM  = sum_{i in kept} m_i CE_i / sum_{i in kept} m_i

``m_i`` is the mask weight (``ignore_index`` pixels: 0, never kept, never counted); ``w_c`` are
the optional ``class_weights`` (as ``F.cross_entropy(weight=...)`` per pixel, then the plain
mean over the kept pixels, as mmseg). The lowest ``min_kept`` come from ``torch.topk`` of a
size taken from the shape (``min(min_kept, numel)``), the rest is masks: no host sync,
traceable by ``torch.compile(fullgraph=True)``.

Defaults: ``threshold = 0.7``, ``min_kept = 100000`` (mmseg). mmseg keeps ``q < max(q_(m),
threshold)`` with ``q_(m)`` the ``min(min_kept, n - 1)``-th smallest value; that is this rule
when more than ``min_kept`` pixels are valid (and no tie at ``q_(m)``). With at most
``min_kept`` valid pixels mmseg drops the easiest pixel(s) (``q`` equal to the largest), and
keeps nothing (NaN) when ``q`` is the same above-threshold value everywhere; here every valid
pixel is kept: the plain mean CE. Ties at the ``min_kept``-th lowest ``q`` are all kept.
Empty masks: a mean of CE values, 0 when nothing is valid.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, check_class_weights, losses_hook, per_class

__all__ = ["OhemParams", "ohem_ce", "ohem_ce_loss"]


class OhemParams(LossParams):
    threshold: float = Field(0.7, gt=0, le=1, description="pixels whose target-class probability is below this "
                             "are hard; in (0, 1]")
    min_kept: int = Field(100000, ge=1, description="at least this many of the hardest valid pixels are kept; >= 1")
    class_weights: list[float] | None = Field(
        None, description="weight of each class (channel) in the per-pixel CE, >= 0; one per class",
        json_schema_extra=per_class(),
    )

    @field_validator("class_weights")
    @classmethod
    def _weights_ok(cls, v: list[float] | None) -> list[float] | None:
        return check_class_weights(v)


def ohem_ce(inp: Inputs, params: OhemParams) -> Tensor:
    r"""Online hard example mining cross-entropy (mmsegmentation's ``OhemCrossEntropy``); a 0-dim tensor.

    .. math::

        \text{kept} = \{i : q_i < \text{threshold}\} \cup \{\text{the min\_kept valid } i
        \text{ of lowest } q_i\},\quad
        L = \frac{\sum_{i \in \text{kept}} m_i \mathrm{CE}_i}{\sum_{i \in \text{kept}} m_i}

    ``q_i`` the probability of the target class (multiclass: ``sum_c t_ic p_ic``; sigmoid:
    ``p t + (1 - p)(1 - t)`` per element), ``CE_i`` the (class-weighted) cross-entropy, ``m_i``
    the mask weight (ignored pixels are never kept). No host sync: the min_kept-th lowest
    ``q`` comes from ``torch.topk`` of a size taken from the shape.

    Shapes (plain function ``ohem_ce_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``OhemParams``):
        threshold: pixels with ``q`` below it are hard, default 0.7.
        min_kept: at least this many of the hardest valid pixels are kept, default 100000.
        class_weights: weight of each class (channel) in the per-pixel CE, one per class.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): q = (0.5, 0.881)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> round(ohem_ce_loss(logits, target, min_kept=1).item(), 4)  # only q = 0.5 < 0.7: log 2
        0.6931
        >>> round(ohem_ce_loss(logits, target).item(), 4)  # min_kept >= 2 pixels: (log 2 + log(1 + e^-2)) / 2
        0.41
    """
    t, p = inp.target, inp.prob
    cw = None
    if params.class_weights is not None:
        cw = torch.tensor(params.class_weights, dtype=t.dtype, device=t.device).view(1, -1, *([1] * (t.dim() - 2)))
    if inp.mode == "multiclass":
        tw = t if cw is None else t * cw
        loss = -(tw * inp.log_prob).sum(1, keepdim=True)
        q = (t * p).sum(1, keepdim=True)
    else:
        loss = inp.bce_elements() if cw is None else inp.bce_elements() * cw
        q = torch.addcmul(1 - t - p, p, t, value=2.0)  # p t + (1 - p)(1 - t)
    flat, q = loss.reshape(-1), q.detach().reshape(-1)
    n = flat.numel()
    w = None if inp.mask is None else inp.mask.expand_as(loss).reshape(-1)
    valid = torch.ones_like(q, dtype=torch.bool) if w is None else w > 0
    k = min(params.min_kept, n)  # from the shape
    if k < n:
        score = torch.where(valid, q, torch.full_like(q, 2.0))  # ignored pixels are never among the hardest
        # the k-th lowest score: every valid pixel at or below it is among the min_kept hardest
        kth = torch.topk(score, k, largest=False, sorted=False).values.max()
        keep = valid & ((q < params.threshold) | (score <= kth))
    else:  # min_kept >= numel: every valid pixel is among the min_kept hardest
        keep = valid
    weight = keep.to(flat.dtype) if w is None else torch.where(keep, w, torch.zeros_like(w))
    total = weight.sum()
    return (flat * weight).sum() / torch.where(total > 0, total, torch.ones_like(total))


ohem_ce_loss = Loss("ohem_ce", ohem_ce, OhemParams, aliases=("ohem",),
                    summary="mean CE of the pixels with target probability < threshold, at least min_kept (mmseg OHEM)")

register_losses = losses_hook(ohem_ce_loss)
