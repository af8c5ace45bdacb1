"""Call-time ``mask=`` for every loss, and term weights that change without a recompile."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_compile_predictability import compile_counts  # noqa: F401 - the fixture

from segloss_registry import InputError, LossConfigError, build_loss, list_losses
from segloss_registry.testing import make_inputs


def _params_for(name: str, C: int) -> dict[str, Any]:
    if name == "wasserstein_dice":
        return {"dist_matrix": [[0.0 if i == j else 1.0 for j in range(C)] for i in range(C)]}
    return {}


def _cases() -> list[Any]:
    out = []
    for info in list_losses():
        if info.recipe is not None:
            continue
        for mode in info.modes:
            dim = 2 if 2 in info.dims else info.dims[0]
            out.append(pytest.param(info.qualified_name, mode, dim, id=f"{info.name}-{mode}"))
    return out


def _build(name: str, mode: str, **kw: Any) -> Any:
    short = name.split(":")[1]
    p = _params_for(short, 3)
    return build_loss(name, mode=mode, compile=False, params={short: p} if p else None, **kw)


@pytest.mark.parametrize(("name", "mode", "dim"), _cases())
def test_a_bool_mask_is_ignore_index(name: str, mode: str, dim: int) -> None:
    """mask=False on a pixel gives exactly what ignore_index gives for it, value and gradient."""
    logits, target = make_inputs(mode, dim, seed=7)
    g = torch.Generator().manual_seed(8)
    spatial = logits.shape[2:]
    ignored = torch.rand((logits.shape[0], *spatial), generator=g) < 0.25
    marked = target.clone()
    if mode == "multiclass":
        marked[ignored] = 255
    else:
        marked = torch.where(ignored.unsqueeze(1).expand_as(target), torch.full_like(target, 255), target)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    want = _build(name, mode, ignore_index=255)(x1, marked)
    got = _build(name, mode)(x2, target, mask=~ignored)
    torch.testing.assert_close(got, want, msg=name)
    want.backward()
    got.backward()
    torch.testing.assert_close(x2.grad, x1.grad, msg=name)
    # masked-out pixels change neither the value nor the gradient
    x3 = logits.clone()
    x3[ignored.unsqueeze(1).expand_as(x3)] = 17.0
    x3.requires_grad_(True)
    again = _build(name, mode)(x3, target, mask=~ignored)
    torch.testing.assert_close(again, got, msg=name)


def test_float_weights_in_bce_and_dice_follow_the_weighted_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 1, 6, 6, generator=g) > 0.5).double()
    w = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64) * 2
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(build_loss("bce")(x, t, mask=w), (w * bce).sum() / w.sum())
    p = torch.sigmoid(x)
    dice = 1 - (2 * (w * p * t).sum() + 1) / ((w * p).sum() + (w * t).sum() + 1)
    torch.testing.assert_close(build_loss("dice")(x, t, mask=w), dice)
    # a mask of (N, *S) without the channel axis is the same
    torch.testing.assert_close(build_loss("dice")(x, t, mask=w[:, 0]), dice)


def test_per_channel_mask_in_multilabel() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 3, 5, 5, generator=g) > 0.5).double()
    m = torch.rand(2, 3, 5, 5, generator=g) > 0.3
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(build_loss("bce", mode="multilabel")(x, t, mask=m), bce[m].mean())


def test_bad_masks_are_input_errors() -> None:
    x, t = torch.randn(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    crit = build_loss("bce+dice")
    with pytest.raises(InputError, match=r"mask \(2, 4, 5\) does not fit logits"):
        crit(x, t, mask=torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="mask must be bool"):
        crit(x, t, mask=torch.ones(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(InputError, match="negative or non-finite"):
        crit(x, t, mask=-torch.ones(2, 1, 4, 4))
    with pytest.raises(InputError, match="does not fit"):  # per-class masks are for multilabel only
        build_loss("ce", mode="multiclass")(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4).long(),
                                            mask=torch.ones(2, 3, 4, 4))


def test_deep_supervision_resizes_the_mask() -> None:
    g = torch.Generator().manual_seed(3)
    levels = [torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 4, 4, generator=g)]
    t = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    m = torch.rand(2, 1, 8, 8, generator=g) > 0.5
    crit = build_loss("bce+dice")
    half = (slice(None), slice(None), slice(1, None, 2), slice(1, None, 2))
    want = (2 / 3) * crit(levels[0], t, mask=m) + (1 / 3) * crit(levels[1], t[half], mask=m[half])
    torch.testing.assert_close(crit(levels, t, mask=m), want)


# -- set_weights ----------------------------------------------------------------------------------------------
def test_set_weights_changes_the_sum_and_the_config() -> None:
    x, t = make_inputs("binary", 2, seed=3)
    crit = build_loss("bce+dice")
    _, terms = crit(x, t, return_terms=True)
    crit.set_weights({"dice": 0.25})
    torch.testing.assert_close(crit(x, t), terms["bce"] + 0.25 * terms["dice"])
    crit.set_weights([0.5, 2.0])
    torch.testing.assert_close(crit(x, t), 0.5 * terms["bce"] + 2.0 * terms["dice"])
    assert crit.weights == {"bce": 0.5, "dice": 2.0}
    assert build_loss(crit.config()).weights == {"bce": 0.5, "dice": 2.0}
    for bad, pattern in (({"dcie": 1.0}, "did you mean 'dice'"), ([1.0], "1 weights for 2 terms"),
                         ({"dice": -1.0}, "finite number >= 0"), ([0.0, 0.0], "all weights are 0"),
                         ({"dice": float("nan")}, "finite number")):
        with pytest.raises(LossConfigError, match=pattern):
            crit.set_weights(bad)
    crit.set_weights(torch.tensor([1.0, 1.0]))  # a tensor is a list
    assert crit.weights == {"bce": 1.0, "dice": 1.0}


def test_set_weights_between_forward_and_backward_keeps_the_graph() -> None:
    x, t = make_inputs("binary", 2, seed=4)
    x.requires_grad_(True)
    crit = build_loss("bce+dice")
    loss = crit(x, t)
    crit.set_weights({"dice": 3.0})
    loss.backward()  # the old weights are still those of this graph
    assert torch.isfinite(x.grad).all()


@pytest.mark.compile
def test_changing_weights_100_times_compiles_nothing_new(compile_counts: dict[str, Any]) -> None:  # noqa: F811
    x, t = make_inputs("binary", 2, seed=5)
    x.requires_grad_(True)
    crit = build_loss("dice+bce", compile=True)
    eager = build_loss("dice+bce", compile=False)
    _, terms = eager(x, t, return_terms=True)
    crit(x, t).backward()
    name = crit._compute.__name__
    frames = compile_counts[name].frame_count
    for i in range(100):
        a = 1.0 - i / 100
        crit.set_weights({"dice": a, "bce": 1.0 - a + 0.01})
        got = crit(x, t)
        if i % 33 == 0:
            torch.testing.assert_close(got, a * terms["dice"] + (1.0 - a + 0.01) * terms["bce"])
    got.backward()
    assert compile_counts[name].frame_count == frames == 1


def test_class_weights_that_leave_nothing_to_average_are_a_config_error() -> None:
    """include_background=False with weight only on class 0: the mean over classes would divide by 0."""
    from segloss_registry import LossConfigError, build_loss

    with pytest.raises(LossConfigError, match="class_weights"):
        build_loss("dice", mode="multiclass", include_background=False, class_weights=[1.0, 0.0, 0.0])
    build_loss("dice", mode="multiclass", include_background=False, class_weights=[1.0, 0.0, 2.0])  # fine


def test_lovasz_refuses_global_sync() -> None:
    """A silently local Lovasz under sync='global' would be a wrong number in DDP: refused at build time."""
    from segloss_registry import LossConfigError, build_loss

    with pytest.raises(LossConfigError, match="sync='global' is not available for lovasz"):
        build_loss("lovasz", sync="global")
