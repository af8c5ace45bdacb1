"""The input catalogue: bad inputs raise InputError naming the mode, the shapes or values and the fix;
odd-but-valid layouts and dtypes give exactly the value of the plain layout."""

from __future__ import annotations

import re

import pytest
import torch

import segloss_registry as sr
from segloss_registry import InputError, build_loss


def losses_for(mode: str, ndim: int = 2) -> list[str]:
    """Every registered loss (not recipe) that supports ``mode`` and ``ndim`` spatial axes."""
    return [i.name for i in sr.list_losses() if i.recipe is None and mode in i.modes and ndim in i.dims]


def all_of(mode: str, ndim: int = 2, **kw: object) -> sr.CompositeLoss:
    return build_loss("+".join(losses_for(mode, ndim)), mode=mode, compile=False, **kw)


def raises(fn, *patterns: str) -> str:
    """Call ``fn``; it must raise InputError (exactly), with every regex of ``patterns`` in the message."""
    with pytest.raises(InputError) as err:
        fn()
    assert type(err.value) is InputError
    msg = str(err.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    return msg


# -- shapes, ranks, channels ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_rank_too_low(mode: str) -> None:
    raises(lambda: all_of(mode)(torch.randn(4), torch.rand(4)), rf"^{mode}:", r"\(4,\)", r"e\.g\. \(N, C, H, W\)")


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_rank_without_spatial_axis(mode: str) -> None:
    raises(lambda: build_loss("dice", mode=mode)(torch.randn(2, 3), torch.zeros(2, 3)),
           rf"^{mode}:", r"\(2, 3\)", r"\(N, C, \*S\) with a spatial axis")


def test_rank_four_spatial_axes() -> None:
    x = torch.randn(2, 1, 2, 2, 2, 2)
    raises(lambda: build_loss("bce")(x, torch.rand_like(x)), "^binary:", r"4D spatial", r"\(2, 1, 2, 2, 2, 2\)",
           "use 1D, 2D or 3D")


def test_loss_that_does_not_support_the_rank() -> None:
    x = torch.randn(2, 1, 8)
    raises(lambda: build_loss("bce+active_contour")(x, torch.rand_like(x)),
           "^binary:", "active_contour supports 2D or 3D", r"got 1D \(logits \(2, 1, 8\)\)")


def test_binary_with_several_channels_and_ids() -> None:
    raises(lambda: build_loss("bce+dice")(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4)),
           "^binary:", r"target shape \(2, 4, 4\)", r"logits \(2, 3, 4, 4\)", "use mode='multiclass'")


def test_multiclass_with_one_channel() -> None:
    raises(lambda: build_loss("ce", mode="multiclass")(torch.randn(2, 1, 4, 4), torch.zeros(2, 4, 4).long()),
           "^multiclass:", r"C >= 2", r"\(2, 1, 4, 4\)", "use mode='binary'")


def test_multiclass_one_hot_with_wrong_channel_count() -> None:
    raises(lambda: build_loss("dice", mode="multiclass")(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, 4)),
           "^multiclass:", r"\(2, 4, 4, 4\)", r"\(2, 3, 4, 4\)", r"ids \(N, \*S\) = \(2, 4, 4\)")


def test_multiclass_integer_one_hot() -> None:
    raises(lambda: build_loss("dice", mode="multiclass")(torch.randn(2, 3, 4, 4), torch.zeros(2, 3, 4, 4).long()),
           "^multiclass:", "use target.float()")


def test_multiclass_float_ids_are_class_ids() -> None:
    """MONAI's loaders deliver labels as float (N, 1, *S): whole numbers are read as class ids."""
    x = torch.randn(2, 3, 4, 4)
    ids = torch.randint(0, 3, (2, 4, 4))
    crit = build_loss("ce+dice", mode="multiclass")
    want = crit(x, ids)
    torch.testing.assert_close(crit(x, ids.float()), want)
    torch.testing.assert_close(crit(x, ids.float().unsqueeze(1)), want)
    logp = torch.log_softmax(x, 1)
    ce = -logp.gather(1, ids.unsqueeze(1)).mean()
    torch.testing.assert_close(build_loss("ce", mode="multiclass")(x, ids.double().unsqueeze(1)), ce)
    half = ids.float().unsqueeze(1)
    half[0, 0, 1, 2] = 1.5
    raises(lambda: crit(x, half), "^multiclass:", r"float target \(2, 1, 4, 4\)", "not whole numbers",
           r"1\.5 at 1 of 32 elements, the first at index \(0, 0, 1, 2\)")
    raises(lambda: crit(x, torch.zeros(2, 5, 4)), "^multiclass:", r"float target \(2, 5, 4\) does not fit")


