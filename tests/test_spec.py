"""Specs, weights, params, keywords and config round trips (DESIGN.md, Public API)."""

from __future__ import annotations

import json

import pytest
import torch

from segloss_registry import LossConfigError, SpecSyntaxError, UnknownLossError, build_loss


def _xt(C=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 8, 8, generator=g)
    t = torch.randint(0, C, (2, 8, 8), generator=g) if C > 1 else (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    return x, t


def test_design_examples_build_and_weigh_their_terms():
    x, t = _xt()
    d = build_loss("dice", compile=False)(x, t)
    b = build_loss("bce", compile=False)(x, t)
    f2 = build_loss("focal(gamma=2)", compile=False)(x, t)
    d0 = build_loss("dice(smooth=0)", compile=False)(x, t)
    torch.testing.assert_close(build_loss("bce+dice", compile=False)(x, t), b + d)
    torch.testing.assert_close(build_loss("bce+dice", weights=[0.3, 0.7], compile=False)(x, t), 0.3 * b + 0.7 * d)
    weighted = build_loss("bce+dice", weights={"bce": 0.3, "dice": 0.7}, compile=False)
    torch.testing.assert_close(weighted(x, t), 0.3 * b + 0.7 * d)
    torch.testing.assert_close(
        build_loss("0.5*focal(gamma=2) + dice(smooth=0)", mode="binary", compile=False)(x, t), 0.5 * f2 + d0
    )
    torch.testing.assert_close(build_loss("0.5*(bce + dice)", compile=False)(x, t), 0.5 * b + 0.5 * d)
    torch.testing.assert_close(build_loss("dice/4", compile=False)(x, t), d / 4)


def test_dict_config_multiclass():
    x, t = _xt(3)
    ce = build_loss("ce", mode="multiclass", compile=False)(x, t)
    d0 = build_loss("dice(smooth=0)", mode="multiclass", compile=False)(x, t)
    crit = build_loss({"ce": 1.0, "dice": {"weight": 2.0, "smooth": 0.0}}, mode="multiclass", compile=False)
    torch.testing.assert_close(crit(x, t), ce + 2 * d0)


def test_return_terms_and_last_terms_come_from_the_same_call():
    x, t = _xt()
    crit = build_loss("bce+dice", weights=[0.3, 0.7], compile=False)
    loss, terms = crit(x, t, return_terms=True)
    assert set(terms) == {"bce", "dice"} and loss.dim() == 0
    torch.testing.assert_close(loss, 0.3 * terms["bce"] + 0.7 * terms["dice"])
    assert all(not v.requires_grad for v in crit.last_terms.values())
    torch.testing.assert_close(crit.last_terms["dice"], terms["dice"].detach())


@pytest.mark.parametrize(
    "spec",
    ["0.5*focal(gamma=1, alpha=None) + dice(per_image=True)", "ce + 2*dice(class_weights=[1, 2, 3])",
     "segloss_iou:jaccard(smooth=0.5) + bce(pos_weight=2)"],
)
def test_config_rebuilds_the_same_loss_through_json(spec):
    mode = "multiclass" if "ce" in spec.split("+")[0] else "binary"
    crit = build_loss(spec, mode=mode, ignore_index=7 if mode == "multiclass" else None, check_inputs="always")
    cfg = json.loads(json.dumps(crit.config()))
    again = build_loss(cfg)
    assert again.config() == crit.config()
    rebuilt = build_loss(crit.spec, mode=mode, ignore_index=crit.options.ignore_index, check_inputs="always")
    assert rebuilt.config() == crit.config()


def test_keyword_applies_to_every_term_that_accepts_it():
    crit = build_loss("dice + iou + bce", per_image=True, smooth=0)
    assert crit.terms[0].params.per_image and crit.terms[1].params.per_image
    assert crit.terms[0].params.smooth == 0 and crit.terms[1].params.smooth == 0
    with pytest.raises(LossConfigError, match=r"no term accepts 'smoth' \(did you mean 'smooth'\?\)"):
        build_loss("dice", smoth=0)


def test_params_argument_and_conflicts():
    crit = build_loss("bce+dice", params={"dice": {"smooth": 0.25}})
    assert crit.terms[1].params.smooth == 0.25
    with pytest.raises(LossConfigError, match="dice: smooth given twice"):
        build_loss("dice(smooth=0)", smooth=1)
    with pytest.raises(LossConfigError, match=r"params names 'dcie', which is not a term \(did you mean 'dice'\?\)"):
        build_loss("bce+dice", params={"dcie": {"smooth": 0}})


def test_duplicate_terms_get_distinct_keys():
    crit = build_loss("dice + 0.5*dice(smooth=0)")
    assert crit.keys == ("dice", "dice_2")


@pytest.mark.parametrize(
    "spec,match",
    [
        ("bce + * dice", "invalid syntax"),
        ("dice(1)", "arguments must be keywords"),
        ("dice(smooth=x)", "must be a literal"),
        ("2*3", r"'\*' needs a number on one side"),
        ("3", "a number alone is not a loss"),
        ("__import__('os').system('true')", "arguments must be keywords|unexpected"),
        ("", "it is empty"),
        ("dice(smooth=1, smooth=2)", "given twice|keyword argument repeated"),
    ],
)
def test_spec_syntax_errors(spec, match):
    with pytest.raises(SpecSyntaxError, match=match):
        build_loss(spec)


def test_errors_are_value_errors_and_raised_before_any_tensor():
    with pytest.raises(ValueError):
        build_loss("nope")
    with pytest.raises(UnknownLossError):
        build_loss({"dcie": 1.0})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weights": [1.0]}, r"1 weights for 2 terms \(bce, dice\)"),
        ({"weights": [1.0, float("nan")]}, "weight of 'dice' must be a finite number >= 0"),
        ({"weights": [1.0, -1.0]}, "weight of 'dice' must be a finite number >= 0"),
        ({"weights": [0.0, 0.0]}, "all weights are 0"),
        ({"weights": {"dcie": 1.0}}, r"did you mean 'dice'"),
        ({"mode": "multi"}, "mode must be one of"),
        ({"ignore_index": 2.5}, "ignore_index must be an int or None"),
        ({"ignore_index": True}, "ignore_index must be an int or None"),
        ({"check_inputs": "sometimes"}, "check_inputs must be"),
        ({"compile": "yes"}, "compile must be 'auto', True or False"),
        ({"from_logits": 1}, "from_logits must be True or False"),
    ],
)
def test_composite_option_rules(kwargs, match):
    with pytest.raises(LossConfigError, match=match):
        build_loss("bce+dice", **kwargs)


def test_weights_given_twice():
    with pytest.raises(LossConfigError, match="weights given twice"):
        build_loss("0.5*bce + dice", weights=[1, 1])


def test_a_loss_outside_its_modes_is_a_config_error():
    with pytest.raises(LossConfigError, match=r"ce: not defined for mode 'binary'; it supports multiclass; use 'bce'"):
        build_loss("ce")
    with pytest.raises(LossConfigError, match="bce: not defined for mode 'multiclass'"):
        build_loss("bce + dice", mode="multiclass")
