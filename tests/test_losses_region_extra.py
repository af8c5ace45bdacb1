"""tversky, focal_tversky, generalized_dice, log_cosh_dice, combo, mcc.

Each loss equals a formula written out here (float64, per class with explicit loops), and
the peer (MONAI, kornia) where one computes the same quantity; where a peer differs by
convention the difference is asserted. Then gradcheck, compiled == eager (one compiled
composite of all six losses per mode, shared by the tests of this file), empty masks, a
batch of one, perfect predictions, and the parameter rules.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from segloss_combo import combo_loss
from segloss_focal_tversky import focal_tversky_loss
from segloss_generalized_dice import generalized_dice_loss
from segloss_log_cosh_dice import log_cosh_dice_loss
from segloss_mcc import mcc_loss
from segloss_tversky import tversky_loss
from torch import Tensor

from segloss_registry import LossConfigError, build_loss

LOSSES = ("tversky", "focal_tversky", "generalized_dice", "log_cosh_dice", "combo", "mcc")
FUNCS = {
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "generalized_dice": generalized_dice_loss,
    "log_cosh_dice": log_cosh_dice_loss,
    "combo": combo_loss,
    "mcc": mcc_loss,
}
MODES = ("binary", "multiclass", "multilabel")
IGNORE = 255
F64 = torch.float64


# -- inputs -------------------------------------------------------------------------------------
def make(mode: str, dim: int, n: int = 2, c: int = 3, seed: int = 0, dtype: torch.dtype = F64,
         ignore: bool = False) -> tuple[Tensor, Tensor]:
    """Random logits (N, C, *S) and a target in the mode's layout; ``ignore`` marks ~15% IGNORE."""
    g = torch.Generator().manual_seed(seed)
    shape = (5, 6) if dim == 2 else (3, 4, 5)
    c = 1 if mode == "binary" else c
    x = (2 * torch.randn(n, c, *shape, generator=g, dtype=F64)).to(dtype)
    if mode == "multiclass":
        y = torch.randint(0, c, (n, *shape), generator=g)
        if ignore:
            y = torch.where(torch.rand(y.shape, generator=g) < 0.15, torch.full_like(y, IGNORE), y)
    else:
        y = (torch.rand(n, c, *shape, generator=g) < 0.4).to(dtype)
        if ignore:
            y = torch.where(torch.rand(y.shape, generator=g) < 0.15, torch.full_like(y, IGNORE), y)
    return x, y


