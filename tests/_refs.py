"""Independent reference formulas for the tests: plain torch, float64, written from the papers/DESIGN.md.

Nothing here imports segloss_registry. Shapes: logits (N, C, *S); for binary C = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def probs(logits: torch.Tensor, mode: str) -> torch.Tensor:
    return torch.softmax(logits, 1) if mode == "multiclass" else torch.sigmoid(logits)


def onehot(ids: torch.Tensor, C: int) -> torch.Tensor:
    return F.one_hot(ids.long(), C).movedim(-1, 1).to(torch.float64)


def per_class_sums(x: torch.Tensor, per_image: bool) -> torch.Tensor:
    dims = tuple(range(2, x.dim())) if per_image else (0, *range(2, x.dim()))
    return x.sum(dims)


def soft_intersection(p, t):
    """sum(min(p, t)): p t on 0/1 targets, the soft-label intersection (MONAI soft_label=True) otherwise."""
    return torch.minimum(p, t)


def dice(p, t, smooth=1.0, per_image=False):
    i = per_class_sums(soft_intersection(p, t), per_image)
    ps = per_class_sums(p, per_image)
    ts = per_class_sums(t, per_image)
    d = 1 - (2 * i + smooth) / (ps + ts + smooth)
    return d.mean(-1).mean()


def iou(p, t, smooth=1.0, per_image=False):
    i = per_class_sums(soft_intersection(p, t), per_image)
    u = per_class_sums(p, per_image) + per_class_sums(t, per_image) - i
    return (1 - (i + smooth) / (u + smooth)).mean(-1).mean()


def bce(logits, t, pos_weight=None):
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=logits.dtype).view(1, -1, *([1] * (logits.dim() - 2)))
    return F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw)


def focal_sigmoid(logits, t, alpha=0.25, gamma=2.0):
    # torchvision.ops.sigmoid_focal_loss, transcribed
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def focal_softmax(logits, t, alpha=0.25, gamma=2.0):
    logp = F.log_softmax(logits, 1)
    loss = -(t * (1 - logp.exp()) ** gamma * logp)
    if alpha is not None:
        C = logits.shape[1]
        a = torch.tensor([1 - alpha] + [alpha] * (C - 1), dtype=logits.dtype).view(1, C, *([1] * (logits.dim() - 2)))
        loss = loss * a
    return loss.sum(1).mean()


def active_contour(p, t, weight=10.0):
    """The seed's formula (with C_in fixed) in 2D; the same construction over three axes in 3D."""
    if p.dim() == 4:
        dr = p[:, :, 1:, :] - p[:, :, :-1, :]
        dc = p[:, :, :, 1:] - p[:, :, :, :-1]
        dr = dr[:, :, 1:, :-2] ** 2
        dc = dc[:, :, :-2, 1:] ** 2
        length = torch.mean(torch.sqrt(torch.abs(dr + dc) + 1e-8))
    else:
        dd = (p[:, :, 1:] - p[:, :, :-1])[:, :, 1:, :-2, :-2] ** 2
        dh = (p[:, :, :, 1:] - p[:, :, :, :-1])[:, :, :-2, 1:, :-2] ** 2
        dw = (p[:, :, :, :, 1:] - p[:, :, :, :, :-1])[:, :, :-2, :-2, 1:] ** 2
        length = torch.mean(torch.sqrt(dd + dh + dw + 1e-8))
    region = torch.mean(p * (t - 1) ** 2) + torch.mean((1 - p) * t**2)
    return weight * length + region


def boundary(p, t, theta0=3, theta=5):
    """Bokhovkin et al.'s BF1 loss (the seed's code without its squeeze/crop/clamp), p and t (N, C, *S)."""
    pool = {3: F.max_pool1d, 4: F.max_pool2d, 5: F.max_pool3d}[p.dim()]
    gt_b = pool(1 - t, kernel_size=theta0, stride=1, padding=(theta0 - 1) // 2) - (1 - t)
    pred_b = pool(1 - p, kernel_size=theta0, stride=1, padding=(theta0 - 1) // 2) - (1 - p)
    gt_b_ext = pool(gt_b, kernel_size=theta, stride=1, padding=(theta - 1) // 2)
    pred_b_ext = pool(pred_b, kernel_size=theta, stride=1, padding=(theta - 1) // 2)
    n, c = p.shape[:2]
    gt_b, pred_b = gt_b.reshape(n, c, -1), pred_b.reshape(n, c, -1)
    gt_b_ext, pred_b_ext = gt_b_ext.reshape(n, c, -1), pred_b_ext.reshape(n, c, -1)
    P = torch.sum(pred_b * gt_b_ext, dim=2) / (torch.sum(pred_b, dim=2) + 1e-7)
    R = torch.sum(pred_b_ext * gt_b, dim=2) / (torch.sum(gt_b, dim=2) + 1e-7)
    bf1 = 2 * P * R / (P + R + 1e-7)
    return torch.mean(1 - bf1)


class SeedDiceBCELoss(torch.nn.Module):
    """The seed's DiceBCELoss, verbatim but for the deprecated F.sigmoid spelling."""

    def forward(self, inputs, targets, smooth=1):
        inputs = torch.sigmoid(inputs)
        inputs = inputs.view(-1)
        targets = targets.view(-1)
        intersection = (inputs * targets).sum()
        dice_loss = 1 - (2.0 * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
        BCE = F.binary_cross_entropy(inputs, targets, reduction="mean")
        return BCE + dice_loss
