"""The seed's losses against independent formulas (tests/_refs.py), in every mode, 2D and 3D."""

from __future__ import annotations

import _refs as R
import pytest
import torch
import torch.nn.functional as F

from segloss_registry import build_loss

SHAPES = {2: (2, 3, 7, 9), 3: (2, 3, 4, 5, 6)}
MODES_OF = {
    "dice": ("binary", "multiclass", "multilabel"),
    "iou": ("binary", "multiclass", "multilabel"),
    "bce": ("binary", "multilabel"),
    "ce": ("multiclass",),
    "focal": ("binary", "multiclass", "multilabel"),
    "active_contour": ("binary", "multiclass", "multilabel"),
    "boundary": ("binary", "multiclass", "multilabel"),
}


def make(mode: str, ndim: int, *, soft: bool = False, seed: int = 0):
    """(logits float64, target as the user gives it, target (N, C, *S) float64 for the references)."""
    g = torch.Generator().manual_seed(seed)
    N, C, *S = SHAPES[ndim]
    if mode == "binary":
        C = 1
    x = torch.randn(N, C, *S, generator=g, dtype=torch.float64) * 2
    if mode == "multiclass":
        ids = torch.randint(0, C, (N, *S), generator=g)
        return x, ids, R.onehot(ids, C)
    t = torch.rand(N, C, *S, generator=g, dtype=torch.float64)
    t = t if soft else (t > 0.5).to(torch.float64)
    return x, t, t


def reference(name: str, mode: str, x, t, **kw):
    p = R.probs(x, mode)
    if name == "dice":
        return R.dice(p, t, **kw)
    if name == "iou":
        return R.iou(p, t, **kw)
    if name == "bce":
        return R.bce(x, t, **kw)
    if name == "ce":
        return F.cross_entropy(x, t.argmax(1), **kw)
    if name == "focal":
        return (R.focal_softmax if mode == "multiclass" else R.focal_sigmoid)(x, t, **kw)
    if name == "active_contour":
        return R.active_contour(p, t, **kw)
    if name == "boundary":
        if mode == "binary":
            p, t = torch.cat([1 - p, p], 1), torch.cat([1 - t, t], 1)
        return R.boundary(p, t, **kw)
    raise KeyError(name)


CASES = [(name, mode, nd) for name, modes in MODES_OF.items() for mode in modes for nd in (2, 3)]


