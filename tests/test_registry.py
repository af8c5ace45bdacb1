"""The registry: entry-point discovery of the built-ins, listing, resolving, plugins in code."""

from __future__ import annotations

import types

import pytest
import torch

import segloss_registry as sr
from segloss_registry import (
    AmbiguousLossError,
    LossParams,
    NoParams,
    PluginError,
    UnknownLossError,
    build_loss,
    get_registry,
    hookimpl,
    list_losses,
)

SEED = {"bce", "ce", "dice", "iou", "focal", "active_contour", "boundary", "dice_bce"}


def test_builtins_arrive_through_entry_points_with_versions():
    plugins = {p.name: p for p in sr.list_plugins()}
    for name in ("segloss_dice", "segloss_bce", "segloss_focal", "segloss_boundary"):
        assert plugins[name].status == "loaded"
        assert plugins[name].distribution == "segloss-registry"
        assert plugins[name].version == sr.__version__
    assert {loss.name for loss in list_losses()} >= SEED


def test_list_wildcards_and_natural_sort():
    assert [loss.name for loss in list_losses("dice*")][:2] == ["dice", "dice_bce"]
    assert {loss.name for loss in list_losses("jacc*")} == {"iou"}  # aliases match too
    assert list_losses("nope*") == []

    class P:
        @hookimpl
        def register_losses(self, register):
            for n in ("loss10", "loss2", "loss1"):
                register(n, lambda inp, p: inp.logits.sum() * 0, params=NoParams)

    with get_registry().plugin(P(), "numbered"):
        assert [loss.name for loss in list_losses("loss*")] == ["loss1", "loss2", "loss10"]
    assert list_losses("loss*") == []  # unregistered after the block


def test_resolve_aliases_and_qualified_names():
    reg = get_registry()
    assert reg.resolve("jaccard").name == "iou"
    assert reg.resolve("segloss_iou:jaccard").name == "iou"
    assert reg.resolve("DICE").name == "dice"
    with pytest.raises(UnknownLossError, match=r"unknown loss 'dcie' \(did you mean 'dice'\?\); available: .*bce"):
        reg.resolve("dcie")
    with pytest.raises(UnknownLossError, match=r"unknown plugin 'segloss_dcie'.*did you mean 'segloss_dice'"):
        reg.resolve("segloss_dcie:dice")
    with pytest.raises(UnknownLossError, match="plugin 'segloss_dice' has no loss 'iou'"):
        reg.resolve("segloss_dice:iou")


class _Mean(LossParams):
    scale: float = 1.0


def _mean_loss(inp, p):
    return (inp.prob - inp.target).abs().mean() * p.scale


def test_a_plugin_in_code_is_buildable_and_two_plugins_sharing_a_name_are_ambiguous():
    a = types.SimpleNamespace(register_losses=hookimpl(lambda register: register("dice", _mean_loss, params=_Mean)))
    with pytest.warns(sr.PluginWarning, match="ambiguous"):
        ctx = get_registry().plugin(a, "other")
        ctx.__enter__()
    try:
        with pytest.raises(AmbiguousLossError, match=r"'other:dice' or 'segloss_dice:dice'"):
            build_loss("dice")
        x = torch.randn(2, 1, 4, 4)
        t = (torch.rand(2, 1, 4, 4) > 0.5).float()
        got = build_loss("other:dice + segloss_dice:dice", compile=False)(x, t, return_terms=True)[1]
        torch.testing.assert_close(got["dice"], (torch.sigmoid(x) - t).abs().mean())
    finally:
        ctx.__exit__(None, None, None)
    assert build_loss("dice").terms[0].info.plugin == "segloss_dice"


def test_registering_twice_under_one_name_is_an_error():
    plugin = types.SimpleNamespace(register_losses=hookimpl(lambda register: None))
    with get_registry().plugin(plugin, "twice"), pytest.raises(PluginError, match="already registered"):
        get_registry().register_plugin(types.SimpleNamespace(), "twice")


def test_recipe_expands_into_its_terms():
    crit = build_loss("0.5*dice_bce(smooth=0) + focal")
    assert crit.keys == ("bce", "dice", "focal")
    assert crit.weights == {"bce": 0.5, "dice": 0.5, "focal": 1.0}
    assert crit.terms[1].params.smooth == 0.0


def test_losses_and_recipes_are_their_own_types():
    """A loss always has its formula; a recipe is a spec string with no formula of its own."""
    reg = get_registry()
    dice, recipe = reg.resolve("dice"), reg.resolve("dice_bce")
    assert isinstance(dice, sr.LossInfo) and not isinstance(dice, sr.RecipeInfo)
    assert callable(dice.fn) and issubclass(dice.params, LossParams) and dice.recipe is None
    assert isinstance(recipe, sr.RecipeInfo) and recipe.spec == "bce+dice" and not hasattr(recipe, "fn")
    # the reads of the old single type keep working: .recipe is the spec, .params has no fields
    assert recipe.recipe == "bce+dice" and recipe.params is NoParams
    # a recipe supports what every one of its terms supports
    common = set(reg.resolve("bce").modes) & set(dice.modes)
    assert set(recipe.modes) == common and set(recipe.dims) == set(reg.resolve("bce").dims) & set(dice.dims)
    for info in list_losses():
        assert isinstance(info, (sr.LossInfo, sr.RecipeInfo))
        assert (info.recipe is None) == isinstance(info, sr.LossInfo)


def test_a_recipe_registered_in_code_is_a_recipe_info():
    plugin = types.SimpleNamespace(register_losses=hookimpl(
        lambda register: register("half_dice", "0.5*dice", aliases=("hd",), summary="half a dice\nmore")))
    with get_registry().plugin(plugin, "recipes_in_code"):
        info = get_registry().resolve("recipes_in_code:hd")
        assert isinstance(info, sr.RecipeInfo)
        assert (info.name, info.spec, info.aliases, info.summary) == ("half_dice", "0.5*dice", ("hd",), "half a dice")
        assert info.qualified_name == "recipes_in_code:half_dice"
        assert build_loss("half_dice", compile=False).weights == {"dice": 0.5}


def test_describe_loss_gives_types_defaults_rules_and_schema():
    d = sr.describe_loss("focal")
    assert d["parameters"]["gamma"]["default"] == 2.0
    assert d["parameters"]["gamma"]["rules"] == {"minimum": 0, "maximum": 100}
    assert d["parameters"]["alpha"]["rules"] == {"minimum": 0, "maximum": 1}
    assert d["schema"]["additionalProperties"] is False
    assert sr.describe_loss("dice_bce")["recipe"] == "bce+dice"
