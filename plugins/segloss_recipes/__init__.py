"""Named recipes: spec strings registered under a name, expanded into their terms at build time.

``dice_bce`` is the seed's DiceBCELoss: ``build_loss("dice_bce")`` builds ``bce + dice`` with
weights 1 and 1.

>>> import torch
>>> from segloss_registry import build_loss
>>> logits = torch.tensor([[[0.0, 2.0]]])  # (N=1, C=1, 2): binary, 1D, p = (0.5, 0.881)
>>> target = torch.tensor([[[0.0, 1.0]]])
>>> criterion = build_loss("dice_bce", compile=False)
>>> criterion.keys
('bce', 'dice')
>>> round(criterion(logits, target).item(), 4)  # bce (log 2 + log(1 + e^-2)) / 2 + dice 1 - 2.762 / 3.381
0.5932
"""

from __future__ import annotations

from segloss_registry import Recipe, losses_hook

__all__ = ["dice_bce"]

dice_bce = Recipe("dice_bce", "bce+dice", summary="the seed's DiceBCELoss: bce + dice with weights 1 and 1")

register_losses = losses_hook(dice_bce)
