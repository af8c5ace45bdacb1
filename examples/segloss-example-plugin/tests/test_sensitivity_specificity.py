"""Tests of the example plugin: the conformance kit, and values against the paper's formula."""

from __future__ import annotations

import pytest
import torch
from segloss_example import sensitivity_specificity_loss

from segloss_registry import LossConfigError, build_loss, describe_loss
from segloss_registry.testing import conformance_cases

NAME = "segloss_example:sensitivity_specificity"


def reference(p: torch.Tensor, t: torch.Tensor, r: float) -> float:
    """Brosch et al. 2015 per class over all pixels (float64 loops over classes), mean over classes."""
    p, t = p.double(), t.double()
    values = []
    for c in range(p.shape[1]):
        pc, tc = p[:, c].flatten(), t[:, c].flatten()
        err = (tc - pc) ** 2
        pos, neg = tc.sum(), (1 - tc).sum()
        sens = float((err * tc).sum() / pos) if pos > 0 else 0.0
        spec = float((err * (1 - tc)).sum() / neg) if neg > 0 else 0.0
        values.append(r * sens + (1 - r) * spec)
    return sum(values) / len(values)


@pytest.mark.parametrize("case", conformance_cases(NAME))
def test_conformance(case):
    case()


def test_found_through_the_entry_point():
    d = describe_loss("sensitivity_specificity")
    assert (d["distribution"], d["version"], d["plugin"]) == ("segloss-example-plugin", "0.1.0", "segloss_example")
    assert describe_loss("sens_spec")["name"] == "sensitivity_specificity"


@pytest.mark.parametrize("r", [0.05, 0.5, 1.0])
def test_binary_matches_the_formula(r):
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) < 0.1).float()
    got = build_loss(NAME, r=r)(logits, target)
    assert got.item() == pytest.approx(reference(torch.sigmoid(logits), target, r), rel=1e-5)


def test_multiclass_matches_the_formula_and_composes_with_dice():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    one_hot = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    expected = reference(torch.softmax(logits, 1), one_hot, 0.05)
    got = build_loss(NAME, mode="multiclass")(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    both = build_loss("sensitivity_specificity + 0.5*dice", mode="multiclass")
    total, terms = both(logits, target, return_terms=True)
    assert terms["sensitivity_specificity"].item() == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(expected + 0.5 * terms["dice"].item(), rel=1e-5)


def test_empty_target_gives_the_background_error_only():
    logits = torch.full((1, 1, 4, 4), -1.0)
    target = torch.zeros(1, 1, 4, 4)
    p = torch.sigmoid(torch.tensor(-1.0)).item()
    got = sensitivity_specificity_loss(logits, target, r=0.05)
    assert got.item() == pytest.approx(0.95 * p**2, rel=1e-6)


def test_perfect_prediction_gives_zero():
    target = (torch.rand(2, 1, 8, 8) < 0.5).float()
    probabilities = target.clone()
    got = sensitivity_specificity_loss(probabilities, target, from_logits=False)
    assert got.item() == pytest.approx(0.0, abs=1e-7)


def test_r_out_of_range_is_a_config_error():
    with pytest.raises(LossConfigError, match="r must be <= 1"):
        build_loss(NAME, r=1.5)


def test_the_docstring_example_runs():
    import doctest

    import segloss_example

    result = doctest.testmod(segloss_example)
    assert result.attempted > 0 and result.failed == 0
