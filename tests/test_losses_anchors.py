"""The anchors' losses: topk_ce, ohem_ce, wasserstein_dice, unified_focal, nacl, exp_log;
per-class focal alpha; region losses on soft labels.

Each loss equals its peer where the peer installs beside the CPU torch (MONAI), or a formula
written here from the peer's source (nnU-Net, mmsegmentation: the file is named at the
formula) or from the paper; where a peer differs by design the difference is asserted. Then
gradcheck (float64), compiled == eager with ``fullgraph=True`` (one compiled composite per
case, shared by the tests of this file), the conformance kit with non-default parameters
(the default parameters are checked for every registered loss by tests/test_conformance.py),
documented empty-mask values and the parameter rules.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from segloss_exp_log import exp_log_loss
from segloss_focal import FocalParams, focal, focal_loss
from segloss_nacl import nacl_loss
from segloss_ohem_ce import ohem_ce_loss
from segloss_topk_ce import topk_ce_loss
from segloss_unified_focal import unified_focal_loss
from segloss_wasserstein_dice import wasserstein_dice_loss
from torch import Tensor

from segloss_registry import (
    CompileWarning,
    InputError,
    LossConfigError,
    build_loss,
    hookimpl,
)
from segloss_registry.testing import check_loss, registered_plugin

F64 = torch.float64
IGNORE = 255
NEW = ("topk_ce", "ohem_ce", "wasserstein_dice", "unified_focal", "nacl", "exp_log")
FUNCS = {
    "topk_ce": topk_ce_loss,
    "ohem_ce": ohem_ce_loss,
    "wasserstein_dice": wasserstein_dice_loss,
    "unified_focal": unified_focal_loss,
    "nacl": nacl_loss,
    "exp_log": exp_log_loss,
    "focal": focal_loss,
}
MODES = {
    "topk_ce": ("binary", "multiclass", "multilabel"),
    "ohem_ce": ("binary", "multiclass", "multilabel"),
    "wasserstein_dice": ("multiclass",),
    "unified_focal": ("binary", "multiclass"),
    "nacl": ("multiclass",),
    "exp_log": ("binary", "multiclass"),
}
DIST3 = [[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]]  # MONAI's docstring example


# -- inputs ---------------------------------------------------------------------------------------
def make(mode: str, shape: tuple[int, ...] = (6, 7), n: int = 2, c: int = 3, seed: int = 0, scale: float = 2.0,
         ignore: float = 0.0, dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    """float64 logits (N, C, *S) and a target in the mode's layout; ``ignore``: that share marked IGNORE."""
    g = torch.Generator().manual_seed(seed)
    c = 1 if mode == "binary" else c
    x = (scale * torch.randn(n, c, *shape, generator=g, dtype=F64)).to(dtype)
    if mode == "multiclass":
        y = torch.randint(0, c, (n, *shape), generator=g)
    else:
        y = (torch.rand(n, c, *shape, generator=g) < 0.4).to(dtype)
    if ignore:
        y = torch.where(torch.rand(y.shape, generator=g) < ignore, torch.full_like(y, IGNORE), y)
    return x, y


def onehot(y: Tensor, c: int) -> Tensor:
    return F.one_hot(y.long(), c).movedim(-1, 1).to(F64)


def grad_of(fn: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().clone().requires_grad_(True)
    v = fn(x)
    (g,) = torch.autograd.grad(v, x)
    return v.detach(), g


def assert_same(fn_a: Any, fn_b: Any, x: Tensor, rtol: float = 1e-7, atol: float = 1e-9) -> None:
    """Equal value and gradient (float64)."""
    va, ga = grad_of(fn_a, x)
    vb, gb = grad_of(fn_b, x)
    torch.testing.assert_close(va, vb, rtol=rtol, atol=atol)
    torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)


# == topk_ce ======================================================================================
def nnunet_topk(x: Tensor, y: Tensor, k: float = 10.0, ignore_index: int = -100) -> Tensor:
    """nnU-Net v2, nnunetv2/training/loss/robust_ce_loss.py, ``TopKLoss.forward``, transcribed:
    ``res = CE(reduction='none'); res, _ = topk(res.view(-1), int(numel * k / 100)); res.mean()``."""
    res = F.cross_entropy(x, y.long(), ignore_index=ignore_index, reduction="none")
    num_voxels = res.numel()
    res, _ = torch.topk(res.view((-1,)), int(num_voxels * k / 100), sorted=False)
    return res.mean()


def top_valid_mean(elements: Tensor, valid: Tensor, k: float) -> Tensor:
    """Mean of the floor(k/100 * n_valid) (at least 1) highest valid elements, by a full sort."""
    v = elements[valid]
    if v.numel() == 0:
        return elements.sum() * 0
    K = max(1, int(v.numel() * k / 100))
    return torch.sort(v, descending=True).values[:K].mean()


@pytest.mark.parametrize("k", [10.0, 2.5, 37.0, 100.0])
@pytest.mark.parametrize("shape", [(16, 12), (5, 6, 7)], ids=["2d", "3d"])
def test_topk_ce_equals_nnunet(shape: tuple[int, ...], k: float) -> None:
    x, y = make("multiclass", shape, c=4, seed=1)
    assert_same(lambda z: topk_ce_loss(z, y, mode="multiclass", k=k), lambda z: nnunet_topk(z, y, k), x)


