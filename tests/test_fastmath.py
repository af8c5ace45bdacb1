"""``_fastmath.log1p_unit`` against float64 ``torch.log1p`` over its whole domain [0, 1], eager and compiled."""

from __future__ import annotations

import math

import pytest
import torch

from segloss_registry._fastmath import LOG1P_UNIT_COEFFS, log1p_unit

EPS32 = torch.finfo(torch.float32).eps


def _sweep() -> torch.Tensor:
    """2^24 evenly spaced float32 points of [0, 1], every power of ten down to the smallest
    subnormal, the neighbours of 0 and 1, and the exp(-|x|) of a range of logits."""
    even = torch.linspace(0, 1, 2**24, dtype=torch.float32)
    powers = torch.logspace(-45, 0, 4501, dtype=torch.float64).float()
    edges = torch.tensor([0.0, 1.4e-45, 1.1754944e-38, 1.0 - EPS32 / 2, 1.0], dtype=torch.float32)
    logits = torch.exp(-torch.linspace(0, 110, 100_001, dtype=torch.float32))
    return torch.cat([even, powers, edges, logits])


TINY32 = torch.finfo(torch.float32).tiny


def _max_relative_error(out: torch.Tensor, e: torch.Tensor) -> float:
    """In float32 epsilons, over the normal numbers of [0, 1]; below them (e = exp(-|x|) for
    |x| > 87.3) the absolute error must stay below the smallest normal number."""
    ref = torch.log1p(e.double())
    normal = e >= TINY32
    assert float((out.double()[~normal] - ref[~normal]).abs().max()) < TINY32
    rel = (out.double()[normal] - ref[normal]).abs() / ref[normal]
    return float(rel.max()) / EPS32


def test_the_coefficients_are_close_to_the_series_they_refine() -> None:
    # atanh(s)/s = 1 + s^2/3 + s^4/5 + s^6/7 + ...: the fit may move the later ones, not the first
    assert LOG1P_UNIT_COEFFS[0] == pytest.approx(1 / 3, rel=1e-5)
    assert LOG1P_UNIT_COEFFS[1] == pytest.approx(1 / 5, rel=1e-3)


def test_eager_error_is_within_one_and_a_half_epsilons_over_the_domain() -> None:
    e = _sweep()
    err = _max_relative_error(log1p_unit(e), e)
    assert err <= 1.5, err
    # the library routine, for scale: the polynomial is not much worse than it
    assert _max_relative_error(torch.log1p(e), e) <= 1.5


def test_exact_points_and_non_finite_inputs() -> None:
    out = log1p_unit(torch.tensor([0.0, 1.0, float("nan")]))
    assert out[0].item() == 0.0
    assert out[1].item() == pytest.approx(math.log(2.0), rel=EPS32)
    assert math.isnan(out[2].item())
    tiny = torch.tensor([1e-30, TINY32])  # log1p(e) = e for tiny e: no flush to zero
    assert torch.equal(log1p_unit(tiny), tiny)


@pytest.mark.compile
def test_compiled_error_is_within_one_and_a_half_epsilons() -> None:
    """Inductor's C++ may contract multiply-adds into FMAs: the bound must hold for the code it emits."""
    e = _sweep()
    out = torch.compile(log1p_unit, fullgraph=True)(e)
    assert _max_relative_error(out, e) <= 1.5
