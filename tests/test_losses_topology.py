"""lovasz, cldice, hausdorff_er: independent references written here, peers (kornia, MONAI),
gradcheck, compiled == eager, empty masks, perfect predictions, parameter rules."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segloss_cldice import cldice_loss
from segloss_hausdorff_er import hausdorff_er_loss
from segloss_lovasz import lovasz_loss

from segloss_registry import CompileWarning, InputError, LossConfigError, build_loss

TOL = dict(rtol=1e-6, atol=1e-6)


def close(a: torch.Tensor | float, b: torch.Tensor | float, **tol: float) -> None:
    kw = tol or TOL
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), **kw)


# ================================================================================================
# Lovasz: a direct port of Berman's reference code (lovasz_losses.py), boolean indexing and all
# ================================================================================================
def _ref_lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1].clone()
    return jaccard


def _ref_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if len(labels) == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    return torch.dot(F.relu(errors_sorted), _ref_lovasz_grad(labels[perm]))


def _ref_lovasz_hinge(scores: torch.Tensor, labels: torch.Tensor, per_image: bool, ignore: float | None) -> torch.Tensor:
    """scores, labels: (B, *S) for one channel."""

    def flat(s: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, l = s.reshape(-1), l.reshape(-1)
        if ignore is None:
            return s, l
        valid = l != ignore
        return s[valid], l[valid]

    if per_image:
        return torch.stack([_ref_hinge_flat(*flat(s, l)) for s, l in zip(scores, labels)]).mean()
    return _ref_hinge_flat(*flat(scores, labels))


def _ref_softmax_flat(probas: torch.Tensor, labels: torch.Tensor, classes: str, weights: list[float]) -> torch.Tensor:
    """probas (P, C), labels (P,); Berman's lovasz_softmax_flat with class weights in the mean."""
    if probas.numel() == 0:
        return probas.sum() * 0.0
    losses, ws = [], []
    for c in range(probas.shape[1]):
        fg = (labels == c).double()
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, _ref_lovasz_grad(fg[perm])))
        ws.append(weights[c])
    if not losses or sum(ws) == 0:
        return probas.sum() * 0.0
    w = torch.tensor(ws, dtype=torch.float64)
    return (torch.stack(losses) * w).sum() / w.sum()


