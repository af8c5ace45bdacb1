"""surface (kervadec), hausdorff_dt, log_hausdorff_dt: the distance-map losses.

Each equals MONAI's BoundaryLoss / HausdorffDTLoss / LogHausdorffDTLoss (scipy distance maps
on the host) in every mode MONAI supports, 2D and 3D, and a formula written out here with
scipy's distance transform (for what MONAI lacks: spacing, class weights, ignore_index).
Then gradcheck, empty masks, the parameter rules, the shared distance maps, the conformance
kit (tests/test_conformance.py), and one compiled (fullgraph) composite against its eager twin.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segloss_hausdorff_dt import hausdorff_dt_loss, log_hausdorff_dt_loss
from segloss_surface import surface_loss
from torch import Tensor

from segloss_registry import CompileWarning, InputError, LossConfigError, build_loss
from segloss_registry.ops import _distance
from segloss_registry.testing import conformance_cases

ndimage = pytest.importorskip("scipy.ndimage")

F64 = torch.float64
IGNORE = 255
MODES = ("binary", "multiclass", "multilabel")
FUNCS = {"surface": surface_loss, "hausdorff_dt": hausdorff_dt_loss, "log_hausdorff_dt": log_hausdorff_dt_loss}


def make(mode: str, dim: int, n: int = 2, c: int = 3, seed: int = 0, ignore: bool = False) -> tuple[Tensor, Tensor]:
    """float64 logits (N, C, *S) and a target in the mode's layout, with blobs so that distances vary."""
    g = torch.Generator().manual_seed(seed)
    shape = (14, 17) if dim == 2 else (6, 9, 10)
    c = 1 if mode == "binary" else c
    x = 2 * torch.randn(n, c, *shape, generator=g, dtype=F64)
    smooth = F.avg_pool2d if dim == 2 else F.avg_pool3d
    noise = smooth(torch.rand(n, c, *shape, generator=g, dtype=F64), 3, 1, 1)
    if mode == "multiclass":
        y = noise.argmax(1)
        if ignore:
            y = torch.where(torch.rand(y.shape, generator=g) < 0.15, torch.full_like(y, IGNORE), y)
    else:
        y = (noise > 0.55).to(F64)
        if ignore:
            y = torch.where(torch.rand(y.shape, generator=g) < 0.15, torch.full_like(y, float(IGNORE)), y)
    return x, y


