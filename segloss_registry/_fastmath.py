"""``log1p`` on [0, 1] from one division and a short polynomial, for compiled CPU graphs.

Every sigmoid loss needs ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``. On the CPU inductor
evaluates ``log1p`` with SLEEF's general routine, which costs several times an ``exp`` (2-core
CPU, torch 2.13, 8x1x512x512 float32: the compiled forward of BCE 2.23 ms with ``torch.log1p``,
1.54 ms with ``log1p_unit``; ``python profiles/perf_internals.py log1p``). The argument here is always
``e = exp(-|x|)`` in [0, 1], where a fixed polynomial is as accurate as float32 allows:

    log1p(e) = 2 atanh(s) = 2 s + 2 s w R(w),   s = e / (2 + e) in [0, 1/3],   w = s^2 in [0, 1/9],

with ``R(w) = c0 + c1 w + c2 w^2 + c3 w^3`` a least-squares fit (in float64, on Chebyshev nodes,
weighted for the relative error of the result) of ``(atanh(sqrt(w)) / sqrt(w) - 1) / w``, whose
Taylor coefficients are 1/3, 1/5, 1/7, 1/9. Evaluated in float32, the relative error is at most
1.47 float32 epsilons (the rounding of ``s``; the fit's own error is below 5e-9 relative), against
1.0 for ``torch.log1p``: ``tests/test_fastmath.py`` sweeps 2^24 evenly spaced points of [0, 1],
powers of ten down to the smallest normal number (below it the absolute error is under that
number) and ``exp(-|x|)`` for |x| up to 110. ``e = 0`` gives 0 exactly, NaN gives NaN.

Only compiled float32 graphs on the CPU use it (``_compile.cheap_log1p``): there it is fused into
the loss's one loop, and its seven multiply-adds cost less than the call it replaces. Eager code
and other dtypes and devices keep ``torch.log1p``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["LOG1P_UNIT_COEFFS", "log1p_unit"]

LOG1P_UNIT_COEFFS = (0.3333320682, 0.2001080908, 0.140004239, 0.1400756238)
"""``c0 .. c3`` of ``R(w)``; see the module docstring for how they were fitted."""


def log1p_unit(e: Tensor) -> Tensor:
    """``log1p(e)`` for ``e`` in [0, 1] (elementwise, any shape), within 1.5 float32 epsilons relative.

    Outside [0, 1] the result is wrong: callers pass ``exp(-|x|)``.

    Example:
        >>> import torch
        >>> e = torch.tensor([0.0, 1e-30, 0.5, 1.0])
        >>> torch.allclose(log1p_unit(e), torch.log1p(e), rtol=2e-7, atol=0)
        True
    """
    c0, c1, c2, c3 = LOG1P_UNIT_COEFFS
    s = e / (e + 2)
    w = s * s
    r = ((c3 * w + c2) * w + c1) * w + c0
    s2 = s + s
    return s2 + (s2 * w) * r
