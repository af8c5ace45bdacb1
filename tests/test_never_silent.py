"""Never silently wrong: the corners where bad input, bad hyperparameters or a bad plugin used to get
through with a wrong number (issue 12). Each test failed on the code before it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from test_plugin_failures import FIXTURES, install, load, site  # noqa: F401 - the fixture

from segloss_registry import (
    InputError,
    LossConfigError,
    PluginError,
    Registry,
    SeglossError,
    build_loss,
    describe_loss,
    list_losses,
)
from segloss_registry.testing import make_inputs


def _params_for(name: str, C: int) -> dict[str, Any]:
    if name == "wasserstein_dice":
        m = [[0.0 if i == j else 1.0 for j in range(C)] for i in range(C)]
        return {"dist_matrix": m}
    return {}


def _cases() -> list[Any]:
    out = []
    for info in list_losses():
        if info.recipe is not None:
            continue
        mode = info.modes[0]
        dim = 2 if 2 in info.dims else info.dims[0]
        out.append(pytest.param(info.qualified_name, mode, dim, id=f"{info.name}-{mode}"))
    return out


def _build(name: str, mode: str, C: int = 3, **kw: Any) -> Any:
    short = name.split(":")[1]
    p = _params_for(short, C)
    return build_loss(name, mode=mode, compile=False, params={short: p} if p else None, **kw)


# -- NaN in, never a finite loss out -----------------------------------------------------------------
@pytest.mark.parametrize(("name", "mode", "dim"), _cases())
def test_nan_logits_after_the_first_call_are_reported_or_nan(name: str, mode: str, dim: int) -> None:
    logits, target = make_inputs(mode, dim, seed=4)
    bad = logits.clone()
    bad.view(-1)[3] = float("nan")
    crit = _build(name, mode)
    assert torch.isfinite(crit(logits, target))
    with pytest.raises(InputError, match="1 NaN and 0 Inf"):
        crit(bad, target)  # the default checks every call on the CPU
    unchecked = _build(name, mode, check_inputs="never")
    assert torch.isfinite(unchecked(logits, target))
    out, terms = unchecked(bad, target, return_terms=True)
    assert torch.isnan(out) and all(torch.isnan(v) for v in terms.values()), (name, out)
    inf = logits.clone()
    inf.view(-1)[0] = float("inf")
    assert not torch.isfinite(unchecked(inf, target)), name


@pytest.mark.compile
def test_nan_in_gives_nan_out_compiled_and_deferred() -> None:
    logits, target = make_inputs("binary", 2, seed=5)
    bad = logits.clone()
    bad[0, 0, 1, 1] = float("nan")
    for check in ("never", "deferred"):
        crit = build_loss("dice+iou+tversky+mcc+cldice", compile=True, check_inputs=check)
        assert torch.isfinite(crit(logits, target))
        assert torch.isnan(crit(bad, target))
    with pytest.raises(InputError, match="in call 2, reported one call late"):
        crit(logits, target)


def test_a_corrupt_uint8_mask_later_in_training_is_reported() -> None:
    crit = build_loss("bce+dice")
    logits, _ = make_inputs("binary", 2)
    good = (torch.rand(logits.shape) > 0.5).to(torch.uint8)
    crit(logits, good)
    crit(logits, good)
    with pytest.raises(InputError, match=r"outside \[0, 1\]: 255 at \d+ of \d+ elements.*target / 255"):
        crit(logits, good * 255)


# -- float multiclass targets and ignore_index -----------------------------------------------------------
@pytest.mark.parametrize("ii", [0, 1, 255])
def test_one_hot_target_with_ignore_index_is_a_clear_error(ii: int) -> None:
    x = torch.randn(2, 3, 4, 4)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 4, 4)), 3).permute(0, 3, 1, 2).float()
    for spec in ("ce", "focal", "dice", "ce+dice"):
        with pytest.raises(InputError, match=f"ignore_index={ii} applies to class ids.*mask="):
            build_loss(spec, mode="multiclass", ignore_index=ii)(x, onehot)


def test_one_hot_target_with_a_mask_instead_of_ignore_index() -> None:
    """The documented replacement: mask=0 on the ignored pixels, equal to ids with ignore_index."""
    x = torch.randn(2, 3, 4, 4)
    ids = torch.randint(0, 3, (2, 4, 4))
    ignored = torch.rand(2, 4, 4) < 0.3
    onehot = torch.nn.functional.one_hot(ids, 3).permute(0, 3, 1, 2).float()
    for spec in ("ce", "focal", "dice", "ce+dice+lovasz"):
        want = build_loss(spec, mode="multiclass", ignore_index=255)(x, torch.where(ignored, 255, ids))
        got = build_loss(spec, mode="multiclass")(x, onehot, mask=~ignored)
        torch.testing.assert_close(got, want, msg=spec)


# -- narrow integer targets ----------------------------------------------------------------------------
def test_uint8_255_is_not_ignored_under_ignore_index_minus_one() -> None:
    x = torch.randn(1, 1, 2, 2)
    t = torch.tensor([[[[0, 1], [1, 255]]]], dtype=torch.uint8)
    with pytest.raises(InputError, match=r"outside \[0, 1\]: 255"):
        build_loss("bce", ignore_index=-1)(x, t)
    t8 = torch.tensor([[[[0, 1], [1, -1]]]], dtype=torch.int8)
    got = build_loss("bce", ignore_index=-1)(x, t8)
    want = torch.nn.functional.binary_cross_entropy_with_logits(x.view(-1)[:3], t8.view(-1)[:3].float())
    torch.testing.assert_close(got, want)


def test_uint8_ids_with_256_classes_and_int8_with_128() -> None:
    for dtype, C in ((torch.uint8, 256), (torch.int8, 128)):
        x = torch.randn(1, C, 2, 2, dtype=torch.float64)
        ids = torch.tensor([[[0, C - 1], [C // 2, 1]]], dtype=dtype)
        got = build_loss("ce", mode="multiclass")(x, ids)
        want = torch.nn.functional.cross_entropy(x, ids.long())
        torch.testing.assert_close(got, want)


def test_uint8_ids_with_ignore_index_minus_one_do_not_wrap() -> None:
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    ids = torch.tensor([[[0, 1], [2, 255]]], dtype=torch.uint8)
    with pytest.raises(InputError, match=r"class ids \[255\] outside \[0, 3\)"):
        build_loss("ce", mode="multiclass", ignore_index=-1)(x, ids)


# -- zero-size axes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["bce", "focal", "combo", "active_contour", "boundary", "cldice", "hausdorff_er"])
def test_zero_size_spatial_axis_is_an_input_error(spec: str) -> None:
    crit = build_loss(spec)
    with pytest.raises(InputError, match="zero-size axis"):
        crit(torch.randn(2, 1, 0, 8), torch.zeros(2, 1, 0, 8))


def test_zero_classes_and_zero_size_deep_supervision_level() -> None:
    with pytest.raises(InputError):
        build_loss("bce", mode="multilabel")(torch.randn(2, 0, 4, 4), torch.zeros(2, 0, 4, 4))
    crit = build_loss("bce+dice")
    with pytest.raises(InputError, match="zero-size axis"):
        crit([torch.randn(2, 1, 8, 8), torch.randn(2, 1, 0, 4)], torch.zeros(2, 1, 8, 8))


# -- values at the float32 limit ---------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "mode"), [("bce", "binary"), ("focal", "binary"), ("combo", "binary"),
                                            ("ce", "multiclass"), ("lovasz", "binary"), ("lovasz", "multiclass"),
                                            ("focal", "multiclass"), ("bce+dice+focal", "multilabel")])
def test_finite_logits_near_the_float32_limit_give_finite_losses(spec: str, mode: str) -> None:
    C = 1 if mode == "binary" else 3
    x = torch.full((2, C, 4, 4), 3e38)
    if mode == "multiclass":
        x[:, 1:] = -3e38  # class 0 certain everywhere
    else:
        x[:, :, ::2] = -3e38
    x.requires_grad_(True)
    t: torch.Tensor = torch.randint(0, 3, (2, 4, 4)) if mode == "multiclass" else (torch.rand(2, C, 4, 4) > 0.5).float()
    out = build_loss(spec, mode=mode)(x, t)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all(), (spec, out)
    if not (spec == "lovasz" and mode == "multiclass"):  # Lovasz-softmax works on probabilities: <= 1
        assert out > 1e10  # confidently wrong pixels: a huge loss, not a small one


# -- hyperparameters that overflowed at run time are bounded at build time ---------------------------------
@pytest.mark.parametrize(("spec", "kw", "rule"), [
    ("mcc", {"smooth": 1e20}, "smooth must be <= "),
    ("dice", {"smooth": 1e39}, "smooth must be"),
    ("bce", {"pos_weight": 1e37}, "pos_weight"),
    ("hausdorff_er", {"alpha": 39.0}, "alpha must be <= "),
    ("boundary", {"theta": 2**31 + 1}, "theta must be"),
    ("focal", {"gamma": 1e6}, "gamma must be <= "),
])
def test_extreme_hyperparameters_are_refused_at_build_time(spec: str, kw: dict[str, Any], rule: str) -> None:
    with pytest.raises(LossConfigError, match=rule):
        build_loss(spec, **kw)


@pytest.mark.parametrize(("spec", "kw"), [("mcc", {"smooth": 1e6}), ("dice", {"smooth": 1e6}),
                                          ("hausdorff_er", {"alpha": 8.0}), ("focal", {"gamma": 50.0}),
                                          ("dice", {"class_weights": [1e-30, 1.0, 1.0]})])
def test_the_largest_allowed_hyperparameters_stay_finite(spec: str, kw: dict[str, Any]) -> None:
    mode = "multiclass" if "class_weights" in kw else "binary"
    logits, target = make_inputs(mode, 2, seed=9, scale=8.0)
    logits.requires_grad_(True)
    out = build_loss(spec, mode=mode, **kw)(logits, target)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all(), (spec, kw, out)


@pytest.mark.parametrize("spec", ["dice", "ce", "iou", "tversky"])
def test_tiny_class_weights_keep_their_ratios(spec: str) -> None:
    """Weights are normalised on the host in float64: 1e-300 each is the same as 1 each."""
    x, t = make_inputs("multiclass", 2, seed=2)
    x.requires_grad_(True)
    want = build_loss(spec, mode="multiclass", class_weights=[1.0, 1.0, 1.0])(x, t)
    for w in ([1e-300] * 3, [1e-45] * 3):
        got = build_loss(spec, mode="multiclass", class_weights=w)(x, t)
        torch.testing.assert_close(got, want)
    got = build_loss(spec, mode="multiclass", class_weights=[1e-300, 1.0, 1.0])(x, t)
    got.backward()
    assert torch.isfinite(got) and torch.isfinite(x.grad).all()


# -- config conflicts, level weights, recipe modes ---------------------------------------------------------
def test_conflicting_parameters_in_a_dict_config() -> None:
    with pytest.raises(LossConfigError, match="sets smooth twice"):
        build_loss({"dice": {"params": {"smooth": 0}, "smooth": 1}})
    with pytest.raises(LossConfigError, match="sets smooth twice"):
        build_loss({"dice(smooth=0)": {"smooth": 1}})
    assert build_loss({"dice(smooth=0)": {"per_image": True}}).terms[0].params.smooth == 0


def test_written_out_level_weights_follow_the_default_rule() -> None:
    g = torch.Generator().manual_seed(3)
    levels = [torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 4, 4, generator=g)]
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    crit = build_loss("bce+dice")
    torch.testing.assert_close(crit(levels, target), crit(levels, target, level_weights=[1.0, 0.5]))
    torch.testing.assert_close(crit(levels, target), crit(levels, target, level_weights=[2.0, 1.0]))


def test_recipe_modes_are_the_intersection_of_its_terms() -> None:
    info = describe_loss("dice_bce")
    assert info["modes"] == ["binary", "multilabel"]
    with pytest.raises(LossConfigError, match="bce: not defined for mode 'multiclass'"):
        build_loss("dice_bce", mode="multiclass")


# -- exceptions that escaped the hierarchy -------------------------------------------------------------------
@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: build_loss("1" + "0" * 400 + "*dice"), "too large"),
    (lambda: build_loss("bce+"), "ends with '\\+': a term is missing"),
    (lambda: build_loss("dice", level_weights=["a"]), "level_weights must be numbers"),
    (lambda: build_loss("dice", level_weights=[None]), "level_weights must be numbers"),
    (lambda: build_loss("dice", ignore_index=2**70), "ignore_index must be an int64"),
    (lambda: build_loss("dice", registry=5), "registry must be a segloss_registry.Registry"),
    (lambda: build_loss("dice", compile=0.0), "compile must be 'auto', True or False"),
    (lambda: build_loss("dice", compile=__import__("numpy").True_), "compile must be .*numpy"),
    (lambda: build_loss("dice")([torch.randn(2, 1, 4, 4)], torch.zeros(2, 1, 4, 4), level_weights=["a"]),
     "level_weights must be numbers"),
    (lambda: build_loss("dice")([torch.randn(2, 1, 4, 4)], torch.zeros(2, 1, 4, 4), level_weights=[None]),
     "level_weights must be numbers"),
])
def test_errors_stay_in_the_hierarchy(call: Any, pattern: str) -> None:
    with pytest.raises(SeglossError, match=pattern):
        call()


def test_out_of_range_values_are_named_with_their_place() -> None:
    t = torch.zeros(1, 1, 3, 3)
    t[0, 0, 2, 1] = 255
    with pytest.raises(InputError, match=r"255 at 1 of 9 elements, the first at index \(0, 0, 2, 1\)"):
        build_loss("dice")(torch.randn(1, 1, 3, 3), t)


# -- one bad plugin must not break the others ---------------------------------------------------------------
@pytest.mark.parametrize("module", ["segloss_fx_base_exc", "segloss_fx_skipped", "segloss_fx_hook_base_exc"])
def test_a_base_exception_plugin_leaves_every_other_loss_loaded(site: Path, module: str) -> None:  # noqa: F811
    install(site, "segloss-fx-bad", {"fx_bad": module})
    install(site, "segloss-fx-good", {"fx_good": "segloss_fx_good"})
    reg = Registry()
    caught = load(reg)
    plugins = {p.name: p for p in reg.plugins()}
    assert plugins["fx_bad"].status == "failed" and plugins["fx_good"].status == "loaded"
    assert len(caught) == 1 and "fx_bad" in str(caught[0].message)
    names = {loss.name for loss in reg.all_losses()}
    assert {"dice", "bce", "fx_good"} <= names and "fx_half_base" not in names
    x, t = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    assert torch.isfinite(build_loss("bce+dice+fx_good", registry=reg)(x, t))


def test_keyboard_interrupt_while_loading_leaves_nothing_half_loaded(site: Path, monkeypatch: Any) -> None:  # noqa: F811
    monkeypatch.setenv("SEGLOSS_FX_INTERRUPT", str(site / "interrupted"))
    install(site, "segloss-fx-interrupt", {"fx_interrupt": "segloss_fx_interrupt"})
    reg = Registry()
    with pytest.raises(KeyboardInterrupt):
        reg.list()
    names = {loss.name for loss in reg.list()}  # the next use loads everything again
    assert {"dice", "bce", "fx_after_interrupt"} <= names


def test_an_entry_point_naming_another_distributions_module_is_refused(site: Path) -> None:  # noqa: F811
    # what `segloss new-plugin dice` used to produce once installed: a plugin whose module is the built-in's
    info = site / "segloss_fx_shadow-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segloss-fx-shadow\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[segloss_registry]\nfx_shadow = segloss_dice\n")
    reg = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins = {p.name: p for p in reg.plugins()}
    assert plugins["fx_shadow"].status == "failed"
    assert "names module 'segloss_dice', which distribution segloss-registry provides" in plugins["fx_shadow"].problems[0]
    assert any("fx_shadow" in str(w.message) for w in caught)
    assert reg.resolve("dice").plugin == "segloss_dice"  # the built-in is untouched, and not ambiguous


def test_two_distributions_providing_one_module_are_reported(site: Path) -> None:  # noqa: F811
    (site / "segloss_fx_good.py").write_text((FIXTURES / "segloss_fx_good.py").read_text())
    for dist in ("segloss-fx-one", "segloss-fx-two"):
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "RECORD").write_text("segloss_fx_good.py,,\n")
        (info / "entry_points.txt").write_text(f"[segloss_registry]\n{dist.replace('-', '_')} = segloss_fx_good\n")
    reg = Registry()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        plugins = {p.name: p for p in reg.plugins()}
    for name, other in (("segloss_fx_one", "segloss-fx-two"), ("segloss_fx_two", "segloss-fx-one")):
        assert plugins[name].status == "failed"
        assert f"provided by segloss-fx-{name[-3:]} and by {other}" in plugins[name].problems[0]


# -- plugin outputs ------------------------------------------------------------------------------------------------
@pytest.fixture
def misbehaving(site: Path) -> Registry:  # noqa: F811
    install(site, "segloss-fx-misbehaving", {"fx_misbehaving": "segloss_fx_misbehaving"})
    reg = Registry()
    load(reg)
    return reg


@pytest.mark.parametrize(("loss", "pattern"), [
    ("fx_not_scalar", r"returned a tensor of shape \(1,\); a loss returns a 0-dim tensor"),
    ("fx_integer", "returned a torch.int64 tensor"),
    ("fx_python_float", "returned float, not a 0-dim torch.Tensor"),
    ("fx_other_device", "returned a tensor on meta for inputs on cpu"),
    ("fx_inplace_target", r"wrote in place into .*inp.target"),
    ("fx_inplace_prob", r"wrote in place into .*inp.prob"),
])
def test_misbehaving_plugin_outputs_are_plugin_errors(misbehaving: Registry, loss: str, pattern: str) -> None:
    x, t = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    t_before = t.clone()
    crit = build_loss(f"bce+{loss}+dice", registry=misbehaving)
    with pytest.raises(PluginError, match=f"segloss plugin 'fx_misbehaving': loss '{loss}'.*{pattern}"):
        crit(x, t)
    if loss != "fx_inplace_target":
        assert torch.equal(t, t_before)


def test_inplace_write_into_the_callers_target_is_caught_before_it_spreads(misbehaving: Registry) -> None:
    x, t = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    with pytest.raises(PluginError, match="the caller's"):
        build_loss("fx_inplace_target", registry=misbehaving)(x, t)


# -- describe ---------------------------------------------------------------------------------------------------------
def test_describe_a_params_model_with_a_tensor_field_and_a_required_field() -> None:
    from pydantic import ConfigDict, Field

    from segloss_registry import LossParams, hookimpl

    class OddParams(LossParams):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        weights_tensor: torch.Tensor | None = None
        scale: float = Field(..., gt=0, description="required: no default")

    class Plugin:
        @hookimpl
        def register_losses(self, register: Any) -> None:
            register("fx_odd", lambda inp, p: inp.prob.mean() * p.scale, params=OddParams)

    reg = Registry(entry_point_group=None)
    with reg.plugin(Plugin(), "fx_odd_plugin"):
        from segloss_registry._describe import describe

        d = describe(reg.resolve("fx_odd"))
    assert d["parameters"]["scale"]["required"] is True and d["parameters"]["scale"]["rules"] == {
        "exclusiveMinimum": 0}
    assert d["parameters"]["weights_tensor"]["type"] == "no JSON schema (Tensor | None)"
    assert "weights_tensor" in d["not_described"]
