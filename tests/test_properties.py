"""Property tests (hypothesis) over shapes, modes and parameters of every registered loss."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segloss_registry as sr
from segloss_registry import build_loss

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    LOSSES = {info.name: info for info in sr.list_losses() if info.recipe is None}

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOUNDED = [n for n in ("dice", "iou", "tversky") if n in LOSSES]
# losses whose minimum is the perfect prediction (active_contour's length term and boundary's
# extended-boundary matching are regularisers whose minimum need not be the target itself)
MIN_AT_PERFECT = [n for n in ("dice", "iou", "tversky", "bce", "ce", "focal", "generalized_dice", "mcc",
                              "log_cosh_dice", "focal_tversky", "lovasz") if n in LOSSES]
# parameters that make a loss treat every class alike (focal's alpha weighs background 1 - alpha; the default
# weighting of wasserstein_dice and the asymmetry of unified_focal single out class 0 too)
SYMMETRIC = {"focal": {"alpha": None}, "wasserstein_dice": {"weighting_mode": "GDL"},
             "unified_focal": {"gamma": 0.0, "delta": 0.5}}


@st.composite
def problems(draw: st.DrawFn, name: str, mode: str | None = None) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A mode the loss supports, logits (N, C, *S) and a hard target, from a drawn seed and shape."""
    info = LOSSES[name]
    mode = mode or draw(st.sampled_from(info.modes))
    ndim = draw(st.sampled_from(info.dims))
    n = draw(st.integers(1, 3))
    C = 1 if mode == "binary" else draw(st.integers(2, 4))
    lo = 3 if name == "active_contour" else 1
    spatial = tuple(draw(st.integers(lo, 7 if ndim < 3 else 4)) for _ in range(ndim))
    scale = draw(st.sampled_from([1e-3, 1.0, 5.0, 50.0, 1e4]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn((n, C, *spatial), generator=g) * scale
    if mode == "multiclass":
        t = torch.randint(0, C, (n, *spatial), generator=g)
    else:
        t = (torch.rand((n, C, *spatial), generator=g) > draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))).float()
    return mode, x, t


def one_hot(mode: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.one_hot(t, x.shape[1]).movedim(-1, 1).float() if mode == "multiclass" else t


@pytest.mark.parametrize("name", BOUNDED)
@SETTINGS
@given(data=st.data(), smooth=st.sampled_from([0.0, 1e-5, 1.0, 10.0]), per_image=st.booleans())
def test_region_losses_lie_in_unit_interval(name: str, data: st.DataObject, smooth: float, per_image: bool) -> None:
    mode, x, t = data.draw(problems(name))
    out = build_loss(name, mode=mode, smooth=smooth, per_image=per_image)(x, t)
    assert -1e-6 <= float(out) <= 1 + 1e-6


@pytest.mark.parametrize("name", MIN_AT_PERFECT)
@SETTINGS
@given(data=st.data())
def test_perfect_prediction_is_the_minimum(name: str, data: st.DataObject) -> None:
    mode, x, t = data.draw(problems(name))
    if mode not in LOSSES[name].modes:
        return
    crit = build_loss(name, mode=mode)
    perfect = (2 * one_hot(mode, x, t) - 1) * 30.0
    best = float(crit(perfect, t))
    assert best <= float(crit(x, t)) + 1e-5
    assert best <= float(crit(perfect + torch.randn_like(perfect), t)) + 1e-5
    assert best <= float(crit(torch.zeros_like(x), t)) + 1e-5


@pytest.mark.parametrize("name", sorted(LOSSES))
@SETTINGS
@given(data=st.data())
def test_finite_value_and_gradient(name: str, data: st.DataObject) -> None:
    mode, x, t = data.draw(problems(name))
    x = x.requires_grad_(True)
    out = build_loss(name, mode=mode)(x, t)
    (g,) = torch.autograd.grad(out, x)
    assert torch.isfinite(out) and torch.isfinite(g).all()


MULTICLASS = sorted(n for n, info in LOSSES.items() if "multiclass" in info.modes)


@pytest.mark.parametrize("name", MULTICLASS)
@SETTINGS
@given(data=st.data())
def test_swapping_classes_consistently_changes_nothing(name: str, data: st.DataObject) -> None:
    _, x, t = data.draw(problems(name, "multiclass"))
    perm = torch.tensor(data.draw(st.permutations(range(x.shape[1]))))
    # class c becomes class perm[c], in the logits and in the target
    x2 = torch.empty_like(x)
    x2[:, perm] = x
    t2 = perm[t]
    crit = build_loss(name, mode="multiclass", **SYMMETRIC.get(name, {}))
    torch.testing.assert_close(crit(x2, t2), crit(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
@SETTINGS
@given(data=st.data())
def test_invariant_to_batch_order(name: str, data: st.DataObject) -> None:
    mode, x, t = data.draw(problems(name))
    perm = torch.tensor(data.draw(st.permutations(range(x.shape[0]))))
    for per_image in (False, True) if "per_image" in LOSSES[name].params.model_fields else (None,):
        kw = {} if per_image is None else {"per_image": per_image}
        crit = build_loss(name, mode=mode, **kw)
        torch.testing.assert_close(crit(x[perm], t[perm]), crit(x, t), rtol=1e-5, atol=1e-6)
