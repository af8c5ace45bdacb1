"""Top-k cross-entropy (Wu et al. 2016, arXiv 1605.06885; nnU-Net's ``TopKLoss``).

The per-element cross-entropy, averaged over the ``k`` percent of the valid elements where it
is highest::

    CE_i = -sum_c t_ic log p_ic        multiclass (softmax), one value per pixel
    CE_i = -(t_i log p_i + (1 - t_i) log(1 - p_i))   binary, multilabel (sigmoid), per element
    K    = max(1, floor(k / 100 * n))  n = the number of valid elements (0 when none is valid)
    TopK = sum_{i in top K} w_i CE_i / sum_{i in top K} w_i

``w_i`` is the mask weight (1 without a mask; ``ignore_index`` pixels have weight 0 and are
never selected: they rank below every valid element and do not count in n). The selection is
``torch.topk`` over a size taken from the shape (``floor(k / 100 * numel)``), then its K-th
sorted value (K a tensor) is the threshold: no host sync, traceable by
``torch.compile(fullgraph=True)``. Elements tied with the K-th value share the remaining
weight equally (their CE is equal, so the value is the mean of exactly K of them).

Defaults: ``k = 10`` (nnU-Net's ``DiceTopK10``). ``k = 100`` is the plain mean CE. nnU-Net
computes ``mean(topk(CE, int(numel * k / 100)))`` with ignored voxels counted in numel (at loss
0); without ignored pixels this is that value (and it is not NaN where nnU-Net's count is 0).
Empty masks need no special value: the loss is a mean of CE values, 0 when nothing is valid.
Soft targets (float, multiclass one-hot/soft (N, C, *S)) enter the CE as written.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, LossParams, losses_hook

__all__ = ["TopKParams", "ce_elements", "top_percent_mean", "topk_ce", "topk_ce_loss"]


class TopKParams(LossParams):
    k: float = Field(10.0, gt=0, le=100, description="percent of the valid pixels (elements) with the highest CE "
                     "that are averaged, in (0, 100]; 10 as nnU-Net")


def ce_elements(inp: Inputs) -> Tensor:
    """Per-element cross-entropy: (N, 1, *S) for multiclass (summed over classes), (N, C, *S) otherwise."""
    if inp.mode == "multiclass":
        return -(inp.target * inp.log_prob).sum(1, keepdim=True)
    return inp.bce_elements()


def top_percent_mean(inp: Inputs, loss: Tensor, k: float) -> Tensor:
    """Mask-weighted mean of the ``k`` percent highest entries of ``loss`` among the valid ones.

    The K-th highest value comes from ``torch.topk`` of a size taken from the shape; the mean
    is then an elementwise selection (entries above it, and an equal share of the entries tied
    with it), so the gradient needs no scatter.
    """
    frac = Fraction(k).limit_denominator(10**6)
    num, den = frac.numerator, 100 * frac.denominator
    flat = loss.reshape(-1)
    n = flat.numel()
    k_max = min(n, max(1, (n * num) // den))  # from the shape: a Python (or symbolic) int
    if inp.mask is None:
        ranked, w = flat.detach(), None
        top = torch.topk(ranked, k_max, sorted=True).values
        K: Tensor | int = k_max
        kth = top[-1]
    else:
        w = inp.mask.expand_as(loss).reshape(-1)
        valid = w > 0
        ranked = torch.where(valid, flat.detach(), torch.full_like(flat, float("-inf")))  # ignored rank last
        top = torch.topk(ranked, k_max, sorted=True).values
        n_valid = valid.sum()
        K = torch.maximum((n_valid * num) // den, (n_valid > 0).to(n_valid.dtype))  # floor(k n / 100), >= 1
        kth = top.gather(0, (K - 1).clamp_min(0).view(1)).squeeze(0)  # nothing valid: -inf, K = 0
    above = ranked > kth
    tied = ranked == kth
    share = (K - above.sum()).to(flat.dtype) / tied.sum().clamp_min(1).to(flat.dtype)
    sel = torch.where(above, torch.ones_like(flat), torch.where(tied, share, torch.zeros_like(flat)))
    if w is not None:
        sel = sel * w
    total = sel.sum()
    return (flat * sel).sum() / torch.where(total > 0, total, torch.ones_like(total))


def topk_ce(inp: Inputs, params: TopKParams) -> Tensor:
    r"""Top-k cross-entropy (Wu et al. 2016, nnU-Net's ``TopKLoss``); a 0-dim tensor.

    .. math::

        K = \max\big(1, \lfloor k n / 100 \rfloor\big),\quad
        L = \frac{\sum_{i \in \text{top } K} w_i \mathrm{CE}_i}{\sum_{i \in \text{top } K} w_i}

    ``CE_i`` the per-pixel cross-entropy ``-sum_c t_ic log p_ic`` (multiclass, softmax) or the
    per-element binary cross-entropy (binary, multilabel), ``n`` the number of valid elements,
    ``w_i`` the mask weight; ignored pixels are never selected. Elements tied with the K-th
    value share the remaining weight. No host sync.

    Shapes (plain function ``topk_ce_loss(logits, target, mode=...)``):
        - binary: logits ``(N, 1, *S)`` or ``(N, *S)``, target the same, values in [0, 1];
        - multiclass: logits ``(N, C, *S)``, target ``(N, *S)`` class ids or ``(N, C, *S)``;
        - multilabel: logits and target ``(N, C, *S)``;
        - ``*S`` 1D, 2D or 3D; returns a 0-dim tensor.

    Parameters (``TopKParams``):
        k: percent of the valid elements with the highest CE that are averaged, in (0, 100],
            default 10; 100 is the plain mean CE.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 2.0, -1.0, 3.0]]])  # (N=1, C=1, 4): binary, 1D
        >>> target = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])  # CE = (0.693, 0.127, 1.313, 0.049)
        >>> round(topk_ce_loss(logits, target, k=50.0).item(), 4)  # the 2 highest: (1.313 + 0.693) / 2
        1.0032
    """
    return top_percent_mean(inp, ce_elements(inp), params.k)


topk_ce_loss = Loss("topk_ce", topk_ce, TopKParams, aliases=("topk",),
                    summary="mean CE of the k percent hardest pixels (nnU-Net TopKLoss, Wu et al. 2016), k = 10")

register_losses = losses_hook(topk_ce_loss)