def _ref_lovasz_softmax(probas: torch.Tensor, labels: torch.Tensor, classes: str, per_image: bool,
                        ignore: int | None, weights: list[float]) -> torch.Tensor:
    """probas (B, C, *S), labels (B, *S) class ids."""

    def flat(p: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C = p.shape[1]
        p, l = p.movedim(1, -1).reshape(-1, C), l.reshape(-1)
        if ignore is None:
            return p, l
        valid = l != ignore
        return p[valid], l[valid]

    if per_image:
        return torch.stack([
            _ref_softmax_flat(*flat(p[None], l[None]), classes, weights) for p, l in zip(probas, labels)
        ]).mean()
    return _ref_softmax_flat(*flat(probas, labels), classes, weights)


def _binary_data(shape: tuple[int, ...], ignore: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(shape, dtype=torch.float64) * 2
    t = (torch.rand(shape) > 0.6).double()
    if ignore:
        t[torch.rand(shape) < 0.2] = 255.0
    return x, t


@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_lovasz_binary_equals_berman_reference(spatial: tuple[int, ...], per_image: bool, ignore: bool) -> None:
    x, t = _binary_data((3, 1, *spatial), ignore)
    got = lovasz_loss(x, t, mode="binary", per_image=per_image, ignore_index=255 if ignore else None)
    want = _ref_lovasz_hinge(x[:, 0], t[:, 0], per_image, 255.0 if ignore else None)
    close(got, want)


def test_lovasz_binary_probabilities_use_their_logit() -> None:
    x, t = _binary_data((2, 1, 6, 6))
    p = torch.sigmoid(x)
    close(lovasz_loss(p, t, mode="binary", from_logits=False), _ref_lovasz_hinge(torch.logit(p)[:, 0], t[:, 0], False, None))


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("weights", [None, [1.0, 3.0, 0.5]])
def test_lovasz_multilabel_is_the_mean_hinge_per_channel(per_image: bool, weights: list[float] | None) -> None:
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64) * 2
    t = (torch.rand(2, 3, 6, 7) > 0.5).double()
    t[torch.rand(t.shape) < 0.15] = -1.0
    got = lovasz_loss(x, t, mode="multilabel", per_image=per_image, class_weights=weights, ignore_index=-1)
    w = torch.tensor(weights or [1.0, 1.0, 1.0], dtype=torch.float64)
    per_c = torch.stack([_ref_lovasz_hinge(x[:, c], t[:, c], per_image, -1.0) for c in range(3)])
    if per_image:  # weighted mean over channels per image, then the mean over images
        per_nc = torch.stack([
            torch.stack([_ref_lovasz_hinge(x[n:n + 1, c], t[n:n + 1, c], False, -1.0) for c in range(3)])
            for n in range(2)
        ])
        want = ((per_nc * w).sum(1) / w.sum()).mean()
        close(per_c, per_nc.mean(0))  # the two orders agree for a mean of means
    else:
        want = (per_c * w).sum() / w.sum()
    close(got, want)


@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_multiclass_equals_berman_reference(spatial: tuple[int, ...], per_image: bool, classes: str) -> None:
    C = 4
    x = torch.randn(3, C, *spatial, dtype=torch.float64) * 2
    t = torch.randint(0, C - 1, (3, *spatial))  # class 3 absent: "present" and "all" differ
    t[torch.rand(t.shape) < 0.2] = 255
    got = lovasz_loss(x, t, mode="multiclass", per_image=per_image, classes=classes, ignore_index=255)
    want = _ref_lovasz_softmax(torch.softmax(x, 1), t, classes, per_image, 255, [1.0] * C)
    close(got, want)


def test_lovasz_multiclass_class_weights_and_background() -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 8, 8))
    p = torch.softmax(x, 1)
    close(lovasz_loss(x, t, mode="multiclass", class_weights=[0.5, 2.0, 1.0]),
          _ref_lovasz_softmax(p, t, "present", False, None, [0.5, 2.0, 1.0]))
    close(lovasz_loss(x, t, mode="multiclass", include_background=False),
          _ref_lovasz_softmax(p, t, "present", False, None, [0.0, 1.0, 1.0]))


def test_lovasz_one_hot_target_equals_ids() -> None:
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 5, 5))
    close(lovasz_loss(x, F.one_hot(t, 3).movedim(-1, 1).double(), mode="multiclass"), lovasz_loss(x, t, mode="multiclass"))


def test_lovasz_equals_kornia() -> None:
    """kornia.losses.lovasz_hinge_loss / lovasz_softmax_loss: per image, 2D, no ignore, softmax over all classes."""
    kornia_losses = pytest.importorskip("kornia.losses")
    x, t = _binary_data((3, 1, 9, 8))
    close(lovasz_loss(x, t, mode="binary", per_image=True), kornia_losses.lovasz_hinge_loss(x, t[:, 0].long()))
    xm = torch.randn(3, 4, 9, 8, dtype=torch.float64)
    tm = torch.randint(0, 3, (3, 9, 8))
    close(lovasz_loss(xm, tm, mode="multiclass", per_image=True, classes="all"),
          kornia_losses.lovasz_softmax_loss(xm, tm))
    # kornia has no "present" mode: with class 3 absent the two conventions differ
    assert abs(float(lovasz_loss(xm, tm, mode="multiclass", per_image=True))
               - float(kornia_losses.lovasz_softmax_loss(xm, tm))) > 1e-3


def test_lovasz_gradcheck() -> None:
    # random float64 inputs: no two errors tie, where the Lovasz extension has its kinks
    x, t = _binary_data((2, 1, 4, 5))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: lovasz_loss(z, t, mode="binary"), (x,))
    xm = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    tm = torch.randint(0, 3, (2, 4, 4))
    tm[0, 0, 0] = 7
    assert torch.autograd.gradcheck(lambda z: lovasz_loss(z, tm, mode="multiclass", per_image=True, ignore_index=7), (xm,))
    xl = torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    tl = (torch.rand(1, 2, 5, 3) > 0.5).double()
    assert torch.autograd.gradcheck(lambda z: lovasz_loss(z, tl, mode="multilabel"), (xl,))


