"""Deep supervision: criterion([logits_full, logits_half, ...], target, level_weights=...)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from segloss_registry import CompileWarning, InputError, LossConfigError, build_loss
from segloss_registry._deep_supervision import default_level_weights, resize_nearest


def close(a: torch.Tensor | float, b: torch.Tensor | float, tol: float = 1e-6) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=tol, atol=tol)


def _interp(target: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The independent resize: F.interpolate nearest-exact on a float64 copy with a channel axis."""
    t = target.to(torch.float64)
    squeeze = t.dim() == len(size) + 1
    if squeeze:
        t = t.unsqueeze(1)
    out = F.interpolate(t, size=size, mode="nearest-exact")
    return (out.squeeze(1) if squeeze else out).to(target.dtype)


@pytest.mark.parametrize("size_in,size_out", [((16, 16), (8, 8)), ((15, 17), (4, 9)), ((8, 9, 10), (3, 9, 5)),
                                              ((7, 7), (7, 7)), ((12,), (5,))])
def test_resize_nearest_equals_interpolate_and_keeps_dtype(size_in: tuple[int, ...], size_out: tuple[int, ...]) -> None:
    ids = torch.randint(0, 300, (2, *size_in))
    got = resize_nearest(ids, size_out)
    assert got.dtype == torch.int64
    assert torch.equal(got, _interp(ids, size_out))
    b = torch.rand(2, 1, *size_in) > 0.5
    gb = resize_nearest(b, size_out)
    assert gb.dtype == torch.bool and torch.equal(gb, _interp(b, size_out))
    f = torch.rand(2, 3, *size_in)
    assert torch.equal(resize_nearest(f, size_out), F.interpolate(f, size=size_out, mode="nearest-exact"))


def test_default_weights_halve_and_sum_to_one() -> None:
    assert default_level_weights(1) == [1.0]
    close(torch.tensor(default_level_weights(3)), torch.tensor([4 / 7, 2 / 7, 1 / 7]))


def _levels(C: int, n: int = 3, size: int = 16, batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, C, size >> i, size >> i, dtype=torch.float64) for i in range(n)]


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_deep_supervision_is_the_weighted_sum_of_levels(mode: str) -> None:
    C = 1 if mode == "binary" else 3
    levels = _levels(C)
    if mode == "multiclass":
        target = torch.randint(0, C, (2, 16, 16))
        target[:, :3] = 255  # ignore_index survives the resize
        crit = build_loss("ce + dice + lovasz", mode=mode, ignore_index=255, compile=False)
    else:
        target = (torch.rand(2, C, 16, 16) > 0.5).double()
        crit = build_loss("bce + dice + cldice", mode=mode, compile=False)
    w = [4 / 7, 2 / 7, 1 / 7]
    per_level = [crit(x, _interp(target, tuple(x.shape[2:])), return_terms=True) for x in levels]
    total, terms = crit(levels, target, return_terms=True)
    close(total, sum(wl * v for wl, (v, _) in zip(w, per_level)))
    for k in crit.keys:
        want = sum(wl * t[k] for wl, (_, t) in zip(w, per_level))
        close(terms[k], want)
        close(crit.last_terms[k], want)
    # explicit weights follow the same rule as the default: normalised to sum 1
    close(crit(levels, target, level_weights=[1.0, 0.5, 0.0]),
          (per_level[0][0] + 0.5 * per_level[1][0]) / 1.5)
    close(crit(levels, target, level_weights=[4.0, 2.0, 1.0]), total)  # the default, written out


def test_binary_targets_without_channel_and_bool() -> None:
    levels = [torch.randn(2, 12, 12, dtype=torch.float64), torch.randn(2, 6, 6, dtype=torch.float64)]
    target = torch.rand(2, 12, 12) > 0.5
    crit = build_loss("bce + dice", compile=False)
    want = 2 / 3 * crit(levels[0], target.double()) + 1 / 3 * crit(levels[1], _interp(target, (6, 6)).double())
    close(crit(levels, target), want)  # a bool target, resized as bool
    close(crit(levels, target.double()), want)


def test_equals_monai_deep_supervision_loss() -> None:
    """monai.losses.DeepSupervisionLoss(weight_mode='exp'): weights 1, 0.5, 0.25 (not normalised), nearest-exact."""
    losses = pytest.importorskip("monai.losses")
    levels = _levels(1)
    target = (torch.rand(2, 1, 16, 16) > 0.5).double()
    monai_dice = losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    peer = losses.DeepSupervisionLoss(monai_dice, weight_mode="exp")([x.clone() for x in levels], target)
    crit = build_loss("dice", compile=False)
    # ours normalises every set of level weights to sum 1; MONAI's does not
    close(crit(levels, target, level_weights=[1.0, 0.5, 0.25]), peer / 1.75, tol=1e-5)  # MONAI casts to float32
    close(crit(levels, target), peer / 1.75, tol=1e-5)