def test_multilabel_channel_mismatch() -> None:
    raises(lambda: build_loss("bce", mode="multilabel")(torch.randn(2, 3, 4, 4), torch.zeros(2, 2, 4, 4)),
           "^multilabel:", r"\(2, 2, 4, 4\)", r"\(2, 3, 4, 4\)", "use mode='multiclass'")


def test_class_weights_count_does_not_fit_channels() -> None:
    raises(lambda: build_loss("dice", mode="multiclass", class_weights=[1.0, 2.0])(
        torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4).long()), "^multiclass:", "class_weights has 2 entries", "C = 3")


# -- values ------------------------------------------------------------------------------------------
def test_multiclass_255_without_ignore_index() -> None:
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    t[0, 1, 1] = 255
    raises(lambda: build_loss("ce+dice", mode="multiclass")(torch.randn(2, 3, 4, 4), t),
           "^multiclass:", r"class ids \[255\] outside \[0, 3\)", "pass ignore_index=255")
    # the fix works and the ignored pixel leaves the loss: equal to the loss without that pixel
    ce = build_loss("ce", mode="multiclass", ignore_index=255)
    x = torch.randn(2, 3, 4, 4)
    keep = t != 255
    expected = torch.nn.functional.cross_entropy(x.permute(0, 2, 3, 1)[keep], t[keep])
    torch.testing.assert_close(ce(x, t), expected)


@pytest.mark.parametrize("bad", [3, 7, -1, -5])
def test_multiclass_ids_out_of_range(bad: int) -> None:
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    t[1, 2, 3] = bad
    raises(lambda: build_loss("ce", mode="multiclass")(torch.randn(2, 3, 4, 4), t),
           "^multiclass:", rf"class ids \[{bad}\] outside \[0, 3\)", r"logits \(2, 3, 4, 4\)", f"ignore_index={bad}")


def test_multiclass_several_bad_ids() -> None:
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    t[0, 0, 0], t[1, 1, 1] = 3, -2
    raises(lambda: build_loss("ce", mode="multiclass")(torch.randn(2, 3, 4, 4), t),
           r"class ids \[-2, 3\] outside \[0, 3\)", "one output channel per class", "map the labels into")


def test_multiclass_float_target_not_one_hot() -> None:
    t = torch.rand(2, 3, 4, 4)  # in [0, 1] but does not sum to 1
    raises(lambda: build_loss("ce", mode="multiclass")(torch.randn(2, 3, 4, 4), t),
           "^multiclass:", r"float target \(2, 3, 4, 4\) is not one-hot or soft", "normalise the target")


def test_multiclass_soft_target_is_accepted() -> None:
    x, t = torch.randn(2, 3, 4, 4), torch.softmax(torch.randn(2, 3, 4, 4), 1)
    expected = torch.nn.functional.cross_entropy(x, t)
    torch.testing.assert_close(build_loss("ce", mode="multiclass")(x, t), expected)


@pytest.mark.parametrize("value", [1.5, -0.25, 2.0])
def test_binary_target_outside_unit_interval(value: float) -> None:
    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, 0, 0] = value
    raises(lambda: build_loss("bce+dice")(torch.randn(2, 1, 4, 4), t),
           "^binary:", r"values outside \[0, 1\]", f"{value:g}", "ignore_index=")


def test_binary_integer_class_ids() -> None:
    raises(lambda: build_loss("dice")(torch.randn(2, 1, 4, 4), torch.full((2, 1, 4, 4), 2)),
           "^binary:", r"outside \[0, 1\]: 2 at 32 of 32 elements", "mode='multiclass'")


def test_target_nan() -> None:
    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, 1, 1] = float("nan")
    raises(lambda: build_loss("bce")(torch.randn(2, 1, 4, 4), t), "^binary:", "1 NaN values", "fix the data")


def test_probabilities_out_of_range_with_from_logits_false() -> None:
    raises(lambda: build_loss("dice", from_logits=False)(torch.randn(2, 1, 4, 4) * 3, torch.zeros(2, 1, 4, 4)),
           "^binary:", "from_logits=False", r"outside \[0, 1\]", "from_logits=True")
    raises(lambda: build_loss("dice", mode="multiclass", from_logits=False)(
        torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 4).long()), "^multiclass:", "softmax\\(dim=1\\)")


