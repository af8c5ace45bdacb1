"""A synthetic segmentation data set made in code: shapes on noisy, textured backgrounds.

Each sample is an RGB image (3,H,W) in [0,1] with 1 to 3 shapes (disc, rectangle, triangle)
drawn at random positions, sizes, angles and colours over a low-frequency textured, noisy
background. Labels:

- ``binary``: (1,H,W) float {0,1}, 1 where any shape is;
- ``multiclass``: (H,W) int64 class ids, 0 background, 1 disc, 2 rectangle, 3 triangle
  (a later shape covers an earlier one).

Sample ``i`` of seed ``s`` is drawn from its own generator seeded by ``(s, i)``, so a sample never
depends on how many others were made; the train split is indices ``[0, n_train)`` and the
held-out split ``[n_train, n_train + n_val)`` of the same seed, so the two never share a sample.
Nothing is downloaded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._errors import SeglossError

__all__ = ["CLASSES", "TASKS", "SegData", "make_samples", "make_split", "make_splits"]

CLASSES = ("background", "disc", "rectangle", "triangle")
TASKS = ("binary", "multiclass")
_SEED_STRIDE = 1_000_003  # a prime: (seed, index) pairs map to distinct generator seeds
_SLOTS = 3  # at most this many shapes per image
_GRATINGS = 3  # sine gratings per texture


@dataclass(frozen=True)
class SegData:
    """Images (N,3,H,W) float32 in [0,1]; targets (N,1,H,W) float (binary) or (N,H,W) int64 (multiclass)."""

    images: Tensor
    targets: Tensor
    task: str

    @property
    def num_classes(self) -> int:
        """Channels of the model's logits: 1 for binary, 4 for multiclass."""
        return 1 if self.task == "binary" else len(CLASSES)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> SegData:
        return SegData(self.images.to(device), self.targets.to(device), self.task)


def _check(task: str, size: int) -> None:
    if task not in TASKS:
        raise SeglossError(f"demo: task must be one of {', '.join(TASKS)} (got {task!r})")
    if not isinstance(size, int) or size < 16:
        raise SeglossError(f"demo: image size must be an int >= 16 (got {size!r})")


def _params(seed: int, index: int, size: int) -> dict[str, list[float]]:
    """The random parameters of one sample, drawn from its own generator ``(seed, index)``."""
    rng = random.Random(seed * _SEED_STRIDE + index)
    u = rng.random
    p: dict[str, list[float]] = {
        # background: a grey-ish base in the darker half, a slight tint, a smooth texture
        "bg": [0.20 + 0.20 * u() + 0.06 * (u() - 0.5) for _ in range(3)],
        "bg_tex": [v for _ in range(_GRATINGS) for v in (u() * math.pi, 0.5 + 2.5 * u(), u() * 2 * math.pi)],
        "noise_seed": [float(rng.getrandbits(52))],
    }
    n_shapes = rng.randint(1, _SLOTS)
    for k in range(_SLOTS):
        r = size * (0.10 + 0.12 * u())  # 10-22 % of the side
        p[f"s{k}"] = [
            float(rng.randint(1, 3)) if k < n_shapes else 0.0,  # kind: 1 disc, 2 rectangle, 3 triangle, 0 none
            r, r + (size - 2 * r) * u(), r + (size - 2 * r) * u(),  # radius, cx, cy
            u() * math.pi, 0.45 + 0.45 * u(),  # angle, rectangle aspect
            *(0.5 * (u() - 0.5) for _ in range(3)),  # triangle vertex jitter (radians)
            *(0.45 + 0.45 * u() for _ in range(3)),  # colour: brighter than the background on average
        ]
        p[f"t{k}"] = [v for _ in range(_GRATINGS) for v in (u() * math.pi, 0.5 + 2.5 * u(), u() * 2 * math.pi)]
    return p


def _texture(params: Tensor, xx: Tensor, yy: Tensor, amplitude: float) -> Tensor:
    """Smooth textures (N,H,W) from (N, 3*G) grating parameters (angle, cycles per side, phase)."""
    size = xx.shape[-1]
    th, fr, ph = (params.view(-1, _GRATINGS, 3)[..., i, None, None] for i in range(3))
    waves = torch.sin(fr * (2 * math.pi / size) * (xx * torch.cos(th) + yy * torch.sin(th)) + ph)
    return waves.sum(1) * (amplitude / _GRATINGS)


def _masks(s: Tensor, xx: Tensor, yy: Tensor) -> Tensor:
    """Boolean masks (N,H,W) of one shape slot from its (N, 12) parameters (kind 0 gives no shape)."""
    kind, r, cx, cy, angle, aspect = (s[:, i, None, None] for i in range(6))
    dx, dy = xx - cx, yy - cy
    disc = dx**2 + dy**2 <= r**2
    c, sn = torch.cos(angle), torch.sin(angle)
    rect = ((dx * c + dy * sn).abs() <= r) & ((-dx * sn + dy * c).abs() <= r * aspect)
    # triangle: three vertices on a circle of radius 1.25 r, counter-clockwise; inside = left of every edge
    a = [angle + k * 2 * math.pi / 3 + s[:, 6 + k, None, None] for k in range(3)]
    pts = [(cx + 1.25 * r * torch.cos(t), cy + 1.25 * r * torch.sin(t)) for t in a]
    tri = torch.ones_like(disc)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        tri = tri & ((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0)
    return ((kind == 1) & disc) | ((kind == 2) & rect) | ((kind == 3) & tri)


def make_samples(seed: int, indices: Sequence[int], size: int = 64) -> tuple[Tensor, Tensor]:
    """Samples ``indices`` of ``seed``: images (N,3,H,W) float32 in [0,1] and class ids (N,H,W) int64."""
    ps = [_params(seed, i, size) for i in indices]
    table = {key: torch.tensor([p[key] for p in ps], dtype=torch.float32) for key in ps[0]}
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    image = table["bg"][:, :, None, None] + _texture(table["bg_tex"], xx, yy, 0.10)[:, None]
    labels = torch.zeros(len(ps), size, size, dtype=torch.int64)
    for k in range(_SLOTS):
        s = table[f"s{k}"]
        mask = _masks(s, xx, yy)
        fill = s[:, 9:12, None, None] + _texture(table[f"t{k}"], xx, yy, 0.08)[:, None]
        image = torch.where(mask[:, None], fill, image)
        labels = torch.where(mask, s[:, 0, None, None].long(), labels)
    noise = torch.stack([
        torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(p["noise_seed"][0]))) for p in ps
    ])
    return (image + 0.10 * noise).clamp(0, 1), labels


def make_split(seed: int, start: int, count: int, task: str = "binary", size: int = 64) -> SegData:
    """Samples ``start .. start+count-1`` of ``seed`` as one batch for ``task``."""
    _check(task, size)
    images, labels = make_samples(seed, range(start, start + count), size)
    targets = (labels > 0).float().unsqueeze(1) if task == "binary" else labels
    return SegData(images, targets, task)


def make_splits(seed: int = 0, n_train: int = 512, n_val: int = 128, task: str = "binary",
                size: int = 64) -> tuple[SegData, SegData]:
    """The deterministic train split (indices ``[0, n_train)``) and held-out split (the next ``n_val``)."""
    if n_train < 1 or n_val < 1:
        raise SeglossError(f"demo: n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    return make_split(seed, 0, n_train, task, size), make_split(seed, n_train, n_val, task, size)