def prob_target_mask(mode: str, x: Tensor, y: Tensor, ignore: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """float64 probabilities, one-hot/binary target and 0/1 valid mask, all (N, C, *S)."""
    x = x.double()
    c = x.shape[1]
    if mode == "multiclass":
        p = torch.softmax(x, 1)
        valid = (y != IGNORE) if ignore else torch.ones_like(y, dtype=torch.bool)
        ids = torch.where(valid, y, torch.zeros_like(y))
        t = F.one_hot(ids, c).movedim(-1, 1).double()
        m = valid.unsqueeze(1).double().expand_as(t)
    else:
        p = torch.sigmoid(x)
        valid = (y != IGNORE) if ignore else torch.ones_like(y, dtype=torch.bool)
        t = torch.where(valid, y, torch.zeros_like(y)).double()
        m = valid.double()
    return p, t * m, m


# -- the reference formulas ---------------------------------------------------------------------
def counts(p: Tensor, t: Tensor, m: Tensor, per_image: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft I, P, T and valid count per class, each (C,) or (N, C), by an explicit loop over classes."""
    rows = range(p.shape[0]) if per_image else [slice(None)]
    out = []
    for r in rows:
        cols = []
        for c in range(p.shape[1]):
            pc, tc, mc = p[r, c] * m[r, c], t[r, c], m[r, c]
            cols.append(torch.stack([(pc * tc).sum(), pc.sum(), tc.sum(), mc.sum()]))
        out.append(torch.stack(cols))  # (C, 4)
    stacked = torch.stack(out)  # (R, C, 4)
    if not per_image:
        stacked = stacked[0]
    return stacked[..., 0], stacked[..., 1], stacked[..., 2], stacked[..., 3]


def class_avg(per_class: Tensor, weights: list[float] | None, drop_bg: bool) -> Tensor:
    """Weighted mean over the class axis, then the mean over samples."""
    if drop_bg:
        per_class = per_class[..., 1:]
        weights = weights[1:] if weights is not None else None
    if weights is None:
        return per_class.mean(-1).mean()
    w = torch.tensor(weights, dtype=F64)
    return ((per_class * w).sum(-1) / w.sum()).mean()


def ref_loss(name: str, mode: str, x: Tensor, y: Tensor, ignore: bool = False, **kw) -> Tensor:
    p, t, m = prob_target_mask(mode, x, y, ignore)
    per_image = kw.get("per_image", False)
    cw = kw.get("class_weights")
    drop_bg = not kw.get("include_background", True)
    s = kw.get("smooth", 1.0)
    I, P, T, n = counts(p, t, m, per_image)
    if name in ("tversky", "focal_tversky"):
        a, b = kw.get("alpha", 0.3), kw.get("beta", 0.7)
        ti = (I + s) / (I + a * (P - I) + b * (T - I) + s)
        per_class = 1 - ti
        if name == "focal_tversky":
            per_class = per_class ** (1 / kw.get("gamma", 4 / 3))
        return class_avg(per_class, cw, drop_bg)
    if name == "log_cosh_dice":
        dice = class_avg(1 - (2 * I + s) / (P + T + s), cw, drop_bg)
        return torch.log(torch.cosh(dice))
    if name == "generalized_dice":
        if drop_bg:
            I, P, T = I[..., 1:], P[..., 1:], T[..., 1:]
            cw = cw[1:] if cw is not None else None
        rows = []
        for i, pp, tt in zip(I.reshape(-1, I.shape[-1]), P.reshape(-1, P.shape[-1]), T.reshape(-1, T.shape[-1])):
            w = [1 / float(v) ** 2 if v > 0 else None for v in tt]
            present = [v for v in w if v is not None]
            w = [v if v is not None else (max(present) if present else 1.0) for v in w]
            if cw is not None:
                w = [a * b for a, b in zip(w, cw)]
            total = sum(w)
            w = torch.tensor([v / total for v in w], dtype=F64)
            rows.append(1 - (2 * (w * i).sum() + s) / ((w * (pp + tt)).sum() + s))
        return torch.stack(rows).mean()
    if name == "combo":
        a, b = kw.get("alpha", 0.5), kw.get("beta", 0.5)
        ce = -(b * t * torch.log(p) + (1 - b) * (1 - t) * torch.log1p(-p))
        dims = (0, *range(2, p.dim()))
        ce_per_class = (ce * m).sum(dims) / m.sum(dims)
        dice = 1 - (2 * I + s) / (P + T + s)
        return a * class_avg(ce_per_class, cw, drop_bg) + (1 - a) * class_avg(dice, cw, drop_bg)
    if name == "mcc":
        tp, fp, fn, tn = I + s, P - I, T - I, n - P - T + I + s
        mcc = (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return class_avg(1 - mcc, cw, drop_bg)
    raise AssertionError(name)


def options(name: str, mode: str) -> dict:
    """Non-default parameters of every kind the loss takes, legal in ``mode``."""
    kw: dict = {"per_image": True, "smooth": 0.5}
    if mode != "binary":
        kw["class_weights"] = [0.2, 1.0, 2.5]
    if mode == "multiclass":
        kw["include_background"] = False
    if name in ("tversky", "focal_tversky"):
        kw.update(alpha=0.2, beta=0.9)
    if name == "focal_tversky":
        kw["gamma"] = 2.5
    if name == "combo":
        kw.update(alpha=0.3, beta=0.8)
    return kw


# -- 1. the formula, every mode, 2D and 3D -----------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSES)
def test_equals_formula(name: str, mode: str, dim: int) -> None:
    x, y = make(mode, dim)
    got = FUNCS[name](x, y, mode=mode)
    assert got.dtype == F64
    torch.testing.assert_close(got, ref_loss(name, mode, x, y), rtol=1e-6, atol=1e-6)
    kw = options(name, mode)
    got = FUNCS[name](x, y, mode=mode, **kw)
    torch.testing.assert_close(got, ref_loss(name, mode, x, y, **kw), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSES)
def test_ignore_index_equals_formula(name: str, mode: str) -> None:
    x, y = make(mode, 2, seed=3, ignore=True)
    got = FUNCS[name](x, y, mode=mode, ignore_index=IGNORE)
    torch.testing.assert_close(got, ref_loss(name, mode, x, y, ignore=True), rtol=1e-6, atol=1e-6)
    # ignored pixels see nothing: changing their logits changes neither value nor gradient elsewhere
    x2 = x.clone()
    m = prob_target_mask(mode, x, y, True)[2][:, :1].bool().expand_as(x) if mode == "multiclass" else \
        prob_target_mask(mode, x, y, True)[2].bool()
    x2[~m] = 7.0
    torch.testing.assert_close(FUNCS[name](x2, y, mode=mode, ignore_index=IGNORE), got, rtol=1e-9, atol=1e-9)


# -- 2. peers -----------------------------------------------------------------------------------------
def monai_kw(mode: str) -> dict:
    return {"softmax": True, "to_onehot_y": True} if mode == "multiclass" else {"sigmoid": True}


def monai_target(mode: str, y: Tensor) -> Tensor:
    return y.unsqueeze(1) if mode == "multiclass" else y


def grad_of(fn, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    v = fn(x)
    (g,) = torch.autograd.grad(v, x)
    return v.detach(), g


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_tversky_equals_monai(mode: str, per_image: bool) -> None:
    from monai.losses import TverskyLoss

    x, y = make(mode, 3, seed=1)
    ib = mode != "multiclass"  # multiclass: also check include_background=False
    # monai.losses.TverskyLoss: alpha on FP, beta on FN, exactly our letters
    peer = TverskyLoss(alpha=0.2, beta=0.9, smooth_nr=0.5, smooth_dr=0.5, batch=not per_image,
                       include_background=ib, **monai_kw(mode))
    v_peer, g_peer = grad_of(lambda z: peer(z, monai_target(mode, y)), x)
    ours = dict(alpha=0.2, beta=0.9, smooth=0.5, per_image=per_image, include_background=ib)
    v, g = grad_of(lambda z: tversky_loss(z, y, mode=mode, **ours), x)
    torch.testing.assert_close(v, v_peer, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_peer, rtol=1e-6, atol=1e-9)
    # focal_tversky with gamma = 1 is the Tversky loss: the same peer
    v_ft = focal_tversky_loss(x, y, mode=mode, gamma=1.0, **ours)
    torch.testing.assert_close(v_ft, v_peer, rtol=1e-6, atol=1e-6)


def test_tversky_equals_kornia_and_the_absent_class_difference() -> None:
    from kornia.losses import tversky_loss as kornia_tversky

    x, y = make("multiclass", 2, c=4, seed=2)
    y[:, 0, :4] = torch.arange(4)  # every class present in every image
    # kornia.losses.tversky_loss: per image, alpha on FP, beta on FN, no smoothing (eps=0)
    peer = kornia_tversky(x, y, alpha=0.2, beta=0.9, eps=0.0)
    ours = tversky_loss(x, y, mode="multiclass", alpha=0.2, beta=0.9, smooth=0.0, per_image=True)
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-6)
    # class 3 absent from image 0: kornia leaves it out of that image's mean, here it counts (1 - 0 = 1)
    y[0][y[0] == 3] = 0
    peer = kornia_tversky(x, y, alpha=0.2, beta=0.9, eps=0.0)
    ours = tversky_loss(x, y, mode="multiclass", alpha=0.2, beta=0.9, smooth=0.0, per_image=True)
    p, t, m = prob_target_mask("multiclass", x, y)
    I, P, T, _ = counts(p, t, m, per_image=True)
    per = 1 - I / (I + 0.2 * (P - I) + 0.9 * (T - I))  # (N, C); absent class: I = T = 0 -> 1
    assert float(per[0, 3]) == pytest.approx(1.0)
    torch.testing.assert_close(ours, per.mean(), rtol=1e-6, atol=1e-6)
    kornia_way = torch.stack([per[0, :3].mean(), per[1].mean()]).mean()
    torch.testing.assert_close(peer, kornia_way, rtol=1e-6, atol=1e-6)
    assert float(ours - peer) > 1e-3


def test_focal_tversky_exponent_per_class_not_after_the_mean() -> None:
    """The paper: mean_c (1 - TI_c)^(1/gamma). smp's TverskyLoss(gamma) computes mean_c(1 - TI_c)^gamma."""
    x, y = make("multiclass", 2, c=3, seed=4)
    x[:, 1] += 4 * F.one_hot(y, 3).movedim(-1, 1)[:, 1]  # class 1 nearly right, the others not
    g = 4 / 3
    ours = focal_tversky_loss(x, y, mode="multiclass", gamma=g)
    p, t, m = prob_target_mask("multiclass", x, y)
    I, P, T, _ = counts(p, t, m, per_image=False)
    one_minus = 1 - (I + 1) / (I + 0.3 * (P - I) + 0.7 * (T - I) + 1)
    torch.testing.assert_close(ours, (one_minus ** (1 / g)).mean(), rtol=1e-6, atol=1e-6)
    after_mean = one_minus.mean() ** (1 / g)  # the MONAI-era / smp order, with the paper's exponent
    assert abs(float(ours - after_mean)) > 1e-3
    # binary: one class, so the two orders agree
    xb, yb = make("binary", 2, seed=4)
    pb, tb, mb = prob_target_mask("binary", xb, yb)
    I, P, T, _ = counts(pb, tb, mb, per_image=False)
    one_minus = 1 - (I + 1) / (I + 0.3 * (P - I) + 0.7 * (T - I) + 1)
    torch.testing.assert_close(focal_tversky_loss(xb, yb, gamma=g), one_minus.mean() ** (1 / g), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_generalized_dice_equals_monai(mode: str, per_image: bool) -> None:
    from monai.losses import GeneralizedDiceLoss

    x, y = make(mode, 2, c=4, seed=5)
    if mode == "multilabel":
        y[0, 2] = 0  # an absent channel: both give it the largest weight of the present classes
    if mode == "multiclass":
        y[y == 2] = 1  # class 2 absent everywhere
    # monai.losses.GeneralizedDiceLoss(w_type="square") with no smoothing: Sudre's loss exactly
    peer = GeneralizedDiceLoss(smooth_nr=0.0, smooth_dr=0.0, batch=not per_image, **monai_kw(mode))
    v_peer, g_peer = grad_of(lambda z: peer(z, monai_target(mode, y)), x)
    v, g = grad_of(lambda z: generalized_dice_loss(z, y, mode=mode, smooth=0.0, per_image=per_image), x)
    torch.testing.assert_close(v, v_peer, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_peer, rtol=1e-5, atol=1e-9)


def test_generalized_dice_absent_classes_differ_from_monai_and_from_weight_zero() -> None:
    from monai.losses import GeneralizedDiceLoss

    # binary, empty target, full prediction: MONAI's weights are all 0 and it returns 0
    x = torch.full((2, 1, 4, 4), 6.0, dtype=F64)
    y = torch.zeros_like(x)
    peer = GeneralizedDiceLoss(sigmoid=True, batch=True)(x, y)
    assert float(peer) == pytest.approx(0.0, abs=1e-6)
    ours = generalized_dice_loss(x, y)
    P = 32 * torch.sigmoid(torch.tensor(6.0, dtype=F64))
    torch.testing.assert_close(ours, 1 - 1 / (P + 1), rtol=1e-9, atol=1e-9)
    # multilabel: mass on an absent channel is penalised (weight = max), not ignored (weight 0)
    x, y = make("multilabel", 2, c=3, seed=6)
    y[:, 2] = 0
    low = generalized_dice_loss(x, y, mode="multilabel")
    x_fp = x.clone()
    x_fp[:, 2] += 3.0
    high = generalized_dice_loss(x_fp, y, mode="multilabel")
    assert float(high - low) > 1e-2
    p, t, m = prob_target_mask("multilabel", x_fp, y)
    I, P, T, _ = counts(p, t, m, per_image=False)
    w0 = torch.tensor([1 / float(T[0]) ** 2, 1 / float(T[1]) ** 2, 0.0], dtype=F64)  # the weight-0 rule
    zero_rule = 1 - (2 * (w0 * I).sum() + 1 * w0.sum()) / ((w0 * (P + T)).sum() + 1 * w0.sum())
    assert abs(float(high - zero_rule)) > 1e-2


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_log_cosh_dice_equals_log_cosh_of_monai_dice(mode: str, per_image: bool) -> None:
    from monai.losses import DiceLoss

    x, y = make(mode, 3, seed=7)
    # log(cosh(monai.losses.DiceLoss(smooth_nr=s, smooth_dr=s)))
    peer = DiceLoss(smooth_nr=1.0, smooth_dr=1.0, batch=not per_image, **monai_kw(mode))
    v_peer, g_peer = grad_of(lambda z: torch.log(torch.cosh(peer(z, monai_target(mode, y)))), x)
    v, g = grad_of(lambda z: log_cosh_dice_loss(z, y, mode=mode, per_image=per_image), x)
    torch.testing.assert_close(v, v_peer, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_peer, rtol=1e-6, atol=1e-9)


def test_combo_equals_monai_dice_ce_in_binary_and_differs_from_kaggle() -> None:
    from monai.losses import DiceCELoss

    x, y = make("binary", 2, seed=8)
    a = 0.3
    # beta = 0.5: the weighted CE is BCE / 2, so combo = a/2 BCE + (1 - a) Dice:
    # monai.losses.DiceCELoss(sigmoid=True, lambda_ce=a/2, lambda_dice=1-a, batch=True)
    peer = DiceCELoss(sigmoid=True, lambda_ce=a / 2, lambda_dice=1 - a, smooth_nr=1.0, smooth_dr=1.0, batch=True)
    v_peer, g_peer = grad_of(lambda z: peer(z, y), x)
    v, g = grad_of(lambda z: combo_loss(z, y, alpha=a, beta=0.5), x)
    torch.testing.assert_close(v, v_peer, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_peer, rtol=1e-6, atol=1e-9)
    # the widely copied Kaggle ComboLoss (ALPHA = our beta, CE_RATIO = our alpha) is another function
    p = torch.sigmoid(x).reshape(-1)
    t = y.reshape(-1)
    dice = (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    pc = p.clamp(1e-7, 1 - 1e-7)
    beta = 0.5
    out = -(beta * ((t * torch.log(pc)) + ((1 - beta) * (1.0 - t) * torch.log(1.0 - pc))))
    kaggle = a * out.mean() - (1 - a) * dice
    assert float(kaggle) < 0 < float(v)
    assert abs(float(v - kaggle - (1 - a))) > 1e-3  # not just the constant: its negatives weigh 0.25


def test_combo_multilabel_differs_from_monai_dice_ce() -> None:
    """MONAI's DiceCELoss(sigmoid=True) with C > 1 channels applies *softmax* cross-entropy."""
    from monai.losses import DiceCELoss, DiceLoss

    x, y = make("multilabel", 2, seed=9)
    peer = DiceCELoss(sigmoid=True, lambda_ce=0.25, lambda_dice=0.5, smooth_nr=1.0, smooth_dr=1.0, batch=True)(x, y)
    ours = combo_loss(x, y, mode="multilabel", alpha=0.5, beta=0.5)
    dice = DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, batch=True)(x, y)
    bce = F.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(ours, 0.25 * bce + 0.5 * dice, rtol=1e-6, atol=1e-6)
    softmax_ce = -(y * torch.log_softmax(x, 1)).sum(1).mean()
    torch.testing.assert_close(peer, 0.25 * softmax_ce + 0.5 * dice, rtol=1e-6, atol=1e-6)
    assert abs(float(peer - ours)) > 1e-3


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_mcc_equals_monai(mode: str, per_image: bool) -> None:
    from monai.losses import MCCLoss

    x, y = make(mode, 2, seed=10)
    # monai.losses.MCCLoss without smoothing is the plain soft MCC loss, our smooth = 0
    peer = MCCLoss(smooth_nr=0.0, smooth_dr=0.0, batch=not per_image, **monai_kw(mode))
    v_peer, g_peer = grad_of(lambda z: peer(z, monai_target(mode, y)), x)
    v, g = grad_of(lambda z: mcc_loss(z, y, mode=mode, smooth=0.0, per_image=per_image), x)
    torch.testing.assert_close(v, v_peer, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_peer, rtol=1e-6, atol=1e-9)


def test_mcc_empty_target_has_a_gradient_monai_has_none() -> None:
    from monai.losses import MCCLoss

    x = torch.full((1, 1, 4, 4), 1.0, dtype=F64)
    y = torch.zeros_like(x)
    v_peer, g_peer = grad_of(lambda z: MCCLoss(sigmoid=True, batch=True)(z, y), x)
    assert float(v_peer) == pytest.approx(1.0, abs=1e-6)
    assert float(g_peer.abs().max()) < 1e-12
    v, g = grad_of(lambda z: mcc_loss(z, y), x)
    n, P, s = 16.0, 16 * torch.sigmoid(torch.tensor(1.0, dtype=F64)), 1.0
    torch.testing.assert_close(v, 1 - torch.sqrt(s * (n - P + s) / ((P + s) * (n + s))), rtol=1e-9, atol=1e-9)
    assert bool((g > 0).all())  # descent lowers every logit: towards the empty prediction


# -- 3. gradcheck -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck(name: str, mode: str) -> None:
    x, y = make(mode, 2, n=2, c=3, seed=11)
    x = x[..., :3, :3].contiguous().requires_grad_(True)
    y = y[..., :3, :3].contiguous()
    kw = options(name, mode)
    assert torch.autograd.gradcheck(lambda z: FUNCS[name](z, y, mode=mode, **kw), (x,), eps=1e-6, atol=1e-5)


# -- 4. compiled == eager (one compiled composite of all six per mode, module-scoped) -------------------
@pytest.fixture(scope="module")
def compiled_runs() -> dict:
    """Per mode: (terms, per-term grads) of the compiled composite and of its eager twin."""
    spec = " + ".join(LOSSES)
    runs: dict = {}

    def run(mode: str) -> tuple:
        if mode not in runs:
            x, y = make(mode, 2, n=2, c=3, seed=12, dtype=torch.float32)
            out = []
            for compile_ in (True, False):
                crit = build_loss(spec, mode=mode, compile=compile_)
                grads = {}
                # one call per gradient: a compiled backward (donated buffers) cannot retain its graph
                for key in (*LOSSES, "total"):
                    xg = x.clone().requires_grad_(True)
                    total, terms = crit(xg, y, return_terms=True)
                    grads[key] = torch.autograd.grad(total if key == "total" else terms[key], xg)[0]
                out.append((total.detach(), {k: v.detach() for k, v in terms.items()}, grads, crit))
            runs[mode] = out
        return runs[mode]

    return {"run": run}


@pytest.mark.compile
@pytest.mark.parametrize("mode", MODES)
def test_compiled_equals_eager(compiled_runs: dict, mode: str) -> None:
    (tot_c, terms_c, grads_c, crit), (tot_e, terms_e, grads_e, _) = compiled_runs["run"](mode)
    assert crit.uses_compile(torch.device("cpu")), "the compiled composite fell back to eager"
    torch.testing.assert_close(tot_c, tot_e, rtol=1e-5, atol=1e-5)
    for name in LOSSES:
        torch.testing.assert_close(terms_c[name], terms_e[name], rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(grads_c["total"], grads_e["total"], rtol=1e-5, atol=1e-5)
    # and both equal the float64 formula of each term
    x, y = make(mode, 2, n=2, c=3, seed=12, dtype=torch.float32)
    for name in LOSSES:
        torch.testing.assert_close(terms_c[name].double(), ref_loss(name, mode, x, y), rtol=1e-5, atol=1e-5)


# -- 5. empty masks, batch of one, perfect prediction ----------------------------------------------------
def saturated(mode: str, t: Tensor, fg: float = 30.0) -> Tensor:
    """float32 logits that give (almost exactly) the one-hot / binary ``t`` (N, C, *S)."""
    return (fg * (2 * t - 1)).float() if mode != "multiclass" else (fg * t - fg / 2).float()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSES)
def test_both_empty_and_perfect_are_zero(name: str, mode: str) -> None:
    c = 1 if mode == "binary" else 3
    shape = (2, c, 6, 5)
    # both empty: no foreground anywhere (multiclass: everything background, predicted so)
    t = torch.zeros(shape)
    if mode == "multiclass":
        t[:, 0] = 1
    y = t.argmax(1) if mode == "multiclass" else t
    x = saturated(mode, t).requires_grad_(True)
    v = FUNCS[name](x, y, mode=mode)
    (g,) = torch.autograd.grad(v, x)
    v = v.detach()
    assert abs(float(v)) < 1e-6 and bool(torch.isfinite(g).all())
    # perfect prediction of a non-empty target
    x, yy = make(mode, 2, seed=13, dtype=torch.float32)
    _, tt, _ = prob_target_mask(mode, x, yy)
    xp = saturated(mode, tt).requires_grad_(True)
    v = FUNCS[name](xp, yy, mode=mode)
    (g,) = torch.autograd.grad(v, xp)
    v = v.detach()
    assert abs(float(v)) < 1e-6 and bool(torch.isfinite(g).all()), (name, mode, float(v))


@pytest.mark.parametrize("name", LOSSES)
def test_empty_target_full_prediction_documented_value(name: str) -> None:
    """Binary: target empty, every pixel predicted foreground (P = n = 60)."""
    y = torch.zeros(2, 1, 6, 5)
    x = torch.full_like(y, 30.0, requires_grad=True)
    v = FUNCS[name](x, y)
    (g,) = torch.autograd.grad(v, x)
    v = v.detach()
    assert bool(torch.isfinite(g).all())
    n = P = 60.0
    s = 1.0
    expected = {
        "tversky": 1 - s / (0.3 * P + s),
        "focal_tversky": (1 - s / (0.3 * P + s)) ** 0.75,
        "generalized_dice": 1 - s / (P + s),
        "log_cosh_dice": math.log(math.cosh(1 - s / (P + s))),
        "combo": 0.5 * 0.5 * (30 + math.log1p(math.exp(-30))) + 0.5 * (1 - s / (P + s)),
        "mcc": 1 - math.sqrt(s * (n - P + s) / ((P + s) * (n + s))),
    }[name]
    assert float(v) == pytest.approx(expected, rel=1e-5)
    assert float(v) > 0.4  # far from the 0 of a right answer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSES)
def test_empty_target_nonempty_prediction_and_batch_of_one_finite(name: str, mode: str) -> None:
    c = 1 if mode == "binary" else 3
    cases = []
    # empty foreground target, confident foreground prediction
    t = torch.zeros(1, c, 4, 4)
    if mode == "multiclass":
        t[:, 0] = 1
        x = torch.zeros(1, c, 4, 4)
        x[:, 1] = 30.0
        cases.append((x, t.argmax(1)))
    else:
        cases.append((torch.full((1, c, 4, 4), 30.0), t))
    # a batch of one single pixel, and a batch of one with everything ignored
    x1, y1 = make(mode, 2, n=1, seed=14, dtype=torch.float32)
    cases.append((x1[..., :1, :1].contiguous(), y1[..., :1, :1].contiguous()))
    for x, y in cases:
        x = x.clone().requires_grad_(True)
        v = FUNCS[name](x, y, mode=mode)
        (g,) = torch.autograd.grad(v, x)
        assert bool(torch.isfinite(v)) and bool(torch.isfinite(g).all()), (name, mode)
    y_ign = torch.full_like(y1, IGNORE)
    x = x1.clone().requires_grad_(True)
    v = FUNCS[name](x, y_ign, mode=mode, ignore_index=IGNORE)
    (g,) = torch.autograd.grad(v, x)
    assert bool(torch.isfinite(v)) and bool(torch.isfinite(g).all()), (name, mode, "all ignored")


def test_combo_multiclass_confident_wrong_logits_stay_finite() -> None:
    """log(1 - p_c) in log space: a gap of 200 between logits gives -200, not log(0)."""
    x = torch.zeros(1, 3, 2, 2)
    x[:, 1] = 200.0
    y = torch.zeros(1, 2, 2, dtype=torch.long)
    xg = x.clone().requires_grad_(True)
    v = combo_loss(xg, y, mode="multiclass", smooth=0.0, alpha=1.0, beta=0.5)
    (g,) = torch.autograd.grad(v, xg)
    # per class: c0: -0.5 log p0 = 0.5 * 200; c1: -0.5 log(1 - p1) = -0.5 log(p0 + p2) = 0.5 (200 - log 2);
    # c2: -0.5 log(1 - p2) = -0.5 log(p0 + p1) ~ 0
    assert float(v.detach()) == pytest.approx((100 + 0.5 * (200 - math.log(2))) / 3, rel=1e-6)
    assert bool(torch.isfinite(g).all())


# -- 6. parameter rules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "kw", "needle"),
    [
        ("tversky", {"alpha": -0.1}, "tversky: alpha must be >= 0"),
        ("tversky", {"alpha": 0.0, "beta": 0.0}, "alpha + beta must be > 0"),
        ("focal_tversky", {"gamma": 0.0}, "focal_tversky: gamma must be > 0"),
        ("generalized_dice", {"smooth": -1.0}, "generalized_dice: smooth must be >= 0"),
        ("combo", {"alpha": 1.5}, "combo: alpha must be <= 1"),
        ("combo", {"beta": -0.5}, "combo: beta must be >= 0"),
        ("mcc", {"smoth": 1.0}, "did you mean 'smooth'"),
        ("log_cosh_dice", {"smooth": float("nan")}, "log_cosh_dice: smooth must be finite"),
    ],
)
def test_bad_params(spec: str, kw: dict, needle: str) -> None:
    with pytest.raises(LossConfigError, match=needle.replace("+", r"\+")):
        build_loss(spec, mode="binary", **kw)


def test_class_weights_length_checked_at_call() -> None:
    from segloss_registry import InputError

    crit = build_loss("tversky + mcc", mode="multilabel", class_weights=[1.0, 2.0], compile=False)
    x, y = make("multilabel", 2, c=3)
    with pytest.raises(InputError, match="class_weights has 2 entries"):
        crit(x, y)


def test_tversky_special_cases_are_dice_and_iou() -> None:
    """alpha = beta = 1/2: Dice with smoothing 2s; alpha = beta = 1: IoU (the project's dice and iou)."""
    from segloss_dice import dice_loss
    from segloss_iou import iou_loss

    x, y = make("multiclass", 2, seed=15)
    torch.testing.assert_close(tversky_loss(x, y, mode="multiclass", alpha=0.5, beta=0.5, smooth=1.0),
                               dice_loss(x, y, mode="multiclass", smooth=2.0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(tversky_loss(x, y, mode="multiclass", alpha=1.0, beta=1.0, smooth=1.0),
                               iou_loss(x, y, mode="multiclass", smooth=1.0), rtol=1e-9, atol=1e-12)