def test_topk_ce_k100_is_plain_cross_entropy() -> None:
    x, y = make("multiclass", (9, 9), seed=2)
    assert_same(lambda z: topk_ce_loss(z, y, mode="multiclass", k=100.0), lambda z: F.cross_entropy(z, y), x)
    xb, yb = make("binary", (9, 9), seed=2)
    assert_same(lambda z: topk_ce_loss(z, yb, k=100.0), lambda z: F.binary_cross_entropy_with_logits(z, yb), xb)


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_topk_ce_sigmoid_form_is_the_top_of_the_elementwise_bce(mode: str) -> None:
    x, y = make(mode, (8, 10), seed=3)
    ref = lambda z: top_valid_mean(F.binary_cross_entropy_with_logits(z, y, reduction="none"),
                                   torch.ones_like(y, dtype=torch.bool), 10.0)
    assert_same(lambda z: topk_ce_loss(z, y, mode=mode), ref, x)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_topk_ce_with_ignore_index_ranks_only_valid_pixels(mode: str) -> None:
    x, y = make(mode, (10, 12), seed=4, ignore=0.3)
    valid = y != IGNORE
    yt = torch.where(valid, y, torch.zeros_like(y))
    if mode == "multiclass":
        ref = lambda z: top_valid_mean(F.cross_entropy(z, yt, reduction="none"), valid, 10.0)
    else:
        ref = lambda z: top_valid_mean(F.binary_cross_entropy_with_logits(z, yt, reduction="none"),
                                       valid, 10.0)
    # confident wrong logits at the ignored pixels: they would be the hardest if they counted
    at = (~valid).unsqueeze(1).expand_as(x) if mode == "multiclass" else ~valid
    x = torch.where(at, 30 * (1 - 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)), x)
    assert_same(lambda z: topk_ce_loss(z, y, mode=mode, ignore_index=IGNORE), ref, x)
    if mode == "multiclass":  # nnU-Net counts ignored voxels in numel (at CE 0): K differs
        ours = topk_ce_loss(x, y, mode=mode, ignore_index=IGNORE)
        assert abs(float(ours - nnunet_topk(x, y, 10.0, IGNORE))) > 1e-3


def test_topk_ce_ties_and_tiny_images() -> None:
    # every pixel equally wrong: ties everywhere, the value is that CE
    x = torch.zeros(1, 3, 4, 5, dtype=F64)
    y = torch.zeros(1, 4, 5, dtype=torch.long)
    v, g = grad_of(lambda z: topk_ce_loss(z, y, mode="multiclass"), x)
    assert float(v) == pytest.approx(math.log(3))
    # K = 2 of 20 tied pixels: each gets the weight 2/20, so the gradient is that of the mean CE
    _, ref_g = grad_of(lambda z: F.cross_entropy(z, y), x)
    torch.testing.assert_close(g, ref_g)
    # 5 pixels, k = 10: nnU-Net's count int(0.5) = 0 gives NaN; here K = 1, the highest CE
    x, y = make("multiclass", (5,), n=1, seed=5)
    assert math.isnan(float(nnunet_topk(x, y)))
    assert float(topk_ce_loss(x, y, mode="multiclass")) == pytest.approx(float(F.cross_entropy(x, y, reduction="none").max()))


# == ohem_ce ======================================================================================
def mmseg_ohem(score: Tensor, target: Tensor, thresh: float = 0.7, min_kept: int = 100000,
               ignore_label: int = 255, class_weight: Tensor | None = None) -> Tensor:
    """mmsegmentation, mmseg/models/losses/ohem_cross_entropy_loss.py, ``OhemCrossEntropy.forward``
    (from PIDNet), transcribed."""
    min_kept = max(1, min_kept)
    pred = F.softmax(score, dim=1)
    pixel_losses = F.cross_entropy(score, target, weight=class_weight, ignore_index=ignore_label,
                                   reduction="none").contiguous().view(-1)
    mask = target.contiguous().view(-1) != ignore_label
    tmp_target = target.clone()
    tmp_target[tmp_target == ignore_label] = 0
    pred = pred.gather(1, tmp_target.unsqueeze(1))
    pred, ind = pred.contiguous().view(-1,)[mask].contiguous().sort()
    if pred.numel() > 0:
        min_value = pred[min(min_kept, pred.numel() - 1)]
    else:
        return score.new_tensor(0.0)
    threshold = max(min_value, thresh)
    pixel_losses = pixel_losses[mask][ind]
    pixel_losses = pixel_losses[pred < threshold]
    return pixel_losses.mean()


@pytest.mark.parametrize(
    "thresh, min_kept, ignore, weights",
    [
        (0.7, 50, 0.0, None),  # min_kept rules: few pixels below 0.7
        (0.7, 50, 0.2, None),
        (0.99, 20, 0.0, None),  # the threshold rules: many pixels below it
        (0.7, 80, 0.1, [0.5, 2.0, 1.0, 3.0]),
        (0.3, 1, 0.0, None),
    ],
)
def test_ohem_ce_equals_mmseg_when_more_than_min_kept_pixels_are_valid(thresh: float, min_kept: int, ignore: float,
                                                                       weights: list[float] | None) -> None:
    x, y = make("multiclass", (16, 16), c=4, seed=6, ignore=ignore, scale=3.0)
    cw = None if weights is None else torch.tensor(weights, dtype=F64)
    kw: dict[str, Any] = {"threshold": thresh, "min_kept": min_kept}
    if weights is not None:
        kw["class_weights"] = weights
    assert int((y != IGNORE).sum()) > min_kept
    assert_same(lambda z: ohem_ce_loss(z, y, mode="multiclass", ignore_index=IGNORE, **kw),
                lambda z: mmseg_ohem(z, y, thresh, min_kept, IGNORE, cw), x)


def test_ohem_ce_differs_from_mmseg_with_few_pixels() -> None:
    """At most min_kept valid pixels: every one is kept (plain CE); mmseg drops the easiest one."""
    x, y = make("multiclass", (6, 6), seed=7)
    ours = ohem_ce_loss(x, y, mode="multiclass")  # min_kept = 100000 > 72 pixels
    torch.testing.assert_close(ours, F.cross_entropy(x, y))
    q = torch.softmax(x, 1).gather(1, y.unsqueeze(1)).flatten()
    ce = F.cross_entropy(x, y, reduction="none").flatten()
    torch.testing.assert_close(mmseg_ohem(x, y), ce[q < q.max()].mean())
    assert abs(float(ours - mmseg_ohem(x, y))) > 1e-4
    # one valid pixel, well predicted (q > threshold): mmseg keeps q < q[0], nothing (NaN); here its CE
    y1 = y[:1, :1, :1]
    x1 = 3 * onehot(y1, 3)
    assert math.isnan(float(mmseg_ohem(x1, y1)))
    torch.testing.assert_close(ohem_ce_loss(x1, y1, mode="multiclass"), F.cross_entropy(x1, y1))


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_ohem_ce_sigmoid_form(mode: str) -> None:
    x, y = make(mode, (12, 12), seed=8, ignore=0.1)
    valid = y != IGNORE
    yt = torch.where(valid, y, torch.zeros_like(y))

    def ref(z: Tensor) -> Tensor:
        p = torch.sigmoid(z)
        q = (p * yt + (1 - p) * (1 - yt)).detach()[valid]
        ce = F.binary_cross_entropy_with_logits(z, yt, reduction="none")[valid]
        order = torch.argsort(q)
        hard = torch.zeros_like(q, dtype=torch.bool)
        hard[order[:40]] = True
        return ce[(q < 0.6) | hard].mean()

    assert_same(lambda z: ohem_ce_loss(z, y, mode=mode, threshold=0.6, min_kept=40, ignore_index=IGNORE), ref, x)


