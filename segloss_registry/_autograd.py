"""Closed-form backward passes for the shared work of ``Inputs`` (issue 16).

Autograd of the plain formulas keeps every intermediate of every term alive until the
backward (a focal term alone saves four tensors the size of the logits) and runs one kernel
per operator each way. The Functions here keep only what the closed-form gradient needs,
the sigmoid ``p`` and ``lse = log1p(exp(-|x|))`` (computed once per call and shared by every
term) plus the inputs, and compute each gradient in a few fused in-place passes:

- ``Sigmoid``: ``x -> (p, lse)``; ``dp/dx = p (1 - p)`` (``lse`` carries no gradient: the
  quantities derived from it are Functions of ``x`` of their own);
- ``LogSigmoid``: ``log p = min(x, 0) - lse`` or ``log(1 - p) = -max(x, 0) - lse``;
  gradient ``1 - p`` or ``-p``;
- ``BCEElements``: ``max(x, 0) - t x + lse``; gradient ``p - t``;
- ``FocalElements``: ``a_t u^gamma bce`` with ``u = 1 - p_t = p + t - 2 p t``; gradient
  ``a_t (gamma u^(gamma-1) (1 - 2t) p (1 - p) bce + u^gamma (p - t))``, ``bce`` recomputed
  from ``x``, ``t`` and ``lse`` (no transcendental op);
- ``RegionSums``: ``(I, P, T)`` per class, ``I = sum(min(p w, t))`` (soft) or ``sum(p w t)``
  (hard); the backward is a broadcast, ``w (g_I dI + g_P)``.

None of them has a transcendental op in its backward. Every one is checked against autograd
of the plain formula with ``torch.autograd.gradcheck`` in float64 (``tests/test_autograd.py``).
Double backward (``create_graph=True``) is refused with a clear error (``_first_order``); no
loss of the project needs it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["Sigmoid", "LogSigmoid", "BCEElements", "FocalElements", "RegionSums", "focal_modulator", "chunked", "CHUNK"]


CHUNK = 1 << 18
"""Elements per slice of the CPU's chunked passes (1 MiB of float32: every temporary of a
Function's formula then stays in the core's cache, and none is the size of the logits)."""


def _flat(t: Tensor, n: int) -> Tensor | None:
    """``t`` as a flat view of ``n`` elements, as one element when it broadcasts a single value
    (a mean's gradient is an expanded scalar), or None when it can do neither."""
    if t.numel() == n and t.is_contiguous():
        return t.view(-1)
    if t.numel() == 1 or all(st == 0 for st in t.stride()):
        return t.as_strided((1,), (1,))
    return None


def chunked(fn: Any, outputs: int, like: Tensor, *args: Any) -> Any:
    """``fn(*args)`` computed slice by slice of ``CHUNK`` elements into fresh outputs shaped like ``like``.

    On the CPU, for tensors of ``like``'s size that are contiguous (others broadcast a single
    value, or are not tensors): the same values as ``fn(*args)`` (elementwise formulas), with
    the formula's temporaries a slice long instead of a full-size tensor each, and read from
    cache instead of memory. Anything else (an accelerator, a per-channel tensor, a small input)
    runs ``fn(*args)`` as it is. ``fn`` returns one tensor (``outputs == 1``) or a tuple.
    """
    n = like.numel()
    flats = [_flat(a, n) if isinstance(a, Tensor) else a for a in args]
    if like.device.type != "cpu" or n <= 2 * CHUNK or any(
        isinstance(a, Tensor) and f is None for a, f in zip(args, flats)
    ):
        return fn(*args)
    outs = [torch.empty(n, dtype=like.dtype, device=like.device) for _ in range(outputs)]
    for start in range(0, n, CHUNK):
        part = [f[start:start + CHUNK] if isinstance(f, Tensor) and f.numel() == n else f for f in flats]
        res = fn(*part)
        for o, r in zip(outs, res if outputs > 1 else (res,)):
            o[start:start + CHUNK].copy_(r)
    shaped = tuple(o.view(like.shape) for o in outs)
    return shaped if outputs > 1 else shaped[0]


def _first_order() -> None:
    """The backward passes here are first order only: refuse ``create_graph=True``."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "segloss: double backward (create_graph=True) is not supported through the eager loss "
            "internals (closed-form first-order gradients); differentiate the loss once"
        )


def _sigmoid_lse(x: Tensor) -> tuple[Tensor, Tensor]:
    e = torch.exp(x.abs().neg_())  # exp(-|x|), in place on a fresh buffer
    lse = torch.log1p(e)
    p = torch.where(x >= 0, 1.0, e).div_(e.add_(1))  # (1 or e) / (1 + e)
    return p, lse


def _sigmoid_grad(p: Tensor, g: Tensor) -> Tensor:
    return (1 - p).mul_(p).mul_(g)  # g p (1 - p)


def _bce(x: Tensor, t: Tensor, lse: Tensor) -> Tensor:
    return torch.addcmul(lse, t, x, value=-1.0).add_(torch.clamp(x, min=0))


def _bce_grad(p: Tensor, t: Tensor, g: Tensor) -> Tensor:
    return (p - t).mul_(g)


class Sigmoid(torch.autograd.Function):
    """``x -> (sigmoid(x), log1p(exp(-|x|)))`` from one exp and one log1p; only ``p`` is differentiable."""

    @staticmethod
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override, unused-ignore]
        return chunked(_sigmoid_lse, 2, x, x)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]) -> None:
        ctx.save_for_backward(output[0])
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_p: Tensor | None, g_lse: Tensor | None) -> Tensor | None:  # type: ignore[override, unused-ignore]
        _first_order()
        if g_p is None:
            return None
        (p,) = ctx.saved_tensors
        out: Tensor = chunked(_sigmoid_grad, 1, p, p, g_p)
        return out


class LogSigmoid(torch.autograd.Function):
    """``log p`` (``sign=1``) or ``log(1 - p)`` (``sign=-1``) from ``x`` and the shared ``p``, ``lse``."""

    @staticmethod
    def forward(x: Tensor, p: Tensor, lse: Tensor, sign: int) -> Tensor:  # type: ignore[override, unused-ignore]
        if sign > 0:
            return torch.clamp(x, max=0).sub_(lse)  # min(x, 0) - lse
        return torch.clamp(x, min=0).neg_().sub_(lse)  # -max(x, 0) - lse

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor, int], output: Tensor) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.sign = inputs[3]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        (p,) = ctx.saved_tensors
        grad = (1 - p).mul_(g) if ctx.sign > 0 else (p * g).neg_()
        return grad, None, None, None


class BCEElements(torch.autograd.Function):
    """Per-element BCE from logits, ``softplus(x) - t x = max(x, 0) - t x + lse``; gradient ``p - t``."""

    @staticmethod
    def forward(x: Tensor, t: Tensor, p: Tensor, lse: Tensor) -> Tensor:  # type: ignore[override, unused-ignore]
        return chunked(_bce, 1, x, x, t, lse)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[1], inputs[2])

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        t, p = ctx.saved_tensors
        return chunked(_bce_grad, 1, p, p, t, g), None, None, None


def focal_modulator(u: Tensor, gamma: float) -> tuple[Tensor, Tensor | None]:
    """``(u^gamma, d u^gamma / du)`` as the focal plugin computes the power: ``u`` clamped at 0
    (at 1e-12 for gamma < 1, where the slope at 0 is infinite), the clamp's gradient 0 below it;
    the derivative is None when not asked (``gamma == 0``)."""
    if gamma == 2.0:
        return u * u, 2 * u
    lo = 1e-12 if gamma < 1 else 0.0
    base = u.clamp_min(lo)
    mod = base**gamma
    if gamma == 0:
        return mod, None
    d = base ** (gamma - 1) * gamma
    return mod, d.masked_fill(u < lo, 0.0)  # out of place: also traced into compiled graphs


def _focal(x: Tensor, t: Tensor, p: Tensor, lse: Tensor, gamma: float, alpha: float | Tensor | None) -> Tensor:
    bce = _bce(x, t, lse)
    if gamma > 0:
        u = torch.addcmul(t, p, 1 - 2 * t)
        bce = bce.mul_(focal_modulator(u, gamma)[0])
    if alpha is not None:
        bce = bce.mul_(t * (2 * alpha - 1) + (1 - alpha))
    return bce


def _focal_grad(x: Tensor, t: Tensor, p: Tensor, lse: Tensor, g: Tensor, gamma: float,
                alpha: float | Tensor | None) -> Tensor:
    grad = p - t  # d bce / dx; the buffers below are reused in place
    if gamma > 0:
        one_m2t = (-2 * t).add_(1)
        u = torch.addcmul(t, p, one_m2t)
        mod, dmod = (None, u) if gamma == 2.0 else focal_modulator(u, gamma)  # gamma 2: u^2 and 2u in place
        side = None
        if dmod is not None:  # bce dmod (1 - 2t) p (1 - p), in the buffer of the recomputed bce
            side = _bce(x, t, lse)
            side.mul_(dmod).mul_(one_m2t).mul_(p)
            side.mul_(one_m2t.copy_(p).neg_().add_(1))  # one_m2t's buffer now holds 1 - p
            if gamma == 2.0:
                side.mul_(2)
        if mod is None:
            grad.mul_(u).mul_(u)
        else:
            grad.mul_(mod)
        if side is not None:
            grad.add_(side)
    if alpha is not None:
        grad.mul_(torch.mul(t, 2 * alpha - 1).add_(1 - alpha))
    return grad.mul_(g)


class FocalElements(torch.autograd.Function):
    """Per-element binary focal loss ``a_t u^gamma bce``, ``u = p + t - 2 p t``, ``a_t = a t + (1 - a)(1 - t)``.

    ``alpha``: None (no weighting), a float, or a tensor broadcasting against ``t`` (per channel).
    """

    @staticmethod
    def forward(x: Tensor, t: Tensor, p: Tensor, lse: Tensor, gamma: float,  # type: ignore[override, unused-ignore]
                alpha: float | Tensor | None) -> Tensor:
        return chunked(_focal, 1, x, x, t, p, lse, gamma, alpha)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, t, p, lse, gamma, alpha = inputs
        ctx.save_for_backward(x, t, p, lse)
        ctx.gamma, ctx.alpha = gamma, alpha

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        x, t, p, lse = ctx.saved_tensors
        return chunked(_focal_grad, 1, x, x, t, p, lse, g, ctx.gamma, ctx.alpha), None, None, None, None, None


def _one_sum(p: Tensor, t: Tensor, dims: tuple[int, ...]) -> bool:
    """Whether ``dims`` reduce contiguous CPU ``p`` and ``t`` of one shape to one value per class, C = 1."""
    return (p.device.type == "cpu" and p.shape == t.shape and p.dim() > 1 and p.shape[1] == 1
            and set(dims) == set(range(p.dim())) - {1} and p.is_contiguous() and t.is_contiguous()
            and p.numel() > 2 * CHUNK)


def _chunked_soft_sums(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(sum min(p, t), sum p, sum t)`` of one class, shape (1,), slice by slice (no full-size ``min``)."""
    fp, ft = p.view(-1), t.view(-1)
    inter = torch.zeros((), dtype=p.dtype, device=p.device)
    for start in range(0, fp.numel(), CHUNK):
        inter += torch.minimum(fp[start:start + CHUNK], ft[start:start + CHUNK]).sum()
    return inter.reshape(1), fp.sum().reshape(1), ft.sum().reshape(1)


def _soft_region_grad(p: Tensor, t: Tensor, gi: Tensor, gp: Tensor | None) -> Tensor:
    # d min(p, t)/dp: 1 where p < t, 1/2 where p == t, 0 where p > t
    grad = torch.where(p < t, gi, torch.where(p == t, gi * 0.5, torch.zeros_like(gi)))
    return grad if gp is None else grad.add_(gp)


class RegionSums(torch.autograd.Function):
    """``(I, P, T)`` summed over ``dims``: ``I = sum(min(p w, t_w))`` (``soft``) or ``sum(p w t)``,
    ``P = sum(p w)``, ``T = sum(t_w)``; ``w`` None or weights broadcasting against ``p``;
    ``t_w = w t`` when ``weigh_t`` (float weights), else ``t`` (0/1 weights: ``t`` is already 0
    where ``w`` is). ``t`` carries no gradient. The ties of ``min`` split the gradient in
    halves, as ``torch.minimum``.
    """

    @staticmethod
    def forward(p: Tensor, t: Tensor, w: Tensor | None, dims: tuple[int, ...],  # type: ignore[override, unused-ignore]
                soft: bool, weigh_t: bool) -> tuple[Tensor, Tensor, Tensor]:
        if w is None and soft and _one_sum(p, t, dims):  # one class summed over everything: by slices
            return _chunked_soft_sums(p, t)
        pw = p if w is None else p * w
        tw = t * w if weigh_t and w is not None else t
        inter = torch.minimum(pw, tw) if soft else pw * t
        return inter.sum(dims), pw.sum(dims), tw.sum(dims)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
        p, t, w, dims, soft, weigh_t = inputs
        ctx.save_for_backward(p, t, w)
        ctx.dims, ctx.soft, ctx.shape, ctx.weigh_t = dims, soft, p.shape, weigh_t
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_i: Tensor | None, g_p: Tensor | None,  # type: ignore[override, unused-ignore]
                 g_t: Tensor | None) -> tuple[Tensor | None, None, None, None, None, None]:
        _first_order()
        p, t, w = ctx.saved_tensors
        if g_i is None and g_p is None:
            return None, None, None, None, None, None
        dims, shape = ctx.dims, ctx.shape

        def expand(g: Tensor) -> Tensor:  # a sum's gradient: the reduced axes back as size-1 axes
            view = list(g.shape)
            for d in sorted(dims):
                view.insert(d, 1)
            return g.reshape(view)

        grad: Tensor
        if g_i is not None and w is None and ctx.soft and _one_sum(p, t, dims):  # by slices, as the forward
            return (chunked(_soft_region_grad, 1, p, p, t, expand(g_i), None if g_p is None else expand(g_p)),
                    None, None, None, None, None)
        if g_i is not None:
            gi = expand(g_i)
            if ctx.soft:
                pw = p if w is None else p * w
                tw = t * w if ctx.weigh_t and w is not None else t
                # d min(a, t)/da: 1 where a < t, 1/2 where a == t, 0 where a > t
                grad = torch.where(pw < tw, gi, torch.where(pw == tw, gi * 0.5, torch.zeros_like(gi)))
            else:
                grad = t * gi
            if g_p is not None:
                grad = grad.add_(expand(g_p))
        else:
            assert g_p is not None
            grad = expand(g_p).expand(shape).clone()
        if w is not None:
            grad = grad.mul_(w) if grad.shape == torch.broadcast_shapes(grad.shape, w.shape) else grad * w
        if grad.shape != shape:
            grad = grad.expand(shape).contiguous()
        return grad, None, None, None, None, None