# -- dtypes, devices, grads, empty batches ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_non_float_logits(dtype: torch.dtype) -> None:
    x = (torch.randn(2, 1, 4, 4) > 0).to(dtype)
    raises(lambda: build_loss("bce")(x, torch.zeros(2, 1, 4, 4)),
           "^binary:", f"got {dtype}", r"\(2, 1, 4, 4\)", r"logits\.float\(\)")


def test_non_tensor_inputs() -> None:
    import numpy as np

    raises(lambda: build_loss("bce")(np.zeros((1, 1, 2, 2)), torch.zeros(1, 1, 2, 2)), "^binary:", "ndarray",
           "torch.as_tensor")


def test_logits_and_target_on_different_devices() -> None:
    # 'meta' is a second real device on a CPU-only machine
    x = torch.randn(2, 1, 4, 4, device="meta")
    raises(lambda: build_loss("bce+dice")(x, torch.zeros(2, 1, 4, 4)),
           "^binary:", "logits are on meta but target is on cpu", r"target\.to\(logits\.device\)")
    raises(lambda: build_loss("ce", mode="multiclass")(torch.randn(2, 3, 4), torch.zeros(2, 4, device="meta").long()),
           "^multiclass:", "logits are on cpu but target is on meta")


def test_meta_tensors_skip_value_checks() -> None:
    # meta tensors hold no data: the shape checks run, the value checks (which would sync) do not
    from segloss_registry._inputs import InputOptions, check_inputs

    x, t = torch.randn(2, 1, 4, 4, device="meta"), torch.zeros(2, 1, 4, 4, device="meta")
    assert check_inputs(x, t, InputOptions("binary"), values=True) == 2


def test_target_requires_grad() -> None:
    t = torch.rand(2, 1, 4, 4, requires_grad=True)
    raises(lambda: build_loss("bce")(torch.randn(2, 1, 4, 4), t), "^binary:", "target requires grad",
           r"\(2, 1, 4, 4\)", r"target\.detach\(\)")


@pytest.mark.parametrize("mode,shape,tshape", [("binary", (0, 1, 4, 4), (0, 1, 4, 4)),
                                               ("multiclass", (0, 3, 4, 4), (0, 4, 4))])
def test_empty_batch(mode: str, shape: tuple[int, ...], tshape: tuple[int, ...]) -> None:
    t = torch.zeros(tshape, dtype=torch.long if mode == "multiclass" else torch.float32)
    raises(lambda: all_of(mode)(torch.randn(shape), t), f"^{mode}:", r"empty batch \(N = 0", re.escape(str(shape)),
           "skip the loss")


# -- NaN / Inf and check_inputs ---------------------------------------------------------------------------
def _nan_logits() -> torch.Tensor:
    x = torch.randn(2, 1, 4, 4)
    x[0, 0, 0, 0], x[1, 0, 2, 2], x[1, 0, 3, 3] = float("nan"), float("inf"), -float("inf")
    return x


def test_nan_inf_logits_first_call() -> None:
    crit = build_loss("bce+dice", check_inputs="first")
    t = torch.zeros(2, 1, 4, 4)
    raises(lambda: crit(_nan_logits(), t), "^binary:", r"logits \(2, 1, 4, 4\) hold 1 NaN and 2 Inf",
           "learning rate")
    # a failed check does not count: the next call checks again
    raises(lambda: crit(_nan_logits(), t), "1 NaN and 2 Inf")
    assert torch.isfinite(crit(torch.randn(2, 1, 4, 4), t))
    # after one good call, "first" checks no values any more (no device sync): NaN in, NaN out
    assert torch.isnan(crit(_nan_logits(), t))


def test_default_checks_every_call() -> None:
    """The default ("auto") checks every call on the CPU: a model that diverges at step 500 is reported."""
    crit = build_loss("bce+dice")
    t = torch.zeros(2, 1, 4, 4)
    for _ in range(3):
        assert torch.isfinite(crit(torch.randn(2, 1, 4, 4), t))
    raises(lambda: crit(_nan_logits(), t), "1 NaN and 2 Inf")
    bad = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    bad[1, 0, 2, 3] = 255
    raises(lambda: crit(torch.randn(2, 1, 4, 4), bad), r"outside \[0, 1\]: 255 at 1 of 32 elements",
           r"first at index \(1, 0, 2, 3\)", "target / 255")


