"""A small U-Net-like model for the demo (Ronneberger et al. 2015, shrunk for a laptop CPU)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._errors import InputError

__all__ = ["TinyUNet"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU; spatial size kept."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """U-Net with ``depth`` poolings: (N, in_channels, H, W) -> logits (N, out_channels, H, W).

    Widths ``width * 2**level``; H and W must be divisible by ``2**depth``. Encoder: a block,
    then (max-pool, block) ``depth`` times; decoder: (2x transposed conv, concat the skip,
    block) ``depth`` times; a 1x1 convolution gives the logits.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_block(in_channels, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        step = 2**self.depth
        if x.shape[-1] % step or x.shape[-2] % step:
            raise InputError(f"TinyUNet: H and W must be divisible by 2**depth = {step} (got {tuple(x.shape[-2:])}); "
                             "resize or pad the images, or build the model with a smaller depth")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else torch.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        logits: Tensor = self.head(x)
        return logits