def test_gradients_reach_every_level() -> None:
    levels = [x.requires_grad_(True) for x in _levels(3)]
    target = torch.randint(0, 3, (2, 16, 16))
    build_loss("ce + lovasz", mode="multiclass", compile=False)(levels, target).backward()
    assert all(x.grad is not None and float(x.grad.abs().sum()) > 0 for x in levels)


def test_errors_name_the_level_and_the_fix() -> None:
    crit = build_loss("dice", mode="multiclass", compile=False)
    target = torch.randint(0, 3, (2, 16, 16))
    with pytest.raises(InputError, match=r"level 1: logits .* have batch 3 but target .* has batch 2"):
        crit([torch.randn(2, 3, 16, 16), torch.randn(3, 3, 8, 8)], target)
    with pytest.raises(InputError, match=r"level 1: logits spatial size \(32, 32\) is larger than the target's"):
        crit([torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32)], target)
    with pytest.raises(InputError, match=r"level 1: logits .* have 3D spatial axes but level 0 .* has 2D"):
        crit([torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8, 8)], target)
    with pytest.raises(InputError, match="empty list of logits"):
        crit([], target)
    with pytest.raises(InputError, match="level 1 is ndarray"):
        crit([torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8).numpy()], target)
    with pytest.raises(LossConfigError, match="2 level_weights for 3 levels"):
        crit(_levels(3), target, level_weights=[1.0, 0.5])
    with pytest.raises(LossConfigError, match="finite and >= 0"):
        crit(_levels(3), target, level_weights=[1.0, -0.5, 0.1])
    with pytest.raises(LossConfigError, match="all 0"):
        crit(_levels(3), target, level_weights=[0.0, 0.0, 0.0])
    with pytest.raises(InputError, match="level_weights applies to a list of logits"):
        crit(torch.randn(2, 3, 16, 16), target, level_weights=[1.0])
    with pytest.raises(InputError, match="does not fit logits"):  # each level still goes through check_inputs
        crit([torch.randn(2, 3, 16, 16), torch.randn(2, 4, 8, 8)], F.one_hot(target, 3).movedim(-1, 1).float())


@pytest.mark.compile
def test_compiled_deep_supervision_equals_eager() -> None:
    levels = [torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    compiled = build_loss("bce + dice", compile=True)
    eager = build_loss("bce + dice", compile=False)
    xc = [x.clone().requires_grad_(True) for x in levels]
    xe = [x.clone().requires_grad_(True) for x in levels]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        vc, tc = compiled(xc, target, return_terms=True)
    ve, te = eager(xe, target, return_terms=True)
    assert not compiled._compile_failed
    close(vc, ve, tol=1e-5)
    for k in te:
        close(tc[k], te[k], tol=1e-5)
    vc.backward()
    ve.backward()
    for a, b in zip(xc, xe):
        close(a.grad, b.grad, tol=1e-5)


def test_level_weights_set_at_build_time_are_the_default_and_round_trip():
    from segloss_registry import LossConfigError, build_loss

    g = torch.Generator().manual_seed(11)
    levels = [torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 8, 8, generator=g)]
    target = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    crit = build_loss("bce+dice", level_weights=[1.0, 0.25], compile=False)
    single = build_loss("bce+dice", compile=False)
    half = target[:, :, 1::2, 1::2]  # nearest-exact: source pixel floor((i + 0.5) * 2) = 2i + 1
    want = (single(levels[0], target) + 0.25 * single(levels[1], half)) / 1.25  # normalised to sum 1
    torch.testing.assert_close(crit(levels, target), want)
    torch.testing.assert_close(crit(levels, target, level_weights=[1.0, 0.0]), single(levels[0], target))
    again = build_loss(crit.config())
    assert again.level_weights == (1.0, 0.25) and again.config() == crit.config()
    with pytest.raises(LossConfigError, match="level_weights must be finite and >= 0"):
        build_loss("dice", level_weights=[1.0, -1.0])
    with pytest.raises(LossConfigError, match="2 level_weights for 3 levels"):
        crit([levels[0], levels[1], levels[1][:, :, ::2, ::2]], target)