def test_deferred_checks_report_one_call_late_with_the_call_number() -> None:
    """check_inputs="deferred" (the accelerator behaviour): counts are read at the next call."""
    crit = build_loss("dice", check_inputs="deferred")
    t = torch.zeros(2, 1, 4, 4)
    crit(torch.randn(2, 1, 4, 4), t)
    out = crit(_nan_logits(), t)  # call 2: no sync, the loss is NaN (never a finite value)
    assert torch.isnan(out)
    raises(lambda: crit(torch.randn(2, 1, 4, 4), t), "in call 2, reported one call late", "1 NaN and 2 Inf")
    crit(_nan_logits(), t)
    raises(crit.check_pending, "in call 4")
    crit.check_pending()  # nothing pending any more


def test_nan_inf_logits_always() -> None:
    crit = build_loss("bce+dice", check_inputs="always")
    t = torch.zeros(2, 1, 4, 4)
    assert torch.isfinite(crit(torch.randn(2, 1, 4, 4), t))
    raises(lambda: crit(_nan_logits(), t), "1 NaN and 2 Inf")
    t_bad = t.clone()
    t_bad[0, 0, 0, 0] = 3
    raises(lambda: crit(torch.randn(2, 1, 4, 4), t_bad), r"values outside \[0, 1\]")


def test_nan_inf_logits_never() -> None:
    # "never": no value check and no sync; NaN logits give a NaN loss (shape checks still run)
    crit = build_loss("bce+dice", check_inputs="never")
    out = crit(_nan_logits(), torch.zeros(2, 1, 4, 4))
    assert torch.isnan(out)
    raises(lambda: crit(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4)), "^binary:", "does not fit")


def test_never_out_of_range_ids_count_as_no_class() -> None:
    # "never" with an id >= C: the pixel's one-hot row is all 0 (no class), documented behaviour
    x = torch.randn(1, 3, 2, 2)
    t = torch.tensor([[[0, 1], [2, 255]]])
    got = build_loss("ce", mode="multiclass", check_inputs="never")(x, t)
    logp = torch.log_softmax(x, 1)
    expected = -(logp[0, 0, 0, 0] + logp[0, 1, 0, 1] + logp[0, 2, 1, 0]) / 4
    torch.testing.assert_close(got, expected)


def test_functional_form_checks_values() -> None:
    from segloss_dice import dice_loss

    raises(lambda: dice_loss(_nan_logits(), torch.zeros(2, 1, 4, 4)), "1 NaN and 2 Inf")


# -- inputs that must simply work and equal the plain layout ------------------------------------------------
def _grads(crit: sr.CompositeLoss, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    out = crit(x, t)
    (g,) = torch.autograd.grad(out, x)
    return out.detach(), g


def _same(crit: sr.CompositeLoss, x1: torch.Tensor, t1: torch.Tensor, x2: torch.Tensor, t2: torch.Tensor) -> None:
    v1, g1 = _grads(crit, x1, t1)
    v2, g2 = _grads(crit, x2, t2)
    torch.testing.assert_close(v1, v2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g1.reshape(g2.shape), g2, rtol=1e-5, atol=1e-8)


MODES_TARGETS = {
    "binary": lambda s: (torch.rand(s) > 0.5).float(),
    "multiclass": lambda s: torch.randint(0, s[1], (s[0], *s[2:])),
    "multilabel": lambda s: (torch.rand(s) > 0.5).float(),
}


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_non_contiguous_and_channels_last(mode: str, ndim: int) -> None:
    C = 1 if mode == "binary" else 3
    shape = (2, C, *([6] * ndim))
    x = torch.randn(shape)
    t = MODES_TARGETS[mode](shape)
    fmt = torch.channels_last if ndim == 2 else torch.channels_last_3d
    crit = all_of(mode, ndim)
    x_cl = x.contiguous(memory_format=fmt)
    t_cl = t.contiguous(memory_format=fmt) if t.dim() == x.dim() else t
    assert C == 1 or not x_cl.is_contiguous()  # with one channel channels_last is also contiguous
    _same(crit, x, t, x_cl, t_cl)
    # a strided view: every other pixel of a larger tensor, transposed
    big = torch.randn(2, C, *([12] * ndim))
    view = big[(slice(None), slice(None), *([slice(None, None, 2)] * ndim))].transpose(-1, -2)
    assert not view.is_contiguous()
    tv = MODES_TARGETS[mode](tuple(view.shape))
    _same(crit, view, tv, view.contiguous(), tv.contiguous())


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float16])
def test_binary_and_multilabel_target_dtypes(dtype: torch.dtype) -> None:
    for mode, C in (("binary", 1), ("multilabel", 3)):
        x = torch.randn(2, C, 5, 5)
        t = torch.rand(2, C, 5, 5) > 0.5
        _same(all_of(mode), x, t.float(), x, t.to(dtype))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int16, torch.int8])
