"""One test per validation rule and per error form of DESIGN.md."""

from __future__ import annotations

import pytest

from segloss_registry import LossConfigError, build_loss


@pytest.mark.parametrize(
    "spec,kwargs,message",
    [
        ("focal", {"gamma": -1}, "focal: gamma must be >= 0 (got -1)"),
        ("focal", {"gamma": -1.0}, "focal: gamma must be >= 0 (got -1.0)"),
        ("focal", {"alpha": 1.5}, "focal: alpha must be <= 1 (got 1.5)"),
        ("focal", {"alpha": -0.1}, "focal: alpha must be >= 0 (got -0.1)"),
        ("dice", {"smooth": -1}, "dice: smooth must be >= 0 (got -1)"),
        ("dice", {"smooth": float("inf")}, "dice: smooth must be finite (got inf)"),
        ("iou", {"smooth": float("nan")}, "iou: smooth must be finite (got nan)"),
        ("boundary", {"theta0": 4}, "boundary: theta0 must be an odd integer >= 1 (got 4)"),
        ("boundary", {"theta": 0}, "boundary: theta must be an odd integer >= 1 (got 0)"),
        ("boundary", {"theta": 3.0}, "boundary: theta must be an integer (got 3.0)"),
        ("active_contour", {"weight": -2}, "active_contour: weight must be >= 0 (got -2)"),
        ("dice", {"smooth": "1"}, "dice: smooth must be a number (got '1')"),
        ("dice", {"per_image": 1}, "dice: per_image must be true or false (got 1)"),
        ("bce", {"pos_weight": 0},
         "bce: pos_weight must be in (0, 1e6] (got 0.0); larger weights overflow float32 sums"),
        ("ce", {"label_smoothing": 1.0}, "ce: label_smoothing must be < 1 (got 1.0)"),
        ("ce", {"class_weights": [1, -1]},
         "ce: class_weights must be a non-empty list of finite values >= 0, not all 0 (got [1.0, -1.0])"),
    ],
)
def test_rule_messages(spec, kwargs, message):
    mode = "multiclass" if spec == "ce" else "binary"
    with pytest.raises(LossConfigError) as err:
        build_loss(spec, mode=mode, **kwargs)
    assert str(err.value) == message


def test_unknown_parameter_did_you_mean():
    with pytest.raises(LossConfigError) as err:
        build_loss("dice(smoth=1)")
    assert str(err.value).startswith("dice: unknown parameter 'smoth' (did you mean 'smooth'?)")


def test_one_line_per_problem():
    with pytest.raises(LossConfigError) as err:
        build_loss("focal(gamma=-1, alpha=2) + dice(smooth=-1)")
    assert str(err.value).splitlines() == [
        "focal: alpha must be <= 1 (got 2)",
        "focal: gamma must be >= 0 (got -1)",
        "dice: smooth must be >= 0 (got -1)",
    ]


def test_mode_dependent_rules():
    with pytest.raises(LossConfigError, match="include_background=False needs mode='multiclass'"):
        build_loss("dice", include_background=False)
    with pytest.raises(LossConfigError, match="class_weights needs mode='multiclass' or 'multilabel'"):
        build_loss("dice", class_weights=[1.0])
    build_loss("dice", mode="multiclass", include_background=False, class_weights=[1.0, 2.0, 3.0])


def test_valid_values_are_kept():
    crit = build_loss("focal(alpha=None, gamma=0) + boundary(theta0=1, theta=7)")
    assert crit.terms[0].params.alpha is None and crit.terms[0].params.gamma == 0
    assert (crit.terms[1].params.theta0, crit.terms[1].params.theta) == (1, 7)