def prob_target_valid(mode: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """float64 probabilities, 0/1 target (0 where ignored) and bool valid mask, all (N, C, *S)."""
    c = x.shape[1]
    if mode == "multiclass":
        p = torch.softmax(x, 1)
        valid = (y != IGNORE).unsqueeze(1).expand_as(p)
        t = F.one_hot(torch.where(y == IGNORE, 0, y), c).movedim(-1, 1).to(F64)
    else:
        p = torch.sigmoid(x)
        valid = y != IGNORE
        t = torch.where(valid, y, 0.0)
    return p, t * valid, valid


# -- the reference: Kervadec's and Karimi's maps with scipy, one (sample, class) at a time ----------
def edt_to(mask: np.ndarray, sampling) -> np.ndarray:
    """Distance to the nearest True element (scipy measures to the nearest zero); 0 if there is none."""
    if not mask.any():
        return np.zeros(mask.shape)
    return ndimage.distance_transform_edt(~mask, sampling=sampling)


def ref_maps(t: np.ndarray, valid: np.ndarray, sampling=None) -> tuple[np.ndarray, np.ndarray]:
    """(signed map, distance field) of one (sample, class): ignored elements are neither fg nor bg."""
    fg, bg = (t > 0.5) & valid, (t <= 0.5) & valid
    to_fg, to_bg = edt_to(fg, sampling), edt_to(bg, sampling)
    signed = np.where(fg, np.where(bg.any(), 1 - to_bg, 0.0), np.where(bg, to_fg, 0.0))
    field = np.where(fg, to_bg, np.where(bg, to_fg, 0.0))
    return signed, field


def class_avg(per_class: Tensor, weights=None, drop_bg: bool = False) -> Tensor:
    if drop_bg:
        per_class = per_class[:, 1:]
        weights = weights[1:] if weights is not None else None
    if weights is None:
        return per_class.mean(1).mean()
    w = torch.tensor(weights, dtype=F64)
    return ((per_class * w).sum(1) / w.sum()).mean()


def ref_loss(name: str, mode: str, x: Tensor, y: Tensor, alpha: float = 2.0, spacing=None,
             class_weights=None, include_background: bool = True) -> Tensor:
    p, t, valid = prob_target_valid(mode, x.detach(), y)
    pred = (p > 0.5).numpy()
    per = torch.zeros(p.shape[:2], dtype=F64)
    for i in range(p.shape[0]):
        for c in range(p.shape[1]):
            v = valid[i, c].numpy()
            signed, field_t = ref_maps(t[i, c].numpy(), v, spacing)
            _, field_p = ref_maps(pred[i, c].astype(float), v, spacing)
            if name == "surface":
                elem = p[i, c] * torch.from_numpy(signed)
            else:
                elem = (p[i, c] - t[i, c]) ** 2 * torch.from_numpy(field_p**alpha + field_t**alpha)
            count = v.sum()
            per[i, c] = (elem * torch.from_numpy(v)).sum() / count if count else 0.0
    out = class_avg(per, class_weights, not include_background)
    return torch.log1p(out) if name == "log_hausdorff_dt" else out


# -- 1. equal to MONAI in every mode it supports, 2D and 3D -------------------------------------------
def monai_module(name: str, mode: str, include_background: bool = True):
    losses = pytest.importorskip("monai.losses")
    act = {"softmax": True, "to_onehot_y": True} if mode == "multiclass" else {"sigmoid": True}
    cls = {"surface": losses.BoundaryLoss, "hausdorff_dt": losses.HausdorffDTLoss,
           "log_hausdorff_dt": losses.LogHausdorffDTLoss}[name]
    return cls(include_background=include_background, **act)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FUNCS))