def test_multiclass_id_dtypes(dtype: torch.dtype) -> None:
    x = torch.randn(2, 4, 5, 5)
    t = torch.randint(0, 4, (2, 5, 5))
    crit = all_of("multiclass")
    _same(crit, x, t, x, t.to(dtype))
    # (N, 1, *S) ids equal (N, *S) ids, and equal the float one-hot target
    _same(crit, x, t, x, t.to(dtype).unsqueeze(1))
    _same(crit, x, t, x, torch.nn.functional.one_hot(t, 4).permute(0, 3, 1, 2).float())


def test_multiclass_bool_ids_with_two_classes() -> None:
    x = torch.randn(2, 2, 5, 5)
    t = torch.rand(2, 5, 5) > 0.5
    _same(all_of("multiclass"), x, t.long(), x, t)


def test_multiclass_uint8_with_ignore_255() -> None:
    x = torch.randn(2, 3, 5, 5)
    t = torch.randint(0, 3, (2, 5, 5))
    t[0, :2] = 255
    crit = all_of("multiclass", ignore_index=255)
    _same(crit, x, t, x, t.to(torch.uint8))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_binary_layouts(ndim: int) -> None:
    S = (7,) * ndim
    x = torch.randn(3, *S)
    t = (torch.rand(3, *S) > 0.5).float()
    crit = all_of("binary", ndim)
    plain = (x.unsqueeze(1), t.unsqueeze(1))  # (N, 1, *S) both
    _same(crit, *plain, x, t)  # (N, *S) both
    _same(crit, *plain, x.unsqueeze(1), t)  # (N, 1, *S) logits, (N, *S) target


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_batch_of_one(mode: str) -> None:
    C = 1 if mode == "binary" else 3
    x = torch.randn(2, C, 6, 6)
    t = MODES_TARGETS[mode]((2, C, 6, 6))
    for name in losses_for(mode):
        crit = build_loss(name, mode=mode)
        one, g = _grads(crit, x[:1], t[:1])
        assert torch.isfinite(one) and torch.isfinite(g).all(), name
        if mode == "binary":  # and the batch of one in the (N, *S) layout gives the same
            flat, _ = _grads(crit, x[:1, 0], t[:1, 0])
            torch.testing.assert_close(one, flat, msg=name)
    # dice and bce of a batch of one against their formulas
    p, tf = torch.sigmoid(x[:1]), t[:1].float()
    if mode == "binary":
        expected = 1 - (2 * (p * tf).sum() + 1) / (p.sum() + tf.sum() + 1)
        torch.testing.assert_close(build_loss("dice")(x[:1], t[:1]), expected)
        bce = -(tf * torch.log(p) + (1 - tf) * torch.log(1 - p)).mean()
        torch.testing.assert_close(build_loss("bce")(x[:1], t[:1]), bce)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_single_pixel(mode: str, ndim: int) -> None:
    C = 1 if mode == "binary" else 3
    shape = (1, C, *([1] * ndim))
    x = torch.randn(shape)
    t = MODES_TARGETS[mode](shape)
    for name in losses_for(mode, ndim):
        out, g = _grads(build_loss(name, mode=mode), x, t)
        assert torch.isfinite(out) and torch.isfinite(g).all(), name
    if mode == "binary":
        p, tf = torch.sigmoid(x).flatten()[0], t.flatten()[0]
        torch.testing.assert_close(build_loss("dice")(x, t), 1 - (2 * p * tf + 1) / (p + tf + 1))
        bce = -(tf * torch.log(p) + (1 - tf) * torch.log(1 - p))
        torch.testing.assert_close(build_loss("bce")(x, t), bce)
