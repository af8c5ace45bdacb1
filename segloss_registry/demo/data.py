"""Synthetic segmentation data sets made in code: nothing is downloaded.

Tasks ``binary`` and ``multiclass``: each sample is an RGB image (3,H,W) in [0,1] with 1 to 3
shapes (disc, rectangle, triangle) drawn at random positions, sizes, angles and colours over a
low-frequency textured, noisy background. Labels:

- ``binary``: (1,H,W) float {0,1}, 1 where any shape is;
- ``multiclass``: (H,W) int64 class ids, 0 background, 1 disc, 2 rectangle, 3 triangle
  (a later shape covers an earlier one).

Task ``thin``: thin and tiny structures under heavy class imbalance, where the choice of loss
shows. Each image holds 1 to 3 thin curves (quadratic Bezier curves about 1 to 1.7 pixels
wide, like vessels or cracks) and 0 to 5 tiny dots (radius 0.7 to 1.5 pixels), painted 0.06
to 0.12 brighter than a textured background under noise of standard deviation 0.10; about 3 %
of the pixels are foreground (``make_thin_samples``). Labels as ``binary``: (1,H,W) float {0,1}.

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

__all__ = ["CLASSES", "TASKS", "SegData", "make_samples", "make_thin_samples", "make_split", "make_splits"]

CLASSES = ("background", "disc", "rectangle", "triangle")
TASKS = ("binary", "multiclass", "thin")
THIN_CURVES = (1, 3)  # curves per thin image (inclusive)
THIN_DOTS = (0, 5)  # dots per thin image (inclusive)
_SEED_STRIDE = 1_000_003  # a prime: (seed, index) pairs map to distinct generator seeds
_SLOTS = 3  # at most this many shapes per image
_GRATINGS = 3  # sine gratings per texture


@dataclass(frozen=True)
class SegData:
    """Images (N,3,H,W) float32 in [0,1]; targets (N,1,H,W) float (binary, thin) or (N,H,W) int64 (multiclass)."""

    images: Tensor
    targets: Tensor
    task: str

    @property
    def num_classes(self) -> int:
        """Channels of the model's logits: 1 for binary and thin, 4 for multiclass."""
        return len(CLASSES) if self.task == "multiclass" else 1

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


def _thin_params(seed: int, index: int, size: int) -> dict[str, list[float]]:
    """The random parameters of one thin-structure sample, from its own generator ``(seed, index)``."""
    rng = random.Random(seed * _SEED_STRIDE + index + 7 * _SEED_STRIDE**2)  # other streams than the shapes'
    u = rng.random
    p: dict[str, list[float]] = {
        "bg": [0.30 + 0.15 * u() + 0.04 * (u() - 0.5) for _ in range(3)],
        "bg_tex": [v for _ in range(_GRATINGS) for v in (u() * math.pi, 0.5 + 2.5 * u(), u() * 2 * math.pi)],
        "noise_seed": [float(rng.getrandbits(52))],
        "contrast": [0.06 + 0.06 * u()],  # structures this much brighter than the background, at noise 0.10
    }
    n_curves = rng.randint(*THIN_CURVES)
    for k in range(THIN_CURVES[1]):
        # a quadratic Bezier curve: two end points anywhere, a control point that bends it
        p[f"c{k}"] = [1.0 if k < n_curves else 0.0, *(size * u() for _ in range(6)), 0.45 + 0.4 * u()]  # half-width
    n_dots = rng.randint(*THIN_DOTS)
    for k in range(THIN_DOTS[1]):
        p[f"d{k}"] = [1.0 if k < n_dots else 0.0, 2 + (size - 4) * u(), 2 + (size - 4) * u(), 0.7 + 0.8 * u()]
    return p


def _curve_masks(c: Tensor, size: int) -> Tensor:
    """Boolean masks (N,H,W) of one curve slot from its (N, 8) parameters (a curve with flag 0 gives none).

    A pixel is on the curve when its centre lies within the half-width of one of ``4 * size``
    points spread evenly in the curve's parameter (spacing under 0.8 pixels for any curve
    inside the image), which draws the curve as a stroke of that width.
    """
    n = c.shape[0]
    on, x0, y0, x1, y1, x2, y2, half = (c[:, i, None] for i in range(8))
    s = torch.linspace(0, 1, 4 * size)[None]
    a, b, d = (1 - s) ** 2, 2 * s * (1 - s), s**2
    px, py = a * x0 + b * x1 + d * x2, a * y0 + b * y1 + d * y2  # (N, K)
    off = torch.arange(-2, 3, dtype=torch.float32)
    cx = (px.round()[..., None, None] + off[:, None]).expand(-1, -1, 5, 5)  # candidate pixels (N, K, 5, 5)
    cy = (py.round()[..., None, None] + off[None, :]).expand(-1, -1, 5, 5)
    d2 = (cx - px[..., None, None]) ** 2 + (cy - py[..., None, None]) ** 2
    ok = (d2 <= (half**2)[..., None, None]) & (on[..., None, None] > 0)
    ok &= (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
    image = torch.arange(n)[:, None, None, None].expand_as(cx)
    flat = (image * size * size + cy.long() * size + cx.long())[ok]
    mask = torch.zeros(n * size * size, dtype=torch.bool)
    mask[flat] = True
    return mask.view(n, size, size)


def make_thin_samples(seed: int, indices: Sequence[int], size: int = 64) -> tuple[Tensor, Tensor]:
    """Thin-structure samples ``indices`` of ``seed``: images (N,3,H,W) float32 in [0,1] and masks (N,H,W) int64 {0,1}.

    Curves and dots are painted ``contrast`` (0.06-0.12) brighter than the textured background,
    then Gaussian noise of standard deviation 0.10 is added to every pixel.
    """
    ps = [_thin_params(seed, i, size) for i in indices]
    table = {key: torch.tensor([p[key] for p in ps], dtype=torch.float32) for key in ps[0]}
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    base = table["bg"][:, :, None, None] + _texture(table["bg_tex"], xx, yy, 0.10)[:, None]
    mask = torch.zeros(len(ps), size, size, dtype=torch.bool)
    for k in range(THIN_CURVES[1]):
        mask |= _curve_masks(table[f"c{k}"], size)
    for k in range(THIN_DOTS[1]):
        on, cx, cy, r = (table[f"d{k}"][:, i, None, None] for i in range(4))
        mask |= ((xx - cx) ** 2 + (yy - cy) ** 2 <= r**2) & (on > 0)
    image = base + table["contrast"][:, :, None, None] * mask[:, None]
    noise = torch.stack([
        torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(p["noise_seed"][0]))) for p in ps
    ])
    return (image + 0.10 * noise).clamp(0, 1), mask.long()


def make_split(seed: int, start: int, count: int, task: str = "binary", size: int = 64) -> SegData:
    """Samples ``start .. start+count-1`` of ``seed`` as one batch for ``task``."""
    _check(task, size)
    make = make_thin_samples if task == "thin" else make_samples
    images, labels = make(seed, range(start, start + count), size)
    targets = labels if task == "multiclass" else (labels > 0).float().unsqueeze(1)
    return SegData(images, targets, task)


def make_splits(seed: int = 0, n_train: int = 512, n_val: int = 128, task: str = "binary",
                size: int = 64) -> tuple[SegData, SegData]:
    """The deterministic train split (indices ``[0, n_train)``) and held-out split (the next ``n_val``)."""
    if n_train < 1 or n_val < 1:
        raise SeglossError(f"demo: n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    return make_split(seed, 0, n_train, task, size), make_split(seed, n_train, n_val, task, size)