def test_lovasz_empty_masks_and_perfect_prediction() -> None:
    t = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    x = torch.full_like(t, -3.0)
    x[0, 0, 2, 2] = 0.5  # a predicted pixel on an empty target
    close(lovasz_loss(x, t), 1 + 0.5)  # relu(1 + max z)
    close(lovasz_loss(torch.full_like(t, -3.0), t), 0.0)  # both empty
    tt = (torch.rand(1, 1, 6, 6) > 0.5).double()
    close(lovasz_loss(4 * (2 * tt - 1), tt), 0.0)  # margins >= 1 on every pixel
    # every pixel ignored: 0, finite, zero gradient
    xi = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    v = lovasz_loss(xi, torch.full((1, 1, 4, 4), 255.0, dtype=torch.float64), ignore_index=255)
    v.backward()
    assert float(v.detach()) == 0.0 and torch.isfinite(xi.grad).all() and float(xi.grad.abs().sum()) == 0.0
    # multiclass, a batch of one, every class but one absent; float32
    xm = torch.randn(1, 3, 5, 5)
    assert torch.isfinite(lovasz_loss(xm, torch.zeros(1, 5, 5, dtype=torch.long), mode="multiclass", classes="all"))


def test_lovasz_params_rules() -> None:
    with pytest.raises(LossConfigError, match="classes='all' applies to mode='multiclass'"):
        build_loss("lovasz(classes='all')", mode="binary")
    with pytest.raises(LossConfigError, match="lovasz: classes"):
        build_loss("lovasz(classes='some')", mode="multiclass")
    with pytest.raises(LossConfigError, match="unknown parameter 'per_imag'"):
        build_loss("lovasz(per_imag=True)")


# ================================================================================================
# clDice: a reference skeleton built from shifted copies (no pooling), and MONAI's SoftclDiceLoss
# ================================================================================================
def _shift(x: torch.Tensor, axis: int, step: int, fill: float) -> torch.Tensor:
    """y[i] = x[i + step] along ``axis``, ``fill`` beyond the border."""
    n = x.shape[axis]
    pad = torch.full_like(x.narrow(axis, 0, 1), fill)
    if step == 1:
        return torch.cat([x.narrow(axis, 1, n - 1), pad], axis)
    return torch.cat([pad, x.narrow(axis, 0, n - 1)], axis)


def _ref_erode(x: torch.Tensor) -> torch.Tensor:
    out = x
    for axis in range(2, x.dim()):
        out = torch.minimum(out, torch.minimum(_shift(x, axis, 1, np.inf), _shift(x, axis, -1, np.inf)))
    return out


def _ref_dilate(x: torch.Tensor) -> torch.Tensor:
    out = x
    for axis in range(2, x.dim()):  # a 3x3(x3) max is separable
        out = torch.maximum(out, torch.maximum(_shift(out, axis, 1, -np.inf), _shift(out, axis, -1, -np.inf)))
    return out


def _ref_skel(x: torch.Tensor, iters: int) -> torch.Tensor:
    skel = torch.relu(x - _ref_dilate(_ref_erode(x)))
    for _ in range(iters):
        x = _ref_erode(x)
        delta = torch.relu(x - _ref_dilate(_ref_erode(x)))
        skel = skel + torch.relu(delta - skel * delta)
    return skel


def _ref_cldice(p: torch.Tensor, t: torch.Tensor, iters: int, s: float, per_image: bool) -> torch.Tensor:
    """Per class (N, C, *S) -> mean over classes (and images) of 1 - clDice."""
    sp, st = _ref_skel(p, iters), _ref_skel(t, iters)
    dims = tuple(range(2, p.dim())) if per_image else (0, *range(2, p.dim()))
    tprec = ((sp * t).sum(dims) + s) / (sp.sum(dims) + s)
    tsens = ((st * p).sum(dims) + s) / (st.sum(dims) + s)
    return 1 - 2 * tprec * tsens / (tprec + tsens)


def _blobs(shape: tuple[int, ...]) -> torch.Tensor:
    """Binary maps with thick structures (so that the skeletons are not empty)."""
    r = torch.rand(shape, dtype=torch.float64)
    for axis in range(2, len(shape)):
        r = (r + _shift(r, axis, 1, 0.0) + _shift(r, axis, -1, 0.0)) / 3
    return (r > 0.5).double()