# == wasserstein_dice ==============================================================================
@pytest.mark.parametrize("weighting", ["default", "GDL"])
@pytest.mark.parametrize("shape", [(8, 9), (4, 5, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("matrix", [DIST3, None, [[0.0, 3.0, 6.0], [3.0, 0.0, 1.5], [6.0, 1.5, 0.0]]],
                         ids=["monai-example", "identity", "unnormalised"])
def test_wasserstein_dice_equals_monai(weighting: str, shape: tuple[int, ...], matrix: list | None) -> None:
    from monai.losses import GeneralizedWassersteinDiceLoss

    x, y = make("multiclass", shape, seed=9)
    m = torch.tensor(matrix, dtype=F64) if matrix is not None else 1 - torch.eye(3, dtype=F64)
    peer = GeneralizedWassersteinDiceLoss(dist_matrix=m, weighting_mode=weighting)
    assert_same(lambda z: wasserstein_dice_loss(z, y, dist_matrix=matrix, weighting_mode=weighting),
                lambda z: peer(z, y), x, rtol=1e-6, atol=1e-9)


def ref_gwdl(x: Tensor, t: Tensor, M: Tensor, weighting: str = "default", s: float = 1e-5,
             per_image: bool = True) -> Tensor:
    """Fidon et al. 2017, eqs. (6)-(9), with the target a distribution t_i over the classes (an
    expectation over t), by explicit loops over images and classes."""
    p = torch.softmax(x, 1).flatten(2)  # (N, C, n)
    t = t.flatten(2)
    M = M / M.max()
    rows = range(p.shape[0]) if per_image else [slice(None)]
    out = []
    for r in rows:
        pr, tr = p[r].reshape(-1, p.shape[1], p.shape[2]), t[r].reshape(-1, t.shape[1], t.shape[2])
        pr, tr = pr.movedim(1, 0).reshape(p.shape[1], -1), tr.movedim(1, 0).reshape(t.shape[1], -1)  # (C, n)
        C = pr.shape[0]
        dist = torch.stack([(M[l].unsqueeze(1) * pr).sum(0) for l in range(C)])  # (C, n): distance of p_i to l
        W = (tr * dist).sum(0)
        a = [0.0] + [1.0] * (C - 1) if weighting == "default" else [1 / (float(tr[l].sum()) + 1) for l in range(C)]
        tp = sum(a[l] * (tr[l] * (1 - dist[l])).sum() for l in range(C))
        den = 2 * tp + W.sum() if weighting == "default" else sum(a[l] * (tr[l] * (2 - dist[l])).sum() for l in range(C))
        out.append(1 - (2 * tp + s) / (den + s))
    return torch.stack(out).mean()


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("weighting", ["default", "GDL"])
def test_wasserstein_dice_soft_targets_and_whole_batch(weighting: str, per_image: bool) -> None:
    x, y = make("multiclass", (7, 8), seed=10)
    soft = torch.softmax(3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64), 1)
    M = torch.tensor(DIST3, dtype=F64)
    kw = {"dist_matrix": DIST3, "weighting_mode": weighting, "per_image": per_image}
    assert_same(lambda z: wasserstein_dice_loss(z, soft, **kw), lambda z: ref_gwdl(z, soft, M, weighting,
                                                                                      per_image=per_image), x)
    assert_same(lambda z: wasserstein_dice_loss(z, y, **kw), lambda z: ref_gwdl(z, onehot(y, 3), M, weighting,
                                                                                   per_image=per_image), x)


def test_wasserstein_dice_empty_and_perfect() -> None:
    y = torch.zeros(2, 6, 6, dtype=torch.long)  # all background
    perfect = torch.tensor([40.0, -40.0, -40.0], dtype=F64).view(1, 3, 1, 1).expand(2, 3, 6, 6).contiguous()
    assert float(wasserstein_dice_loss(perfect, y, dist_matrix=DIST3)) == pytest.approx(0.0, abs=1e-9)
    wrong = perfect.roll(1, dims=1)  # class 1 everywhere
    assert float(wasserstein_dice_loss(wrong, y, dist_matrix=DIST3)) == pytest.approx(1.0, abs=1e-6)
    # an all-background target: 1 - s / (sum_i W_i + s), W_i = p_i(class 1) + p_i(class 2)
    x, _ = make("multiclass", (6, 6), seed=11)
    p = torch.softmax(x, 1)
    W = (p[:, 1] + p[:, 2]).flatten(1).sum(1)
    torch.testing.assert_close(wasserstein_dice_loss(x, y, dist_matrix=DIST3), (1 - 1e-5 / (W + 1e-5)).mean())


@pytest.mark.parametrize(
    "matrix, needle",
    [
        ([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "must be square"),
        ([[0.0, 1.0, 1.0], [1.0, 0.0]], "must be square"),
        ([[0.0]], "C >= 2"),
        ([[0.0, 1.0], [2.0, 0.0]], "must be symmetric: M\\[0\\]\\[1\\] = 1 but M\\[1\\]\\[0\\] = 2"),
        ([[0.5, 1.0], [1.0, 0.0]], "zero diagonal"),
        ([[0.0, -1.0], [-1.0, 0.0]], "must be >= 0"),
        ([[0.0, float("nan")], [float("nan"), 0.0]], "must be finite"),
        ([[0.0, float("inf")], [float("inf"), 0.0]], "must be finite"),
        ([[0.0, 0.0], [0.0, 0.0]], "positive entry"),
        ("abc", "wasserstein_dice: dist_matrix"),
    ],
)
def test_wasserstein_dice_matrix_rules(matrix: Any, needle: str) -> None:
    with pytest.raises(LossConfigError, match=needle):
        build_loss("wasserstein_dice", mode="multiclass", dist_matrix=matrix)


def test_wasserstein_dice_matrix_size_checked_against_c_at_call_time() -> None:
    x, y = make("multiclass", (5, 5), c=4, seed=12)
    crit = build_loss("wasserstein_dice", mode="multiclass", dist_matrix=DIST3)
    with pytest.raises(InputError, match="dist_matrix is 3 x 3 but the logits .* have C = 4 classes; give a 4 x 4"):
        crit(x, y)
    with pytest.raises(InputError, match="dist_matrix is 3 x 3 but the logits .* have C = 4 classes; give a 4 x 4"):
        wasserstein_dice_loss(x, y, dist_matrix=DIST3)
    with pytest.raises(LossConfigError, match="not defined for mode 'binary'"):
        build_loss("wasserstein_dice", mode="binary")


# == unified_focal ================================================================================
@pytest.mark.parametrize("shape", [(9, 10), (4, 5, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("weight, delta, gamma", [(0.5, 0.7, 0.5), (0.3, 0.6, 0.2), (0.8, 0.9, 0.0), (0.0, 0.5, 1.0)])
def test_unified_focal_binary_equals_monai(shape: tuple[int, ...], weight: float, delta: float, gamma: float) -> None:
    from monai.losses import AsymmetricUnifiedFocalLoss

    x, y = make("binary", shape, seed=13)
    # MONAI takes probabilities (B, 1, *S) and builds the two classes (1 - p, p) itself
    peer = AsymmetricUnifiedFocalLoss(weight=weight, delta=delta, gamma=gamma)
    assert_same(lambda z: unified_focal_loss(z, y, weight=weight, delta=delta, gamma=gamma),
                lambda z: peer(torch.sigmoid(z), y), x, rtol=1e-6, atol=1e-9)


def test_unified_focal_multiclass_two_classes_equals_monai() -> None:
    from monai.losses import AsymmetricUnifiedFocalLoss

    x, y = make("multiclass", (8, 8), c=2, seed=14)
    peer = AsymmetricUnifiedFocalLoss()
    assert_same(lambda z: unified_focal_loss(z, y, mode="multiclass"),
                lambda z: peer(torch.softmax(z, 1), onehot(y, 2)), x, rtol=1e-6, atol=1e-9)


def ref_unified(p: Tensor, t: Tensor, valid: Tensor, weight: float = 0.5, delta: float = 0.7, gamma: float = 0.5,
                s: float = 1e-7) -> Tensor:
    """Yeung et al. 2022, eqs. (16)-(20) (the asymmetric unified focal loss), class 0 the
    background and every other class rare, with explicit loops over classes and images."""
    N, C = p.shape[:2]
    m = valid.to(F64)
    npix = m.sum()
    focal = 0.0
    for c in range(C):
        ce = -t[:, c] * torch.log(p[:, c])
        term = (1 - delta) * (1 - p[:, 0]) ** gamma * ce if c == 0 else delta * ce
        focal = focal + (term * m).sum() / npix
    focal = focal / C
    tversky = []
    for n in range(N):
        for c in range(C):
            pc, tc, mc = p[n, c], t[n, c], m[n]
            tp = (pc * tc * mc).sum()
            fn = ((1 - pc) * tc * mc).sum()
            fp = (pc * (1 - tc) * mc).sum()
            ti = (tp + s) / (tp + delta * fn + (1 - delta) * fp + s)
            tversky.append(1 - ti if c == 0 else (1 - ti) ** (1 - gamma))
    return weight * focal + (1 - weight) * torch.stack(tversky).mean()


@pytest.mark.parametrize("ignore", [0.0, 0.2])
@pytest.mark.parametrize("weight, delta, gamma", [(0.5, 0.7, 0.5), (0.4, 0.8, 0.25)])
def test_unified_focal_multiclass_equals_the_paper(weight: float, delta: float, gamma: float, ignore: float) -> None:
    x, y = make("multiclass", (7, 9), c=4, seed=15, ignore=ignore)
    valid = y != IGNORE
    t = onehot(torch.where(valid, y, 0), 4)
    kw = {"weight": weight, "delta": delta, "gamma": gamma}
    assert_same(lambda z: unified_focal_loss(z, y, mode="multiclass", ignore_index=IGNORE, **kw),
                lambda z: ref_unified(torch.softmax(z, 1), t, valid, **kw), x)
    xb, yb = make("binary", (7, 9), seed=15, ignore=ignore)
    vb = (yb != IGNORE)[:, 0]
    tb = torch.where(yb != IGNORE, yb, 0.0)
    assert_same(lambda z: unified_focal_loss(z, yb, ignore_index=IGNORE, **kw),
                lambda z: ref_unified(torch.cat([1 - torch.sigmoid(z), torch.sigmoid(z)], 1),
                                      torch.cat([1 - tb, tb], 1), vb, **kw), xb)


def test_unified_focal_symmetric_parameters_treat_classes_alike_and_defaults_do_not() -> None:
    x, y = make("multiclass", (6, 6), c=3, seed=16)
    perm = torch.tensor([2, 0, 1])
    x2 = torch.empty_like(x)
    x2[:, perm] = x
    y2 = perm[y]
    sym = {"gamma": 0.0, "delta": 0.5}
    torch.testing.assert_close(unified_focal_loss(x2, y2, mode="multiclass", **sym),
                               unified_focal_loss(x, y, mode="multiclass", **sym))
    assert abs(float(unified_focal_loss(x2, y2, mode="multiclass") - unified_focal_loss(x, y, mode="multiclass"))) > 1e-4


# == nacl =========================================================================================
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"kernel_size": 5, "distance_type": "l2", "alpha": 0.3},
        {"kernel_ops": "gaussian", "sigma": 1.0},
        {"kernel_ops": "gaussian", "sigma": 0.7, "distance_type": "l2"},
        {"kernel_size": 1, "alpha": 1.0},
    ],
    ids=["defaults", "mean5-l2", "gauss1", "gauss0.7-l2", "mean1"],
)
@pytest.mark.parametrize("shape", [(9, 8), (5, 6, 7)], ids=["2d", "3d"])
def test_nacl_equals_monai(shape: tuple[int, ...], kw: dict) -> None:
    from monai.losses import NACLLoss

    x, y = make("multiclass", shape, c=3, seed=17)
    peer = NACLLoss(classes=3, dim=len(shape), **kw)
    assert_same(lambda z: nacl_loss(z, y, **kw), lambda z: peer(z, y), x, rtol=1e-6, atol=1e-8)


def test_nacl_formula_1d_and_soft_targets() -> None:
    x, y = make("multiclass", (11,), c=3, seed=18)
    soft = torch.softmax(torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64), 1)

    def ref(z: Tensor, t: Tensor) -> Tensor:
        ce = -(t * torch.log_softmax(z, 1)).sum(1).mean()
        padded = F.pad(t, (1, 1))
        u = (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3  # the 3-box, zero padding
        return ce + 0.1 * (u - z).abs().mean()

    assert_same(lambda z: nacl_loss(z, soft), lambda z: ref(z, soft), x)
    assert_same(lambda z: nacl_loss(z, y), lambda z: ref(z, onehot(y, 3)), x)


# == exp_log =====================================================================================
def ref_exp_log(prob: Tensor, t: Tensor, valid: Tensor, w_dice: float = 0.8, w_cross: float = 0.2,
                gamma_dice: float = 0.3, gamma_cross: float = 0.3, eps: float = 1.0, per_image: bool = False,
                freqs: list[float] | None = None) -> Tensor:
    """Wong et al. 2018 (arXiv 1809.00076), eqs. (2)-(5), with explicit loops over labels:
    L = w_dice E_i[(-ln Dice_i)^gd] + w_cross E_x[w_l (-ln p_l(x))^gc], w_l = (sum_k f_k / f_l)^0.5."""
    N, C = prob.shape[:2]
    m = valid.to(F64).unsqueeze(1)
    rows = range(N) if per_image else [slice(None)]
    dice_terms = []
    for r in rows:
        per_label = []
        for i in range(C):
            p_i, d_i, m_r = prob[r, i], t[r, i], m[r, 0]
            dice = (2 * (d_i * p_i * m_r).sum() + eps) / ((d_i * m_r).sum() + (p_i * m_r).sum() + eps)
            per_label.append((-torch.log(dice)) ** gamma_dice)
        dice_terms.append(torch.stack(per_label).mean())
    l_dice = torch.stack(dice_terms).mean()
    f = [float((t[:, k] * m[:, 0]).sum()) for k in range(C)] if freqs is None else freqs
    w = [math.sqrt(sum(f) / fk) if fk > 0 else 0.0 for fk in f]
    cross = sum(w[l] * t[:, l] * (-torch.log(prob[:, l])) ** gamma_cross for l in range(C))
    l_cross = (cross * m[:, 0]).sum() / m.sum()
    return w_dice * l_dice + w_cross * l_cross


@pytest.mark.parametrize("ignore", [0.0, 0.15])
@pytest.mark.parametrize(
    "kw",
    [{}, {"per_image": True}, {"gamma_dice": 1.0, "gamma_cross": 2.0, "w_dice": 0.5, "w_cross": 0.5, "smooth": 0.5},
     {"label_frequencies": [0.7, 0.2, 0.05, 0.05]}],
    ids=["paper", "per_image", "other-gammas", "dataset-frequencies"],
)
def test_exp_log_multiclass_equals_the_paper(kw: dict, ignore: float) -> None:
    x, y = make("multiclass", (8, 9), c=4, seed=19, ignore=ignore)
    valid = y != IGNORE
    t = onehot(torch.where(valid, y, 0), 4)
    ref_kw = {k: v for k, v in kw.items() if k not in ("smooth", "label_frequencies")}
    ref_kw.update(eps=kw.get("smooth", 1.0), freqs=kw.get("label_frequencies"))
    assert_same(lambda z: exp_log_loss(z, y, ignore_index=IGNORE, **kw),
                lambda z: ref_exp_log(torch.softmax(z, 1), t, valid, **ref_kw), x)


def test_exp_log_binary_is_the_two_label_form_and_handles_an_absent_label() -> None:
    x, y = make("binary", (8, 8), seed=20, ignore=0.1)
    valid = (y != IGNORE)[:, 0]
    tb = torch.where(y != IGNORE, y, 0.0)

    def ref(z: Tensor) -> Tensor:
        p = torch.sigmoid(z)
        return ref_exp_log(torch.cat([1 - p, p], 1), torch.cat([1 - tb, tb], 1), valid)

    assert_same(lambda z: exp_log_loss(z, y, mode="binary", ignore_index=IGNORE), ref, x)
    # label 2 absent from the batch: its weight never counts, the loss stays finite
    x, y = make("multiclass", (6, 6), c=3, seed=21)
    y[y == 2] = 1
    v, g = grad_of(lambda z: exp_log_loss(z, y), x)
    assert bool(torch.isfinite(v)) and bool(torch.isfinite(g).all())
    torch.testing.assert_close(v, ref_exp_log(torch.softmax(x, 1), onehot(y, 3), torch.ones_like(y, dtype=torch.bool)))


def test_exp_log_perfect_and_all_ignored() -> None:
    y = torch.randint(0, 3, (2, 6, 6), generator=torch.Generator().manual_seed(3))
    perfect = (60 * onehot(y, 3) - 30).requires_grad_(True)
    v = exp_log_loss(perfect, y)
    (g,) = torch.autograd.grad(v, perfect)
    assert float(v) < 0.02 and bool(torch.isfinite(g).all())  # (-ln Dice)^0.3 with Dice = (2T+1)/(2T+1) -> 0
    allign = torch.full_like(y, IGNORE)
    assert float(exp_log_loss(perfect.detach(), allign, ignore_index=IGNORE)) == 0.0


# == per-class focal alpha =========================================================================
def ref_focal_multiclass(x: Tensor, t: Tensor, a: list[float], gamma: float) -> Tensor:
    p = torch.softmax(x, 1)
    w = torch.tensor(a, dtype=F64).view(1, -1, *([1] * (x.dim() - 2)))
    return (-(w * t * (1 - p) ** gamma * torch.log(p))).sum(1).mean()


@pytest.mark.parametrize("gamma", [2.0, 0.5, 0.0])
def test_focal_per_class_alpha_multiclass_equals_formula_and_monai(gamma: float) -> None:
    from monai.losses import FocalLoss

    x, y = make("multiclass", (7, 8), c=4, seed=22)
    a = [0.1, 0.4, 0.2, 0.9]
    t = onehot(y, 4)
    assert_same(lambda z: focal_loss(z, y, mode="multiclass", alpha=a, gamma=gamma),
                lambda z: ref_focal_multiclass(z, t, a, gamma), x)
    # MONAI averages over the class axis too: its value times C is ours
    peer = FocalLoss(alpha=a, gamma=gamma, use_softmax=True, to_onehot_y=True)
    assert_same(lambda z: focal_loss(z, y, mode="multiclass", alpha=a, gamma=gamma),
                lambda z: 4 * peer(z, y.unsqueeze(1)).double(), x, rtol=1e-5, atol=1e-7)  # MONAI computes in float32
    # MONAI's weight= is the same per-class factor
    peer_w = FocalLoss(weight=a, gamma=gamma, use_softmax=True, to_onehot_y=True)
    assert_same(lambda z: focal_loss(z, y, mode="multiclass", alpha=a, gamma=gamma),
                lambda z: 4 * peer_w(z, y.unsqueeze(1)).double(), x, rtol=1e-5, atol=1e-7)
    # the scalar is the list [1 - alpha, alpha, alpha, alpha]
    torch.testing.assert_close(focal_loss(x, y, mode="multiclass", alpha=0.3, gamma=gamma),
                               focal_loss(x, y, mode="multiclass", alpha=[0.7, 0.3, 0.3, 0.3], gamma=gamma))


def test_focal_per_class_alpha_multilabel_is_the_scalar_rule_per_channel() -> None:
    from monai.losses import FocalLoss

    x, y = make("multilabel", (6, 7), c=3, seed=23)
    a = [0.2, 0.5, 0.85]

    def per_channel(z: Tensor) -> Tensor:  # MONAI's scalar alpha on each channel alone
        return torch.stack([FocalLoss(alpha=a[c], gamma=2.0, reduction="none")(z[:, c:c + 1], y[:, c:c + 1])
                            for c in range(3)]).mean().double()  # MONAI computes in float32

    assert_same(lambda z: focal_loss(z, y, mode="multilabel", alpha=a), per_channel, x, rtol=1e-5, atol=1e-7)
    # MONAI's list form weighs the negatives by 1, not 1 - a_c: another function
    p = torch.sigmoid(x)
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    w = torch.tensor(a, dtype=F64).view(1, 3, 1, 1)
    monai_list = FocalLoss(alpha=a, gamma=2.0)(x, y).double()
    torch.testing.assert_close(monai_list, (torch.where(y == 1, w, 1.0) * (1 - p_t) ** 2 * bce).mean(), rtol=1e-5,
                               atol=1e-7)
    assert abs(float(monai_list - focal_loss(x, y, mode="multilabel", alpha=a))) > 1e-3
    # [alpha] * C is the scalar alpha; binary takes a list of one
    torch.testing.assert_close(focal_loss(x, y, mode="multilabel", alpha=[0.3] * 3),
                               focal_loss(x, y, mode="multilabel", alpha=0.3))
    xb, yb = make("binary", (6, 7), seed=23)
    torch.testing.assert_close(focal_loss(xb, yb, alpha=[0.4]), focal_loss(xb, yb, alpha=0.4))


def test_focal_per_class_alpha_rules() -> None:
    x, y = make("multiclass", (4, 4), c=3)
    with pytest.raises(InputError, match="focal: alpha has 2 entries but the logits .* have C = 3"):
        build_loss("focal", mode="multiclass", alpha=[0.5, 0.5])(x, y)
    with pytest.raises(InputError, match="alpha has 2 entries"):
        focal_loss(x, y, mode="multiclass", alpha=[0.5, 0.5])
    xb, yb = make("binary", (4, 4))
    with pytest.raises(InputError, match="alpha has 3 entries but the logits .* have C = 1"):
        build_loss("focal", alpha=[0.2, 0.3, 0.5])(xb, yb)
    for bad, msg in (([0.2, 1.5], "focal: alpha must hold finite values in [0, 1], one per class (got [0.2, 1.5])"),
                     ([], "focal: alpha must be a number in [0, 1], a non-empty list of one per class, or None (got [])"),
                     ([0.1, float("nan")], "focal: alpha must hold finite values in [0, 1]"),
                     (2, "focal: alpha must be <= 1 (got 2)"), (float("inf"), "focal: alpha must be finite (got inf)")):
        with pytest.raises(LossConfigError) as err:
            build_loss("focal", mode="multiclass", alpha=bad)
        assert str(err.value).startswith(msg)
    crit = build_loss("focal(alpha=[0.1, 0.2, 0.7])", mode="multiclass")
    assert crit.terms[0].params.alpha == [0.1, 0.2, 0.7]
    assert build_loss(crit.config()).config() == crit.config()
    assert FocalParams.model_json_schema()["properties"]["alpha"].get("segloss_per_class") is True


class _FocalPlugin:
    """focal, registered for the modes where a list of three alphas fits the kit's C = 3."""

    @hookimpl
    def register_losses(self, register: Any) -> None:
        register("focal_per_class_probe", focal, params=FocalParams, modes=("multiclass", "multilabel"),
                 summary="focal with per-class alpha")


def test_focal_per_class_alpha_passes_the_conformance_kit() -> None:
    with registered_plugin(_FocalPlugin(), "focal_per_class_probe_plugin"):
        check_loss("focal_per_class_probe", params={"alpha": [0.2, 0.5, 0.8], "gamma": 1.5}, compile=False)


# == soft labels in the region losses ==============================================================
def soft_target(mode: str, shape: tuple[int, ...], c: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if mode == "multiclass":
        return torch.softmax(2 * torch.randn(2, c, *shape, generator=g, dtype=F64), 1)
    return torch.rand(2, 1 if mode == "binary" else c, *shape, generator=g, dtype=F64)


def _ours_and_monai(name: str, mode: str, per_image: bool) -> tuple[Any, Any]:
    from monai.losses import DiceLoss, TverskyLoss
    from segloss_dice import dice_loss
    from segloss_iou import iou_loss
    from segloss_tversky import tversky_loss

    act = {"softmax": True} if mode == "multiclass" else {"sigmoid": True}
    batch = not per_image
    if name == "dice":
        return (lambda z, t: dice_loss(z, t, mode=mode, per_image=per_image),
                DiceLoss(soft_label=True, smooth_nr=1.0, smooth_dr=1.0, batch=batch, **act))
    if name == "iou":  # MONAI's jaccard: 1 - (2I + s)/(2U + s), ours with smooth s/2
        return (lambda z, t: iou_loss(z, t, mode=mode, per_image=per_image, smooth=0.5),
                DiceLoss(jaccard=True, soft_label=True, smooth_nr=1.0, smooth_dr=1.0, batch=batch, **act))
    return (lambda z, t: tversky_loss(z, t, mode=mode, per_image=per_image, alpha=0.3, beta=0.7),
            TverskyLoss(alpha=0.3, beta=0.7, soft_label=True, smooth_nr=1.0, smooth_dr=1.0, batch=batch, **act))


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("name", ["dice", "iou", "tversky"])
def test_region_losses_on_hard_float_targets_equal_monai_soft_label(name: str, mode: str, per_image: bool) -> None:
    """0/1 (one-hot) float targets: MONAI's soft-label formula and ours agree."""
    x, y = make(mode, (6, 7), seed=24)
    t = onehot(y, 3) if mode == "multiclass" else y
    ours, peer = _ours_and_monai(name, mode, per_image)
    assert_same(lambda z: ours(z, t), lambda z: peer(z, t), x, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("name", ["dice", "iou", "tversky"])
def test_region_losses_on_soft_targets_equal_monai_soft_label(name: str, mode: str) -> None:
    """Soft targets: MONAI's ``soft_label=True`` takes ``I = (|p| + |t| - |p - t|) / 2 = sum(min(p, t))``
    (Wang & Blaschko 2023, minimised at p = t); so do the region losses here (``inp.region_stats``),
    which is ``sum(p t)`` on 0/1 targets."""
    x, _ = make(mode, (6, 7), seed=25)
    t = soft_target(mode, (6, 7), 3, seed=26)
    ours, peer = _ours_and_monai(name, mode, False)
    torch.testing.assert_close(ours(x, t), peer(x, t), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["dice", "iou", "tversky"])
def test_region_losses_on_soft_targets_follow_the_documented_formula(name: str) -> None:
    """The region losses on soft targets: I = sum(min(p, t)), P = sum(p), T = sum(t)."""
    x, _ = make("multiclass", (6, 7), seed=27)
    t = soft_target("multiclass", (6, 7), 3, seed=28)
    ours, _ = _ours_and_monai(name, "multiclass", False)
    p = torch.softmax(x, 1)
    dims = (0, 2, 3)
    I, P, T = torch.minimum(p, t).sum(dims), p.sum(dims), t.sum(dims)
    ref = {"dice": 1 - (2 * I + 1) / (P + T + 1), "iou": 1 - (I + 0.5) / (P + T - I + 0.5),
           "tversky": 1 - (I + 1) / (I + 0.3 * (P - I) + 0.7 * (T - I) + 1)}[name].mean()
    torch.testing.assert_close(ours(x, t), ref)


# == gradcheck (float64, small) ====================================================================
GRAD_KW = {
    "topk_ce": {"k": 30.0},
    "ohem_ce": {"threshold": 0.6, "min_kept": 5},
    "wasserstein_dice": {"dist_matrix": DIST3},
    "unified_focal": {},
    "nacl": {"kernel_ops": "gaussian", "distance_type": "l2"},
    "exp_log": {},
}


@pytest.mark.parametrize("name,mode", [(n, m) for n in NEW for m in MODES[n]])
def test_gradcheck(name: str, mode: str) -> None:
    x, y = make(mode, (3, 4), seed=29, scale=1.0)
    kw = GRAD_KW[name]
    assert torch.autograd.gradcheck(lambda z: FUNCS[name](z, y, mode=mode, **kw), (x.requires_grad_(True),),
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_gradcheck_focal_per_class_alpha(mode: str) -> None:
    x, y = make(mode, (3, 4), seed=30, scale=1.0)
    a = [0.3] if mode == "binary" else [0.1, 0.6, 0.3]
    assert torch.autograd.gradcheck(lambda z: focal_loss(z, y, mode=mode, alpha=a, gamma=1.5),
                                    (x.requires_grad_(True),), eps=1e-6, atol=1e-5)


# == compiled == eager, fullgraph ====================================================================
COMPILED = {
    # one composite per case, of every new loss of the mode (and focal with per-class alpha)
    "binary-2d": ("binary", (2, 1, 12, 12),
                  "topk_ce + ohem_ce(min_kept=40) + unified_focal + exp_log + focal(alpha=[0.3])"),
    "multiclass-2d": ("multiclass", (2, 3, 12, 12),
                      ("topk_ce + ohem_ce(min_kept=40) + wasserstein_dice(dist_matrix=[[0, 1, 1], [1, 0, 0.5], "
                       "[1, 0.5, 0]]) + unified_focal + nacl + exp_log + focal(alpha=[0.2, 0.3, 0.5])")),
    # (3D is covered eagerly against the peers; one more compiled composite costs ~90 s of CI on 2 cores)
}


def _case_inputs(mode: str, shape: tuple[int, ...], seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(shape, generator=g)
    if mode == "multiclass":
        y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    else:
        y = (torch.rand(shape, generator=g) < 0.4).float()
    return x, torch.where(torch.rand(y.shape, generator=g) < 0.15, torch.full_like(y, IGNORE), y)


@pytest.fixture(scope="module")
def compiled_criteria() -> dict:
    made: dict = {}

    def get(case: str) -> tuple:
        if case not in made:
            mode, _, spec = COMPILED[case]
            made[case] = tuple(build_loss(spec, mode=mode, ignore_index=IGNORE, compile=c) for c in (True, False))
        return made[case]

    return {"get": get}


def _terms_and_grads(crit: Any, x: Tensor, y: Tensor) -> tuple[dict, dict]:
    xg = x.clone().requires_grad_(True)
    total, terms = crit(xg, y, return_terms=True)
    grads = {k: torch.autograd.grad(v, xg, retain_graph=True)[0] for k, v in terms.items()}
    grads["total"] = torch.autograd.grad(total, xg)[0]
    return {k: v.detach() for k, v in terms.items()}, grads


@pytest.mark.compile
@pytest.mark.parametrize("case", list(COMPILED))
def test_compiled_equals_eager(compiled_criteria: dict, case: str) -> None:
    mode, shape, _ = COMPILED[case]
    compiled, eager = compiled_criteria["get"](case)
    bigger = (shape[0] + 1, *shape[1:-1], shape[-1] + 2)  # a second size: the same dynamic graph
    for seed, sh in ((31, shape), (32, bigger)):
        x, y = _case_inputs(mode, sh, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompileWarning)  # a graph break would fall back to eager
            terms_c, grads_c = _terms_and_grads(compiled, x, y)
        assert compiled.uses_compile(x.device)
        terms_e, grads_e = _terms_and_grads(eager, x, y)
        for key in terms_e:
            torch.testing.assert_close(terms_c[key], terms_e[key], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
            torch.testing.assert_close(grads_c[key], grads_e[key], rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
        torch.testing.assert_close(grads_c["total"], grads_e["total"], rtol=1e-4, atol=1e-6)


# == the conformance kit with non-default parameters ==================================================
@pytest.mark.parametrize(
    "name, params",
    [
        ("topk_ce", {"k": 55.0}),
        ("ohem_ce", {"threshold": 0.5, "min_kept": 7}),
        ("wasserstein_dice", {"dist_matrix": DIST3, "weighting_mode": "GDL", "per_image": False}),
        ("unified_focal", {"weight": 0.3, "delta": 0.6, "gamma": 0.1, "per_image": False}),
        ("nacl", {"kernel_ops": "gaussian", "sigma": 0.8, "distance_type": "l2"}),
        ("exp_log", {"per_image": True, "gamma_dice": 0.5, "gamma_cross": 1.0}),
    ],
)
def test_conformance_with_other_parameters(name: str, params: dict) -> None:
    check_loss(name, params=params, compile=False)


# == documented values, odd inputs ====================================================================
@pytest.mark.parametrize("name,mode", [(n, m) for n in NEW for m in MODES[n]])
def test_all_ignored_is_zero_and_one_pixel_is_finite(name: str, mode: str) -> None:
    x, y = make(mode, (4, 4), n=1, seed=33, dtype=torch.float32)
    v, g = grad_of(lambda z: FUNCS[name](z, torch.full_like(y, IGNORE), mode=mode, ignore_index=IGNORE), x)
    assert float(v) == 0.0 and torch.equal(g, torch.zeros_like(g))
    for value in (-1e4, 0.0, 1e4):
        v, g = grad_of(lambda z: FUNCS[name](z, y[..., :1, :1].contiguous(), mode=mode),
                       torch.full_like(x[..., :1, :1], value))
        assert bool(torch.isfinite(v)) and bool(torch.isfinite(g).all()), (name, mode, value)


def test_perfect_predictions_give_about_zero() -> None:
    y = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(4))
    perfect = 60 * onehot(y, 3) - 30
    for name in ("topk_ce", "ohem_ce", "wasserstein_dice", "unified_focal", "exp_log"):
        assert float(FUNCS[name](perfect, y, mode="multiclass")) < 0.02, name
    # nacl's penalty is 0 where the logits are the neighbourhood proportions u (3 x 3 box, zero padding)
    u = F.avg_pool2d(F.pad(onehot(y, 3), (1, 1, 1, 1)), 3, stride=1)
    torch.testing.assert_close(nacl_loss(u, y), F.cross_entropy(u, y))


@pytest.mark.parametrize(
    "spec, kw, needle",
    [
        ("topk_ce", {"k": 0.0}, "topk_ce: k must be > 0 (got 0.0)"),
        ("topk_ce", {"k": 120.0}, "topk_ce: k must be <= 100 (got 120.0)"),
        ("ohem_ce", {"threshold": 0.0}, "ohem_ce: threshold must be > 0 (got 0.0)"),
        ("ohem_ce", {"min_kept": 0}, "ohem_ce: min_kept must be >= 1 (got 0)"),
        ("ohem_ce", {"min_kept": 10.5}, "ohem_ce: min_kept must be an integer (got 10.5)"),
        ("ohem_ce", {"class_weights": [1.0, -1.0, 1.0]}, "ohem_ce: class_weights must be a non-empty list"),
        ("wasserstein_dice", {"weighting_mode": "gdl"}, "wasserstein_dice: weighting_mode must be one of"),
        ("wasserstein_dice", {"smooth": -1.0}, "wasserstein_dice: smooth must be >= 0"),
        ("unified_focal", {"delta": 1.5}, "unified_focal: delta must be <= 1 (got 1.5)"),
        ("unified_focal", {"gamma": -0.1}, "unified_focal: gamma must be >= 0"),
        ("unified_focal", {"weight": 2.0}, "unified_focal: weight must be <= 1"),
        ("nacl", {"kernel_size": 4}, "nacl: kernel_size must be an odd integer >= 1 (got 4)"),
        ("nacl", {"kernel_ops": "box"}, "nacl: kernel_ops must be one of"),
        ("nacl", {"distance_type": "l3"}, "nacl: distance_type must be one of"),
        ("nacl", {"sigma": 0.0}, "nacl: sigma must be > 0"),
        ("nacl(alfa=0.1)", {}, "nacl: unknown parameter 'alfa' (did you mean 'alpha'?)"),
        ("exp_log", {"smooth": 0.0}, "exp_log: smooth must be > 0 (got 0.0)"),
        ("exp_log", {"gamma_dice": -1.0}, "exp_log: gamma_dice must be >= 0"),
        ("exp_log", {"label_frequencies": [0.5, 0.0, 0.5]}, "exp_log: label_frequencies must be a non-empty list"),
    ],
)
def test_bad_params(spec: str, kw: dict, needle: str) -> None:
    with pytest.raises(LossConfigError) as err:
        build_loss(spec, mode="multiclass", **kw)
    assert str(err.value).startswith(needle), str(err.value)


def test_per_class_lists_are_checked_against_c() -> None:
    x, y = make("multiclass", (4, 4), c=3)
    for spec in ("ohem_ce(class_weights=[1.0, 2.0])", "exp_log(label_frequencies=[0.5, 0.5])"):
        with pytest.raises(InputError, match="has 2 entries but the logits .* have C = 3"):
            build_loss(spec, mode="multiclass")(x, y)


def test_the_new_losses_are_listed_with_modes_and_dims() -> None:
    from segloss_registry import list_losses

    infos = {i.name: i for i in list_losses()}
    for name in NEW:
        assert infos[name].modes == MODES[name], name
        assert infos[name].dims == (1, 2, 3), name
    assert {"topk", "ohem", "gwdl"} <= {a for i in infos.values() for a in i.aliases}
