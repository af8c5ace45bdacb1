"""Compiled equals eager (value and gradient, fullgraph) for every seed loss and a weighted composite.

One compiled composite per mode holds all of that mode's losses, so each loss is compared
term by term (``return_terms=True``) while the suite compiles only a few graphs.
"""

from __future__ import annotations

import pytest
import torch

from segloss_registry import build_loss

pytestmark = pytest.mark.compile

SPECS = {
    "binary": "bce + dice + iou + focal + active_contour + boundary",
    "multiclass": "ce + dice(per_image=True) + iou + focal(gamma=1.5) + active_contour + boundary",
    "multilabel": "bce + dice + iou(smooth=0) + focal(alpha=None) + active_contour + boundary",
}


def _inputs(mode: str):
    g = torch.Generator().manual_seed(7)
    C = 1 if mode == "binary" else 3
    x = torch.randn(2, C, 16, 16, generator=g)
    if mode == "multiclass":
        t = torch.randint(0, C, (2, 16, 16), generator=g)
    else:
        t = (torch.rand(2, C, 16, 16, generator=g) > 0.5).float()
    return x, t


def _terms_and_grads(crit, x, t):
    x = x.clone().requires_grad_(True)
    total, terms = crit(x, t, return_terms=True)
    grads = {}
    for key, value in terms.items():
        (grads[key],) = torch.autograd.grad(value, x, retain_graph=True)
    (g_total,) = torch.autograd.grad(total, x)
    return total, terms, grads, g_total


@pytest.mark.parametrize("mode", list(SPECS))
def test_compiled_equals_eager_per_loss(mode):
    x, t = _inputs(mode)
    eager = build_loss(SPECS[mode], mode=mode, compile=False)
    compiled = build_loss(SPECS[mode], mode=mode, compile=True)
    assert compiled.uses_compile(x.device) and not eager.uses_compile(x.device)
    e_total, e_terms, e_grads, e_g = _terms_and_grads(eager, x, t)
    c_total, c_terms, c_grads, c_g = _terms_and_grads(compiled, x, t)
    assert compiled._compiled is not None and not compiled._compile_failed
    for key in e_terms:
        torch.testing.assert_close(c_terms[key], e_terms[key], rtol=1e-5, atol=1e-5, msg=f"{mode} {key} value")
        torch.testing.assert_close(c_grads[key], e_grads[key], rtol=1e-5, atol=1e-5, msg=f"{mode} {key} grad")
    torch.testing.assert_close(c_total, e_total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_g, e_g, rtol=1e-5, atol=1e-5)


def test_weighted_three_term_composite_compiled_equals_eager_3d():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 6, 8, 8, generator=g)
    t = (torch.rand(2, 1, 6, 8, 8, generator=g) > 0.7).float()
    spec = "0.3*bce + 0.5*dice(smooth=0.5) + 2*focal(gamma=2, alpha=0.25)"
    e = _terms_and_grads(build_loss(spec, compile=False), x, t)
    c = _terms_and_grads(build_loss(spec, compile=True), x, t)
    torch.testing.assert_close(c[0], e[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c[3], e[3], rtol=1e-5, atol=1e-5)
    # and the total is the weighted sum of the terms
    terms = e[1]
    torch.testing.assert_close(e[0], 0.3 * terms["bce"] + 0.5 * terms["dice"] + 2 * terms["focal"])


def test_auto_runs_eager_on_the_cpu():
    crit = build_loss("bce+dice")
    assert crit.compile_mode == "auto" and not crit.uses_compile(torch.device("cpu"))
    assert crit.uses_compile(torch.device("cuda"))
