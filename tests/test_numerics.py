"""Odd numerics: half precision, autocast, large images, extreme logits, empty and all-ignored masks.

Every registered loss (recipes excluded: they are sums of these) is run in each mode it
declares, on inputs of a dimension it declares, so losses added by any plugin are covered.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import segloss_registry as sr
from segloss_registry import build_loss

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    LOSSES = [info for info in sr.list_losses() if info.recipe is None]
CASES = [pytest.param(info.name, mode, id=f"{info.name}-{mode}") for info in LOSSES for mode in info.modes]
DIMS = {info.name: info.dims for info in LOSSES}


def ndim_of(name: str) -> int:
    return 2 if 2 in DIMS[name] else max(DIMS[name])


def make(mode: str, ndim: int, n: int = 2, size: int = 8, C: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (N, C, *S) (C = 1 for binary) and a matching target with every class present."""
    C = 1 if mode == "binary" else C
    shape = (n, C, *([size] * ndim))
    x = torch.randn(shape) * 2
    if mode == "multiclass":
        t = torch.randint(0, C, (n, *shape[2:]))
    else:
        t = (torch.rand(shape) > 0.5).float()
    return x, t


def value_and_grad(crit: sr.CompositeLoss, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = crit(x, t)
    (g,) = torch.autograd.grad(out, x)
    return out.detach(), g


def finite(out: torch.Tensor, g: torch.Tensor) -> bool:
    return bool(torch.isfinite(out)) and bool(torch.isfinite(g).all())


# -- float16, bfloat16, autocast ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name,mode", CASES)
def test_half_precision_equals_float32(name: str, mode: str, dtype: torch.dtype) -> None:
    x, t = make(mode, ndim_of(name))
    xh = x.to(dtype)
    crit = build_loss(name, mode=mode)
    low, g_low = value_and_grad(crit, xh, t)
    ref, g_ref = value_and_grad(crit, xh.float(), t)  # the same values in float32
    assert low.dtype == torch.float32  # computed in float32 inside
    assert g_low.dtype == dtype and finite(low, g_low)
    torch.testing.assert_close(low, ref, rtol=0, atol=1e-3)
    torch.testing.assert_close(g_low.float(), g_ref.to(dtype).float(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name,mode", CASES)
def test_autocast_bfloat16_on_cpu(name: str, mode: str) -> None:
    ndim = ndim_of(name)
    x, t = make(mode, ndim)
    C = x.shape[1]
    conv = (torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d)(C, C, 3, padding=1)
    crit = build_loss(name, mode=mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        out = crit(logits, t)
        same_f32 = crit(x, t)  # float32 logits under autocast: as without it
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, crit(logits.detach().float(), t), rtol=0, atol=1e-3)
    torch.testing.assert_close(same_f32, crit(x, t), rtol=1e-6, atol=1e-7)
    out.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())


# -- large images: no overflow in the sums ----------------------------------------------------------------
def _reference(name: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The binary loss in float64 from its formula (DESIGN.md), independent of the plugins."""
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    if name == "dice":
        return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    if name == "iou":
        inter = (p * t).sum()
        return 1 - (inter + 1) / (p.sum() + t.sum() - inter + 1)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if name == "bce":
        return bce.mean()
    p_t = p * t + (1 - p) * (1 - t)
    return ((0.25 * t + 0.75 * (1 - t)) * (1 - p_t) ** 2 * bce).mean()  # focal, alpha 0.25, gamma 2


@pytest.mark.parametrize("shape", [(1, 1, 1024, 1024), (1, 1, 128, 128, 128)], ids=["2d-1024", "3d-128"])
def test_large_inputs_in_float16_do_not_overflow(shape: tuple[int, ...]) -> None:
    # float16's largest value is 65504: sums over 1M (2D) or 2M (3D) pixels must not be taken in it
    x = (torch.randn(shape) * 4).half()
    t = (torch.rand(shape) > 0.3).to(torch.uint8)
    for name in ("dice", "iou", "bce", "focal"):
        out, g = value_and_grad(build_loss(name), x, t)
        assert finite(out, g), name
        torch.testing.assert_close(out.double(), _reference(name, x, t), rtol=1e-4, atol=1e-5, msg=name)


# -- extreme logits, empty masks, all-ignored pixels, single pixels ---------------------------------------------
@pytest.mark.parametrize("name,mode", CASES)
def test_extreme_logits(name: str, mode: str) -> None:
    crit = build_loss(name, mode=mode)
    x, t = make(mode, ndim_of(name))
    onehot = F.one_hot(t, x.shape[1]).movedim(-1, 1).float() if mode == "multiclass" else t
    for logits in (
        torch.sign(torch.randn_like(x)) * 1e4,  # random, saturated
        (2 * onehot - 1) * 1e4,  # perfect, saturated
        (1 - 2 * onehot) * 1e4,  # all wrong, saturated
    ):
        for dtype in (torch.float32, torch.float16):
            out, g = value_and_grad(crit, logits.to(dtype), t)
            assert finite(out, g), (dtype, float(out))


@pytest.mark.parametrize("name,mode", CASES)
def test_empty_masks(name: str, mode: str) -> None:
    crit = build_loss(name, mode=mode)
    x, t = make(mode, ndim_of(name))
    empty = torch.zeros_like(t)  # binary/multilabel: no foreground; multiclass: background only
    full = torch.ones_like(t) if mode != "multiclass" else torch.full_like(t, x.shape[1] - 1)
    for target in (empty, full):
        for logits in (x, torch.full_like(x, -1e4), torch.full_like(x, 1e4)):
            out, g = value_and_grad(crit, logits, target)
            assert finite(out, g), float(out)


def _all_ignored(mode: str, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    if mode == "multiclass":
        return torch.full((x.shape[0], *x.shape[2:]), 255, dtype=torch.long), 255
    return torch.full_like(x, -1.0), -1


@pytest.mark.parametrize("name,mode", CASES)
def test_all_ignored_pixels_give_zero_loss_and_zero_gradient(name: str, mode: str) -> None:
    x, _ = make(mode, ndim_of(name))
    t, ii = _all_ignored(mode, x)
    out, g = value_and_grad(build_loss(name, mode=mode, ignore_index=ii), x, t)
    assert finite(out, g)
    # 0 (focal_tversky documents 1e-9: its 1 - TI is clamped at 1e-12 before the power 0.75)
    assert abs(float(out)) <= 1e-6, float(out)
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("name,mode", CASES)
def test_one_ignored_image_in_a_batch(name: str, mode: str) -> None:
    # an image whose pixels are all ignored gets zero gradient; the other image's is finite
    x, t = make(mode, ndim_of(name))
    t_all, ii = _all_ignored(mode, x)
    t = t.clone()
    t[0] = t_all[0]
    out, g = value_and_grad(build_loss(name, mode=mode, ignore_index=ii), x, t)
    assert finite(out, g)
    assert torch.equal(g[0], torch.zeros_like(g[0]))


@pytest.mark.parametrize("name,mode", CASES)
def test_single_pixel_images_with_extreme_logits(name: str, mode: str) -> None:
    ndim = min(DIMS[name])
    crit = build_loss(name, mode=mode)
    for value in (-1e4, 0.0, 1e4):
        x, t = make(mode, ndim, n=1, size=1)
        out, g = value_and_grad(crit, torch.full_like(x, value), t)
        assert finite(out, g), (value, float(out))