@pytest.mark.parametrize("spatial", [(12, 11), (7, 8, 6)])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("iterations", [0, 3])
def test_cldice_binary_equals_reference(spatial: tuple[int, ...], per_image: bool, iterations: int) -> None:
    x = torch.randn(2, 1, *spatial, dtype=torch.float64) * 2
    t = _blobs((2, 1, *spatial))
    got = cldice_loss(x, t, per_image=per_image, iterations=iterations)
    close(got, _ref_cldice(torch.sigmoid(x), t, iterations, 1.0, per_image).mean())


@pytest.mark.parametrize("spatial", [(10, 9), (6, 5, 7)])
def test_cldice_multiclass_and_multilabel_equal_reference(spatial: tuple[int, ...]) -> None:
    x = torch.randn(2, 3, *spatial, dtype=torch.float64) * 2
    t = torch.randint(0, 3, (2, *spatial))
    oh = F.one_hot(t, 3).movedim(-1, 1).double()
    p = torch.softmax(x, 1)
    close(cldice_loss(x, t, mode="multiclass"), _ref_cldice(p, oh, 3, 1.0, False).mean())
    close(cldice_loss(x, t, mode="multiclass", include_background=False, smooth=0.5),
          _ref_cldice(p, oh, 3, 0.5, False)[1:].mean())
    close(cldice_loss(x, t, mode="multiclass", class_weights=[1.0, 2.0, 3.0], per_image=True),
          (_ref_cldice(p, oh, 3, 1.0, True) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum(1).mean() / 6)
    tl = _blobs((2, 3, *spatial))
    close(cldice_loss(x, tl, mode="multilabel", iterations=2), _ref_cldice(torch.sigmoid(x), tl, 2, 1.0, False).mean())


def test_cldice_ignore_index_zeroes_both_maps() -> None:
    x = torch.randn(2, 1, 10, 10, dtype=torch.float64)
    t = _blobs((2, 1, 10, 10))
    ignored = torch.rand(t.shape) < 0.1
    t_ign = torch.where(ignored, torch.full_like(t, 255.0), t)
    valid = (~ignored).double()
    want = _ref_cldice(torch.sigmoid(x) * valid, t * valid, 3, 1.0, False).mean()
    close(cldice_loss(x, t_ign, ignore_index=255), want)


def test_cldice_equals_monai() -> None:
    """monai.losses.SoftclDiceLoss sums per image over the channels after 0; its harmonic mean has + smooth (1e-4)."""
    losses = pytest.importorskip("monai.losses")
    x = torch.randn(3, 1, 16, 14, dtype=torch.float64) * 2
    t = _blobs((3, 1, 16, 14))
    p = torch.sigmoid(x)
    exact = losses.SoftclDiceLoss(iter_=3, smooth=1e-300)
    close(cldice_loss(x, t, per_image=True), exact(p, t))
    # MONAI's default smooth=1e-4 in the harmonic mean moves the value by less than 1e-4
    assert abs(float(cldice_loss(x, t, per_image=True)) - float(losses.SoftclDiceLoss()(p, t))) < 1e-4
    # multiclass with one foreground class: MONAI drops channel 0 (include_background=False)
    xm = torch.randn(2, 2, 12, 12, dtype=torch.float64) * 2
    tm = _blobs((2, 1, 12, 12)).long()
    monai_2 = losses.SoftclDiceLoss(smooth=1e-300, softmax=True, to_onehot_y=True, include_background=False)
    close(cldice_loss(xm, tm, mode="multiclass", per_image=True, include_background=False), monai_2(xm, tm))
    # C = 3: MONAI pools classes 1 and 2 into one clDice; here each class has its own, then the mean
    x3 = torch.randn(2, 3, 12, 12, dtype=torch.float64) * 2
    t3 = torch.randint(0, 3, (2, 1, 12, 12))
    p3 = torch.softmax(x3, 1)
    oh3 = F.one_hot(t3[:, 0], 3).movedim(-1, 1).double()
    per_class = torch.stack([exact(p3[:, c:c + 1], oh3[:, c:c + 1]) for c in (1, 2)]).mean()
    ours = cldice_loss(x3, t3, mode="multiclass", per_image=True, include_background=False)
    close(ours, per_class)
    pooled = losses.SoftclDiceLoss(smooth=1e-300, softmax=True, to_onehot_y=True, include_background=False)(x3, t3)
    assert abs(float(ours) - float(pooled)) > 1e-4


def test_cldice_gradcheck() -> None:
    x = torch.randn(1, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    t = _blobs((1, 1, 7, 6))
    assert torch.autograd.gradcheck(lambda z: cldice_loss(z, t, iterations=2), (x,))
    x3 = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    t3 = torch.randint(0, 2, (1, 4, 4, 4))
    assert torch.autograd.gradcheck(lambda z: cldice_loss(z, t3, mode="multiclass", iterations=1), (x3,))


def test_cldice_empty_masks_and_perfect_prediction() -> None:
    t = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    close(cldice_loss(torch.full_like(t, -20.0), t), 0.0)  # both empty: Tprec = Tsens = s/s
    x = torch.full_like(t, -20.0)
    x[..., 2:9, 3:10] = 20.0  # a 7x7 predicted square on an empty target
    sp = _ref_skel(torch.sigmoid(x), 3).sum()
    tprec = 1.0 / (sp + 1.0)
    close(cldice_loss(x, t), 1 - 2 * tprec / (tprec + 1))
    close(cldice_loss(x, t, smooth=0.0), 1.0)
    tt = _blobs((2, 1, 12, 12))
    # perfect hard prediction: exactly 0; logits of +-20: below 1e-6
    close(cldice_loss(tt, tt, from_logits=False), 0.0)
    assert float(cldice_loss(40 * tt - 20, tt)) < 1e-6
    for smooth in (0.0, 1.0):  # a batch of one, smooth 0, float32: finite
        v = cldice_loss(torch.randn(1, 1, 5, 5), torch.zeros(1, 1, 5, 5), smooth=smooth)
        assert torch.isfinite(v)


def test_cldice_rules_and_dims() -> None:
    with pytest.raises(LossConfigError, match="cldice: iterations must be >= 0"):
        build_loss("cldice(iterations=-1)")
    with pytest.raises(LossConfigError, match="cldice: smooth must be >= 0"):
        build_loss("cldice(smooth=-1.0)")
    with pytest.raises(InputError, match="supports 2D or 3D"):
        build_loss("cldice", compile=False)(torch.randn(2, 1, 8), torch.zeros(2, 1, 8))


# ================================================================================================
# hausdorff_er: a NumPy port of the reference erosion loop (PatRyg99/HausdorffLoss), and kornia
# ================================================================================================
def _np_conv_cross(f: np.ndarray) -> np.ndarray:
    """Zero-padded same-size convolution of one map (*S) with the normalised cross kernel."""
    nd = f.ndim
    padded = np.pad(f, 1)
    centre = tuple(slice(1, 1 + n) for n in f.shape)
    out = padded[centre].copy()
    for axis in range(nd):
        for step in (-1, 1):
            sl = list(centre)
            sl[axis] = slice(1 + step, 1 + step + f.shape[axis])
            out += padded[tuple(sl)]
    return out / (2 * nd + 1)


def _np_hausdorff_er(p: np.ndarray, t: np.ndarray, alpha: float, K: int, mask: np.ndarray | None = None) -> float:
    """p, t (N, C, *S) float64; the repository's loop, per image and channel."""
    bound = (p - t) ** 2
    if mask is not None:
        bound = bound * mask
    eroded = np.zeros_like(bound)
    for n in range(bound.shape[0]):
        for c in range(bound.shape[1]):
            f = bound[n, c]
            for k in range(K):
                erosion = _np_conv_cross(f) - 0.5
                erosion[erosion < 0] = 0
                if np.ptp(erosion) != 0:
                    erosion = (erosion - erosion.min()) / np.ptp(erosion)
                f = erosion
                eroded[n, c] += erosion * (k + 1) ** alpha
    if mask is None:
        return float(eroded.mean())
    m = np.broadcast_to(mask, eroded.shape)
    return float((eroded * m).sum() / m.sum())


def _hd_data(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    t = _blobs(shape)
    x = (2 * t - 1) * 3 + torch.randn(shape, dtype=torch.float64) * 3  # large errors survive the erosions
    return x, t


@pytest.mark.parametrize("spatial", [(12, 13), (7, 6, 8)])
@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_hausdorff_er_equals_numpy_reference(spatial: tuple[int, ...], mode: str) -> None:
    C = 1 if mode == "binary" else 2
    x, t = _hd_data((2, C, *spatial))
    p = torch.sigmoid(x)
    close(hausdorff_er_loss(x, t, mode=mode), _np_hausdorff_er(p.numpy(), t.numpy(), 2.0, 10))
    close(hausdorff_er_loss(x, t, mode=mode, alpha=1.0, erosions=4), _np_hausdorff_er(p.numpy(), t.numpy(), 1.0, 4))


@pytest.mark.parametrize("spatial", [(11, 12), (6, 7, 5)])
def test_hausdorff_er_multiclass_equals_reference_and_kornia(spatial: tuple[int, ...]) -> None:
    x = torch.randn(2, 3, *spatial, dtype=torch.float64) * 4
    t = torch.randint(0, 3, (2, *spatial))
    p = torch.softmax(x, 1)
    oh = F.one_hot(t, 3).movedim(-1, 1).double()
    got = hausdorff_er_loss(x, t, mode="multiclass")
    close(got, _np_hausdorff_er(p.numpy(), oh.numpy(), 2.0, 10))
    kornia_losses = pytest.importorskip("kornia.losses")
    peer = kornia_losses.HausdorffERLoss() if len(spatial) == 2 else kornia_losses.HausdorffERLoss3D()
    close(got, peer(p, t[:, None]))


def test_hausdorff_er_gradient_equals_kornia() -> None:
    """kornia.losses.HausdorffERLoss on softmax probabilities; binary as kornia's two channels (1 - p, p), each
    giving the same map (p - t)^2."""
    kornia_losses = pytest.importorskip("kornia.losses")
    x = (torch.randn(2, 3, 10, 10, dtype=torch.float64) * 4).requires_grad_(True)
    t = torch.randint(0, 3, (2, 10, 10))
    g_ours, = torch.autograd.grad(hausdorff_er_loss(x, t, mode="multiclass"), x)
    g_peer, = torch.autograd.grad(kornia_losses.HausdorffERLoss()(torch.softmax(x, 1), t[:, None]), x)
    close(g_ours, g_peer)
    xb, tb = _hd_data((2, 1, 10, 10))
    pb = torch.sigmoid(xb)
    close(hausdorff_er_loss(xb, tb), kornia_losses.HausdorffERLoss()(torch.cat([1 - pb, pb], 1), tb.long()))


def test_hausdorff_er_ignore_index() -> None:
    x, t = _hd_data((2, 1, 10, 11))
    ignored = torch.rand(t.shape) < 0.15
    valid = (~ignored).double()
    got = hausdorff_er_loss(x, torch.where(ignored, torch.full_like(t, 255.0), t), ignore_index=255)
    close(got, _np_hausdorff_er(torch.sigmoid(x).numpy(), t.numpy(), 2.0, 10, valid.numpy()))


def _hd_wrong_block(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A target block and logits of random confidence (|z| in 1..4) that are wrong on a shifted block."""
    t = torch.zeros(shape, dtype=torch.float64)
    t[(slice(None), slice(None), *(slice(1, 5) for _ in shape[2:]))] = 1
    x = (2 * t - 1) * (1 + 3 * torch.rand(shape, dtype=torch.float64))
    wrong = (slice(None), slice(None), *(slice(2, 6) for _ in shape[2:]))
    x[wrong] = -x[wrong]
    return x, t


def test_hausdorff_er_gradcheck() -> None:
    x, t = _hd_wrong_block((1, 1, 7, 7))
    x.requires_grad_(True)
    g, = torch.autograd.grad(hausdorff_er_loss(x, t, erosions=3), x)
    assert int((g != 0).sum()) > 10  # the erosions keep a gradient (the NumPy reference loop has none)
    assert torch.autograd.gradcheck(lambda z: hausdorff_er_loss(z, t, erosions=3), (x,))
    x3, t3 = _hd_wrong_block((1, 1, 6, 6, 6))
    x3.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: hausdorff_er_loss(z, t3, erosions=2), (x3,))


def test_hausdorff_er_empty_masks_and_perfect_prediction() -> None:
    t = _blobs((2, 1, 12, 12))
    close(hausdorff_er_loss(40 * t - 20, t), 0.0)  # perfect (+-20 logits)
    empty = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    close(hausdorff_er_loss(torch.full_like(empty, -20.0), empty), 0.0)  # both empty
    x = torch.full_like(empty, -20.0)
    x[..., 2:10, 2:10] = 20.0  # an 8x8 predicted square on an empty target
    v = hausdorff_er_loss(x, empty)
    close(v, _np_hausdorff_er(torch.sigmoid(x).numpy(), empty.numpy(), 2.0, 10))
    assert 0 < float(v) <= sum(k**2 for k in range(1, 11))
    # small errors are thresholded away: |p - t| = 0.5 everywhere gives 0
    close(hausdorff_er_loss(torch.zeros_like(empty), empty), 0.0)
    assert torch.isfinite(hausdorff_er_loss(torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)))


def test_hausdorff_er_rules_and_dims() -> None:
    with pytest.raises(LossConfigError, match="hausdorff_er: erosions must be >= 1"):
        build_loss("hausdorff_er(erosions=0)")
    with pytest.raises(LossConfigError, match="hausdorff_er: alpha must be >= 0"):
        build_loss("hausdorff_er(alpha=-1.0)")
    with pytest.raises(InputError, match="supports 2D or 3D"):
        build_loss("hausdorff_er", compile=False)(torch.randn(2, 1, 8), torch.zeros(2, 1, 8))
    with pytest.raises(InputError, match="2D and 3D"):
        hausdorff_er_loss(torch.randn(2, 1, 8), torch.zeros(2, 1, 8))


# ================================================================================================
# compiled == eager (fullgraph), one compiled composite per mode shared by the tests
# ================================================================================================
SPEC = "lovasz + cldice(iterations=1) + hausdorff_er(erosions=2)"


def _mode_inputs(mode: str, shape: tuple[int, ...] = (2, 12, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n, *spatial = shape
    if mode == "binary":
        return torch.randn(n, 1, *spatial, generator=g) * 3, (torch.rand(n, 1, *spatial, generator=g) > 0.5).float()
    if mode == "multiclass":
        return torch.randn(n, 3, *spatial, generator=g) * 3, torch.randint(0, 3, (n, *spatial), generator=g)
    return torch.randn(n, 3, *spatial, generator=g) * 3, (torch.rand(n, 3, *spatial, generator=g) > 0.5).float()


@pytest.fixture(scope="module", params=["binary", "multiclass", "multilabel"])
def compiled_pair(request: pytest.FixtureRequest) -> Iterator[tuple[str, object, object]]:
    mode = request.param
    yield mode, build_loss(SPEC, mode=mode, compile=True), build_loss(SPEC, mode=mode, compile=False)


@pytest.mark.compile
def test_compiled_equals_eager_fullgraph(compiled_pair: tuple[str, object, object]) -> None:
    mode, compiled, eager = compiled_pair
    for shape in ((2, 12, 12), (3, 10, 14)):  # a second size: the core marks batch and space dynamic
        x, t = _mode_inputs(mode, shape)
        xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompileWarning)  # a fallback to eager would fail here
            vc, tc = compiled(xc, t, return_terms=True)
        ve, te = eager(xe, t, return_terms=True)
        assert compiled.uses_compile(x.device) and not compiled._compile_failed
        close(vc, ve, rtol=1e-5, atol=1e-5)
        for k in te:
            close(tc[k], te[k], rtol=1e-5, atol=1e-5)
        vc.backward()
        ve.backward()
        close(xc.grad, xe.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.compile
def test_compiled_empty_target_finite(compiled_pair: tuple[str, object, object]) -> None:
    mode, compiled, eager = compiled_pair
    x, t = _mode_inputs(mode)
    t = torch.zeros_like(t)
    x.requires_grad_(True)  # the autograd graph compiled above serves this call
    vc = compiled(x, t)
    vc.backward()
    assert torch.isfinite(vc) and torch.isfinite(x.grad).all()
    close(vc, eager(x, t), rtol=1e-5, atol=1e-5)