def test_equals_monai(name: str, mode: str, dim: int) -> None:
    x, y = make(mode, dim, seed=dim)
    peer_target = y.unsqueeze(1) if mode == "multiclass" else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about single-channel options in binary mode
        want = monai_module(name, mode)(x, peer_target)
        got = FUNCS[name](x, y, mode=mode)
        torch.testing.assert_close(got, want.to(F64), rtol=1e-6, atol=1e-6)
        if mode == "multiclass":  # MONAI's HausdorffDTLoss default: no background class
            got = FUNCS[name](x, y, mode=mode, include_background=False)
            want = monai_module(name, mode, include_background=False)(x, peer_target)
            torch.testing.assert_close(got, want.to(F64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, ref_loss(name, mode, x, y, include_background=mode != "multiclass"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_class_weights_are_monais_per_class_values_weighted(mode: str) -> None:
    x, y = make(mode, 2, seed=4)
    w = [0.2, 1.0, 2.5]
    peer_target = y.unsqueeze(1) if mode == "multiclass" else y
    losses = pytest.importorskip("monai.losses")
    act = {"softmax": True, "to_onehot_y": True} if mode == "multiclass" else {"sigmoid": True}
    for name, cls in (("surface", losses.BoundaryLoss), ("hausdorff_dt", losses.HausdorffDTLoss)):
        per = cls(include_background=True, reduction="none", **act)(x, peer_target).reshape(2, 3)
        want = ((per * torch.tensor(w, dtype=F64)).sum(1) / sum(w)).mean()
        torch.testing.assert_close(FUNCS[name](x, y, mode=mode, class_weights=w), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("name", list(FUNCS))
def test_spacing_and_alpha_equal_the_formula(name: str, dim: int) -> None:
    x, y = make("multilabel", dim, seed=5)
    spacing = [0.5, 2.0] if dim == 2 else [2.5, 0.8, 1.2]
    kw = {"spacing": spacing} if name == "surface" else {"spacing": spacing, "alpha": 1.5}
    got = FUNCS[name](x, y, mode="multilabel", **kw)
    torch.testing.assert_close(got, ref_loss(name, "multilabel", x, y, **kw), rtol=1e-6, atol=1e-6)


# -- 2. ignore_index: ignored pixels are neither foreground nor background, and count nowhere ---------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FUNCS))
def test_ignore_index_equals_the_formula(name: str, mode: str) -> None:
    x, y = make(mode, 2, seed=6, ignore=True)
    got = FUNCS[name](x, y, mode=mode, ignore_index=IGNORE)
    torch.testing.assert_close(got, ref_loss(name, mode, x, y), rtol=1e-6, atol=1e-6)
    # the logits at ignored pixels change nothing, not even the thresholded prediction's field
    valid = prob_target_valid(mode, x, y)[2]
    x2 = torch.where(valid, x, torch.full_like(x, 9.0))
    torch.testing.assert_close(FUNCS[name](x2, y, mode=mode, ignore_index=IGNORE), got, rtol=1e-9, atol=1e-9)


def test_an_ignored_hole_is_not_background() -> None:
    # a 9x9 square with its 3x3 centre ignored: the inside distances run to the real background,
    # as for the filled square; counting the hole as background would pull them towards it
    y = torch.zeros(1, 1, 15, 15, dtype=F64)
    y[..., 3:12, 3:12] = 1
    holed = y.clone()
    holed[..., 6:9, 6:9] = IGNORE
    x = torch.zeros_like(y)
    x[..., 6:9, 6:9] = -5.0  # the logits at the hole must not matter
    p = torch.sigmoid(x)
    sd_full = torch.from_numpy(ref_maps(y[0, 0].numpy(), np.ones((15, 15), bool))[0])
    want = (p[0, 0] * sd_full)[~((torch.arange(15)[:, None] - 7).abs().le(1) & (torch.arange(15) - 7).abs().le(1))]
    got = surface_loss(x, holed, ignore_index=IGNORE)
    torch.testing.assert_close(got, want.mean(), rtol=1e-6, atol=1e-9)  # float32 maps
    assert float(sd_full[5, 5]) == -2.0  # two pixels deep: not next to the hole


# -- 3. gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FUNCS))
def test_gradcheck(name: str, mode: str) -> None:
    x, y = make(mode, 2, n=1, c=2, seed=8)
    x = x[..., :6, :7].contiguous().requires_grad_(True)
    y = y[..., :6, :7].contiguous()
    kw = {"class_weights": [0.3, 1.0]} if mode != "binary" else {}
    assert torch.autograd.gradcheck(lambda z: FUNCS[name](z, y, mode=mode, **kw), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_the_distance_maps_carry_no_gradient() -> None:
    # d(surface)/dx = sigmoid'(x) * phi: the map is a constant of the target
    x, y = make("binary", 2, seed=9)
    x.requires_grad_(True)
    surface_loss(x, y).backward()
    p = torch.sigmoid(x.detach())
    signed = torch.from_numpy(np.stack([ref_maps(y[i, 0].numpy(), np.ones(y.shape[2:], bool))[0]
                                        for i in range(2)])).unsqueeze(1)
    torch.testing.assert_close(x.grad, p * (1 - p) * signed / y[0, 0].numel() / 2, rtol=1e-9, atol=1e-12)


# -- 4. empty and full masks, one pixel, a batch of one ------------------------------------------------
def test_empty_and_full_targets() -> None:
    x = 3 * torch.randn(1, 1, 12, 12, dtype=F64)
    empty, full = torch.zeros(1, 1, 12, 12, dtype=F64), torch.ones(1, 1, 12, 12, dtype=F64)
    assert surface_loss(x, empty).item() == 0.0  # no boundary: 0 whatever the prediction
    assert surface_loss(x, full).item() == 0.0
    neg = torch.full_like(x, -20.0)  # prediction empty too
    assert hausdorff_dt_loss(neg, empty).item() == pytest.approx(0.0, abs=1e-15)
    assert log_hausdorff_dt_loss(neg, empty).item() == pytest.approx(0.0, abs=1e-15)
    # an empty target and a prediction with false positives: mean(p^2 d_p^2) > 0
    blob = neg.clone()
    blob[..., 2:5, 2:5] = 20.0
    p = torch.sigmoid(blob)
    field_p = torch.from_numpy(ref_maps((p[0, 0] > 0.5).double().numpy(), np.ones((12, 12), bool))[1])
    torch.testing.assert_close(hausdorff_dt_loss(blob, empty), (p[0, 0] ** 2 * field_p**2).mean(), rtol=1e-9, atol=0)
    assert hausdorff_dt_loss(blob, empty).item() == pytest.approx((8 * 1 + 4) / 144, rel=1e-6)  # 3x3 blob: d_p = 1, 2 (centre)
    # a prediction equal to a hard target: 0
    t = torch.zeros_like(x)
    t[..., 3:8, 4:9] = 1
    perfect = torch.where(t > 0, 40.0, -40.0)
    assert hausdorff_dt_loss(perfect, t).item() == pytest.approx(0.0, abs=1e-12)
    for name, fn in FUNCS.items():
        for target in (empty, full, t):
            for logits in (x, neg, perfect):
                assert torch.isfinite(fn(logits, target)), name


def test_one_pixel_and_a_batch_of_one_are_finite() -> None:
    for name in FUNCS:
        crit = build_loss(name, mode="multiclass", compile=False)
        for shape in ((1, 3, 1, 1), (1, 3, 1, 5), (1, 3, 1, 1, 1)):
            x = torch.randn(shape, requires_grad=True)
            ids = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
            v = crit(x, ids)
            v.backward()
            assert torch.isfinite(v) and torch.isfinite(x.grad).all(), (name, shape)


def test_a_perfect_surface_prediction_is_its_minimum() -> None:
    x, y = make("binary", 2, seed=10)
    perfect = torch.where(y > 0, 30.0, -30.0)
    best = surface_loss(perfect, y)
    assert best.item() < 0  # signed: the negative inside sums up
    assert best < surface_loss(x, y) and best < surface_loss(-perfect, y)


# -- 5. parameters ------------------------------------------------------------------------------------
def test_parameter_rules_are_one_line_errors() -> None:
    with pytest.raises(LossConfigError, match="hausdorff_dt: alpha must be >= 0"):
        build_loss("hausdorff_dt(alpha=-1)")
    with pytest.raises(LossConfigError, match="include_background=False needs mode='multiclass'"):
        build_loss("surface", include_background=False)
    with pytest.raises(LossConfigError, match="class_weights needs mode='multiclass' or 'multilabel'"):
        build_loss("log_hausdorff_dt", class_weights=[1.0])
    with pytest.raises(LossConfigError, match="spacing must be finite and > 0"):
        build_loss("surface", spacing=[1.0, 0.0])
    with pytest.raises(LossConfigError, match="unknown parameter 'spacin'.*did you mean 'spacing'"):
        build_loss("kervadec(spacin=[1.0, 1.0])")
    crit = build_loss("surface", spacing=[1.0, 2.0], compile=False)
    with pytest.raises(InputError, match="surface: spacing has 2 entries but the logits .* have 3 spatial axes"):
        crit(torch.randn(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    crit = build_loss("hausdorff_dt", mode="multiclass", class_weights=[1.0, 2.0], compile=False)
    with pytest.raises(InputError, match="class_weights has 2 entries"):
        crit(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_kervadec_is_an_alias_and_configs_round_trip() -> None:
    crit = build_loss("dice + 0.01*kervadec(spacing=[1.0, 0.5]) + hausdorff_dt(alpha=1.0)", mode="multiclass")
    assert [t.info.name for t in crit.terms] == ["dice", "surface", "hausdorff_dt"]
    assert build_loss(crit.config()).config() == crit.config()


# -- 6. the distance maps are computed once per call and shared ----------------------------------------
def test_distance_maps_are_shared_between_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = _distance._squared

    def counting(mask: Tensor, sp: tuple[float, ...]) -> Tensor:
        calls.append(mask.shape[0])
        return real(mask, sp)

    monkeypatch.setattr(_distance, "_squared", counting)
    x, y = make("multiclass", 2, seed=11)
    crit = build_loss("dice + surface + hausdorff_dt + log_hausdorff_dt", mode="multiclass", compile=False)
    _, terms = crit(x, y, return_terms=True)
    # one transform of the target's 2 N C masks (fg and bg), one of the prediction's
    assert calls == [2 * 2 * 3, 2 * 2 * 3]
    torch.testing.assert_close(terms["surface"], surface_loss(x, y, mode="multiclass"))
    torch.testing.assert_close(terms["log_hausdorff_dt"], torch.log1p(terms["hausdorff_dt"]))
    calls.clear()
    build_loss("surface + 0.5*surface(spacing=[1.0, 2.0])", mode="multiclass", compile=False)(x, y)
    assert len(calls) == 2  # another spacing is another map


# -- 7. compiled == eager --------------------------------------------------------------------------------
# (the conformance kit, its compiled check included, runs for these three losses in
# tests/test_conformance.py, which is parametrised over every registered loss)
def test_the_kit_covers_the_three_losses() -> None:
    from segloss_registry import list_losses

    names = {info.name for info in list_losses()}
    assert set(FUNCS) <= names and "kervadec" in {a for info in list_losses() for a in info.aliases}
    cases = conformance_cases("surface")
    assert {c.values[0].check for c in cases} >= {"finite", "compiled", "ignore_index", "half"}


@pytest.mark.compile
def test_compiled_composite_equals_eager_3d() -> None:
    x, y = make("multiclass", 3, seed=12)
    x = x.float()
    spec = "0.5*surface + hausdorff_dt(include_background=False)"
    runs = []
    for compile_ in (True, False):
        crit = build_loss(spec, mode="multiclass", compile=compile_)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompileWarning)
            xi = x.clone().requires_grad_(True)
            total, terms = crit(xi, y, return_terms=True)
            total.backward()
        assert crit.uses_compile(x.device) is compile_
        runs.append((terms, xi.grad))
    (terms_c, grad_c), (terms_e, grad_e) = runs
    for k in terms_e:
        torch.testing.assert_close(terms_c[k], terms_e[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-5, atol=1e-8)
    want = monai_module("hausdorff_dt", "multiclass", include_background=False)(x.double(), y.unsqueeze(1))
    torch.testing.assert_close(terms_c["hausdorff_dt"].double(), want.double(), rtol=1e-5, atol=1e-6)
    # Kervadec's schedule: the weights move every epoch, the compiled graph stays
    from torch._dynamo.utils import counters

    compiled = build_loss(spec, mode="multiclass", compile=True)
    compiled(x, y)
    frames = counters["stats"]["unique_graphs"]
    for a in (0.01, 0.2, 0.5):
        compiled.set_weights({"surface": a, "hausdorff_dt": 1 - a})
        total = compiled(x, y)
        torch.testing.assert_close(total, a * terms_e["surface"] + (1 - a) * terms_e["hausdorff_dt"],
                                   rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == frames  # no recompile


@pytest.mark.parametrize("spec, mode", [("dice+surface", "binary"), ("hausdorff_dt", "multiclass"),
                                        ("log_hausdorff_dt(alpha=1.0)", "multilabel")])
def test_bench_peer_is_monais_loss_and_times_the_maps(spec: str, mode: str) -> None:
    pytest.importorskip("monai")
    from segloss_registry.bench import (
        BenchConfig,
        make_inputs,
        monai_peer,
        run_benchmark,
    )

    C = 1 if mode == "binary" else 3
    x, t = make_inputs(mode, (2, C, 12, 14), seed=3)
    ours = build_loss(spec, mode=mode, compile=False)
    peer = monai_peer(ours)
    assert not isinstance(peer, str), peer
    _, module, _ = peer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(module(x, t), ours(x, t), rtol=1e-5, atol=1e-6)  # it adapts the target
    report = run_benchmark(BenchConfig(spec, mode=mode, shape=(2, C, 12, 14), steps=2, warmup=0,
                                       compiled=False, progress=False))
    rows = {m.name: m for m in report.results}
    ours_maps = rows["segloss distance maps only (eager)"]
    assert ours_maps.times_ms and "% of 'segloss eager" in ours_maps.note
    assert "% of 'MONAI" in rows["MONAI distance maps only (scipy, eager)"].note
    assert isinstance(monai_peer(build_loss("surface", spacing=[1.0, 2.0])), str)  # MONAI has no spacing