@pytest.mark.parametrize("name,mode,ndim", CASES)
def test_equals_reference_formula(name, mode, ndim):
    x, t_user, t_ref = make(mode, ndim)
    got = build_loss(name, mode=mode, compile=False)(x, t_user)
    torch.testing.assert_close(got, reference(name, mode, x, t_ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name,mode,kw",
    [
        ("dice", "binary", {"smooth": 0.0}),
        ("dice", "binary", {"per_image": True}),
        ("dice", "multiclass", {"per_image": True, "smooth": 0.5}),
        ("dice", "multilabel", {"smooth": 2.0}),
        ("iou", "binary", {"per_image": True, "smooth": 0.0}),
        ("iou", "multiclass", {"smooth": 0.1}),
        ("bce", "binary", {"pos_weight": 3.0}),
        ("bce", "multilabel", {"pos_weight": [0.5, 1.0, 2.0]}),
        ("ce", "multiclass", {"label_smoothing": 0.1}),
        ("focal", "binary", {"alpha": None, "gamma": 0.5}),
        ("focal", "multilabel", {"alpha": 0.7, "gamma": 0.0}),
        ("focal", "multiclass", {"alpha": None, "gamma": 3.0}),
        ("active_contour", "binary", {"weight": 1.0}),
        ("boundary", "multiclass", {"theta0": 5, "theta": 7}),
    ],
)
def test_parameters_follow_the_formula(name, mode, kw):
    x, t_user, t_ref = make(mode, 2, seed=3)
    got = build_loss(name, mode=mode, compile=False, **kw)(x, t_user)
    torch.testing.assert_close(got, reference(name, mode, x, t_ref, **kw), rtol=1e-6, atol=1e-6)


def test_soft_binary_targets():
    x, t, _ = make("binary", 2, soft=True)
    for name in ("dice", "iou", "bce", "focal"):
        got = build_loss(name, compile=False)(x, t)
        torch.testing.assert_close(got, reference(name, "binary", x, t), rtol=1e-6, atol=1e-6)


def test_ce_class_weights_and_ignore_index_match_torch():
    x, ids, _ = make("multiclass", 2, seed=5)
    ids = ids.clone()
    ids[0, :2] = 255
    w = [0.2, 1.0, 3.0]
    got = build_loss("ce", mode="multiclass", class_weights=w, label_smoothing=0.05, ignore_index=255, compile=False)(x, ids)
    want = F.cross_entropy(x, ids, weight=torch.tensor(w, dtype=x.dtype), ignore_index=255, label_smoothing=0.05)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_ignore_index_masks_region_and_pixel_losses():
    x, ids, _ = make("multiclass", 2, seed=6)
    ids = ids.clone()
    ids[1, 3:] = -1
    valid = (ids != -1).unsqueeze(1).to(x.dtype)
    t = R.onehot(ids.clamp_min(0), 3) * valid
    p = torch.softmax(x, 1) * valid
    got = build_loss("dice", mode="multiclass", ignore_index=-1, compile=False)(x, ids)
    torch.testing.assert_close(got, R.dice(p, t), rtol=1e-6, atol=1e-6)
    got = build_loss("focal", mode="multiclass", ignore_index=-1, compile=False)(x, ids)
    per_pixel = -(t * (1 - torch.softmax(x, 1)) ** 2 * F.log_softmax(x, 1))
    per_pixel = (per_pixel * torch.tensor([0.75, 0.25, 0.25], dtype=x.dtype).view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(got, per_pixel.sum() / valid.sum(), rtol=1e-6, atol=1e-6)


def test_binary_layouts_and_target_dtypes_agree():
    x, t, _ = make("binary", 2)
    c = build_loss("bce+dice+focal", compile=False)
    want = c(x, t)
    for xx, tt in [(x, t[:, 0]), (x[:, 0], t[:, 0]), (x, t.bool()), (x, t.to(torch.uint8))]:
        torch.testing.assert_close(c(xx, tt), want, rtol=1e-12, atol=1e-12)


def test_multiclass_onehot_target_equals_ids():
    x, ids, oh = make("multiclass", 3)
    c = build_loss("ce+dice+focal+iou+boundary+active_contour", mode="multiclass", compile=False)
    torch.testing.assert_close(c(x, ids), c(x, oh), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c(x, ids.unsqueeze(1)), c(x, oh), rtol=1e-12, atol=1e-12)


def test_probabilities_input():
    x, t, _ = make("binary", 2)
    p = torch.sigmoid(x)
    for name in ("dice", "iou", "bce", "focal", "active_contour"):
        a = build_loss(name, compile=False)(x, t)
        b = build_loss(name, from_logits=False, compile=False)(p, t)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    x, ids, _ = make("multiclass", 2)
    a = build_loss("ce+dice", mode="multiclass", compile=False)(x, ids)
    b = build_loss("ce+dice", mode="multiclass", from_logits=False, compile=False)(torch.softmax(x, 1), ids)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_bce_dice_equals_the_seeds_dicebceloss():
    x, t, _ = make("binary", 2)
    x = x.clamp(-8, 8)  # the seed's sigmoid-then-BCE is only exact away from saturation
    seed = R.SeedDiceBCELoss()(x, t)
    for spec in ("bce+dice", "dice_bce"):
        torch.testing.assert_close(build_loss(spec, compile=False)(x, t), seed, rtol=1e-6, atol=1e-6)


def test_bce_is_stable_where_the_seed_saturates():
    x = torch.tensor([[[[20.0, -30.0]]]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    loss = build_loss("bce", compile=False)(x, t)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(25.0, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.flatten(), torch.tensor([0.5, -0.5], dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_focal_focuses_per_pixel_unlike_the_seed():
    # an easy pixel and a hard pixel: the focal gradient of the hard one dominates far more than under BCE
    x = torch.tensor([[[[4.0, -1.0]]]], dtype=torch.float64, requires_grad=True)
    t = torch.ones_like(x).detach()
    g_focal = torch.autograd.grad(build_loss("focal", alpha=None, compile=False)(x, t), x)[0].flatten()
    g_bce = torch.autograd.grad(build_loss("bce", compile=False)(x, t), x)[0].flatten()
    assert (g_focal[1] / g_focal[0]) > 10 * (g_bce[1] / g_bce[0])


@pytest.mark.parametrize("name,mode", [(n, m) for n, ms in MODES_OF.items() for m in ms])
def test_gradcheck(name, mode):
    g = torch.Generator().manual_seed(1)
    C = 1 if mode == "binary" else 3
    x = torch.randn(2, C, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    if mode == "multiclass":
        t = torch.randint(0, C, (2, 5, 6), generator=g)
    else:
        t = (torch.rand(2, C, 5, 6, generator=g, dtype=torch.float64) > 0.5).to(torch.float64)
    crit = build_loss(name, mode=mode, compile=False)
    assert torch.autograd.gradcheck(lambda z: crit(z, t), (x,), eps=1e-6, atol=1e-5)


def _perfect(mode: str, ndim: int):
    """Targets in which every class has a boundary in every image, and logits that predict them."""
    S = (12, 12) if ndim == 2 else (6, 6, 6)
    grid = torch.arange(S[-1]).expand(*S)
    C = 1 if mode == "binary" else 3
    if mode == "multiclass":
        ids = (grid // (S[-1] // 3)).clamp_max(2).expand(2, *S)
        oh = R.onehot(ids, 3)
        return (oh * 2 - 1) * 30, ids
    t = (grid < S[-1] // 2).to(torch.float64).expand(2, C, *S).clone()
    if mode == "multilabel":
        t[:, 1] = 1 - t[:, 1]
    return (t * 2 - 1) * 30, t


@pytest.mark.parametrize("name,mode", [(n, m) for n, ms in MODES_OF.items() for m in ms if n != "active_contour"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_perfect_prediction_is_about_zero(name, mode, ndim):
    x, t = _perfect(mode, ndim)
    assert build_loss(name, mode=mode, compile=False)(x, t).item() < 1e-3


def test_active_contour_perfect_prediction_is_the_contour_length_only():
    x, t = _perfect("binary", 2)
    got = build_loss("active_contour", compile=False)(x, t)
    region_free = R.active_contour(t, t) - (torch.mean(t * (t - 1) ** 2) + torch.mean((1 - t) * t**2))
    torch.testing.assert_close(got, region_free, rtol=1e-6, atol=1e-6)
    assert build_loss("active_contour", weight=0.0, compile=False)(x, t).item() < 1e-6


def _finite_with_grad(crit, x, t):
    x = x.clone().requires_grad_(True)
    loss = crit(x, t)
    (g,) = torch.autograd.grad(loss, x)
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(g).all()), loss


@pytest.mark.parametrize("name,mode", [(n, m) for n, ms in MODES_OF.items() for m in ms])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_masks_single_pixels_and_batch_of_one_are_finite(name, mode, dtype):
    C = 1 if mode == "binary" else 3
    crit = build_loss(name, mode=mode, compile=False)
    empty_t = torch.zeros(1, 4, 4, dtype=torch.long) if mode == "multiclass" else torch.zeros(1, C, 4, 4, dtype=dtype)
    for x in (torch.randn(1, C, 4, 4, dtype=dtype), torch.full((1, C, 4, 4), -50.0, dtype=dtype)):
        ok, _ = _finite_with_grad(crit, x, empty_t)
        assert ok
    one_t = torch.zeros(1, 1, 1, dtype=torch.long) if mode == "multiclass" else torch.ones(1, C, 1, 1, dtype=dtype)
    ok, _ = _finite_with_grad(crit, torch.randn(1, C, 1, 1, dtype=dtype), one_t)
    assert ok
    if name in ("dice", "iou"):
        x = torch.full((1, C, 4, 4), -50.0, dtype=dtype)
        probs = torch.zeros(1, C, 4, 4, dtype=dtype)
        if mode == "multiclass":  # "empty" = only background, predicted as such
            x[:, 0], probs[:, 0] = 50.0, 1.0
        _, both_empty = _finite_with_grad(build_loss(name, mode=mode, compile=False), x, empty_t)
        assert both_empty.item() == pytest.approx(0.0, abs=1e-6)
        # smooth = 0: exactly empty sets give 0, not 0/0
        c = build_loss(name, mode=mode, smooth=0.0, from_logits=False, compile=False)
        ok, both_empty = _finite_with_grad(c, probs, empty_t)
        assert ok and both_empty.item() == 0.0


@pytest.mark.parametrize("name", ["dice", "iou"])
def test_empty_target_with_nonempty_prediction_is_close_to_one(name):
    x = torch.full((2, 1, 16, 16), 8.0)
    t = torch.zeros(2, 1, 16, 16)
    assert build_loss(name, compile=False)(x, t).item() > 0.99
