"""Closed-form backward passes for the shared work of ``Inputs`` (issue 16).

Autograd of the plain formulas keeps every intermediate of every term alive until the
backward (a focal term alone saves four tensors the size of the logits), runs one kernel per
operator each way, and gives every term a gradient buffer of its own that is then added to
the others. The Functions here keep only what the closed-form gradient needs, the sigmoid
``p`` and ``lse = log1p(exp(-|x|))`` (computed once per call and shared by every term) plus
the inputs, and add each term's gradient straight into **one buffer per call**
(``EagerLogits``): every Function takes the call's ``anchor`` (a 0-dim tensor made from the
logits by ``_Gather``) as its differentiable input, its backward adds ``d term / d x`` into
the buffer slice by slice, and ``_Gather``'s backward, which autograd runs after all of them,
hands the buffer over as the gradient of the logits.

- ``Sigmoid``: ``x -> (p, lse)``; ``dp/dx = p (1 - p)`` (``lse`` carries no gradient: the
  quantities derived from it are Functions of ``x`` of their own);
- ``Softmax`` (multiclass): ``x -> (p, log p)``; every term adds its share of
  ``G = p g_p + g_logp`` to the buffer, whose sum becomes ``G - p sum_c G`` once;
- ``LogSigmoid``: ``log p = min(x, 0) - lse`` or ``log(1 - p) = -max(x, 0) - lse``;
  gradient ``1 - p`` or ``-p``;
- ``BCEElements``: ``max(x, 0) - t x + lse``; gradient ``p - t``;
- ``FocalElements``: ``a_t u^gamma bce`` with ``u = 1 - p_t = p + t - 2 p t``; gradient
  ``a_t (gamma u^(gamma-1) (1 - 2t) p (1 - p) bce + u^gamma (p - t))``, ``bce`` recomputed
  from ``x``, ``t`` and ``lse`` (no transcendental op);
- ``ElementSum``: ``sum(f m)`` of the BCE or focal elements ``f`` and a mask ``m``, with no
  per-element tensor (the means of ``Inputs.bce_mean`` and ``Inputs.focal_mean``);
- ``LogProbSum``: ``sum(w log p)`` of the softmax, one dot product (cross-entropy);
- ``RegionSums``: ``(I, P, T)`` per class, ``I = sum(min(p w, t))`` (soft) or ``sum(p w t)``
  (hard); the backward is a broadcast, ``w (g_I dI + g_P)`` (times ``p (1 - p)`` into the
  buffer when ``p`` is the sigmoid of the call's logits).

None of them has a transcendental op in its backward. Every one is checked against autograd
of the plain formula with ``torch.autograd.gradcheck`` in float64 (``tests/test_autograd.py``).
Double backward (``create_graph=True``) is refused with a clear error (``_first_order``); no
loss of the project needs it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["EagerLogits", "Sigmoid", "Softmax", "LogSigmoid", "BCEElements", "FocalElements", "ElementSum",
           "LogProbSum", "Elementwise", "BCE_ELEMENTS", "FOCAL_ELEMENTS", "RegionSums", "focal_modulator", "chunked",
           "chunked_sum", "CHUNK"]


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


def _plan(like: Tensor, args: tuple[Any, ...]) -> list[Any] | None:
    """The flat forms of ``args`` when the slice-by-slice path serves (CPU, large, every tensor
    flat or a broadcast single value), else None."""
    n = like.numel()
    flats = [_flat(a, n) if isinstance(a, Tensor) else a for a in args]
    if like.device.type != "cpu" or n <= 2 * CHUNK or any(
        isinstance(a, Tensor) and f is None for a, f in zip(args, flats)
    ):
        return None
    return flats


def _slices(flats: list[Any], n: int) -> Any:
    for start in range(0, n, CHUNK):
        yield start, [f[start:start + CHUNK] if isinstance(f, Tensor) and f.numel() == n else f for f in flats]


def chunked(fn: Any, outputs: int, like: Tensor, *args: Any) -> Any:
    """``fn(*args)`` computed slice by slice of ``CHUNK`` elements into fresh outputs shaped like ``like``.

    On the CPU, for tensors of ``like``'s size that are contiguous (others broadcast a single
    value, or are not tensors): the same values as ``fn(*args)`` (elementwise formulas), with
    the formula's temporaries a slice long instead of a full-size tensor each, and read from
    cache instead of memory. Anything else (an accelerator, a per-channel tensor, a small input)
    runs ``fn(*args)`` as it is. ``fn`` returns one tensor (``outputs == 1``) or a tuple.
    """
    flats = _plan(like, args)
    if flats is None:
        return fn(*args)
    outs = tuple(torch.empty(like.shape, dtype=like.dtype, device=like.device) for _ in range(outputs))
    flat_outs = [o.view(-1) for o in outs]
    for start, part in _slices(flats, like.numel()):
        res = fn(*part)
        for o, r in zip(flat_outs, res if outputs > 1 else (res,)):
            o[start:start + CHUNK].copy_(r)
    return outs if outputs > 1 else outs[0]


class EagerLogits:
    """The logits of one eager call and the one buffer their gradient is gathered in.

    ``x``: the logits (N, C, *S). ``anchor()``: the 0-dim tensor that every Function of this
    module takes as its differentiable input (a fresh one per call; None when ``x`` needs no
    gradient or grad mode is off); the caller keeps it, this object does not (a reference to
    it from here would be a cycle through the autograd graph). ``add(fn, *args)`` adds
    ``fn(*args)``, a tensor shaped like ``x`` (or broadcasting to it), into the buffer slice by
    slice as ``chunked`` computes; ``_Gather``'s backward takes the buffer and returns it as the
    gradient of ``x``, so a backward pass fills one buffer and the next one
    (``retain_graph=True``) starts another.
    """

    def __init__(self, x: Tensor):
        self.x = x
        self.buf: Tensor | None = None
        # multiclass: the softmax (detached: no reference to the graph), set by ``Softmax``; the
        # buffer then gathers G = p g_p + g_logp, and ``take`` returns G - p sum_c G
        self.softmax_p: Tensor | None = None

    def through_p(self, p: Tensor, g: Tensor) -> Tensor:
        """What a gradient ``g`` of the probabilities adds to the buffer: ``g p (1 - p)`` (sigmoid,
        the gradient of the logits), or ``g p`` (softmax, its share of G)."""
        return _sigmoid_grad(p, g) if self.softmax_p is None else p * g

    def anchor(self) -> Tensor | None:
        if not (self.x.requires_grad and torch.is_grad_enabled()):
            return None
        return _Gather.apply(self.x, self)  # type: ignore[no-untyped-call, no-any-return]

    def add(self, fn: Any, *args: Any) -> None:
        like = self.x
        flats = _plan(like, args)
        if flats is None:
            r = fn(*args)
            if self.buf is None:
                self.buf = r.expand(like.shape).contiguous() if r.shape != like.shape else r
            else:
                self.buf.add_(r)
            return
        first = self.buf is None
        if first:
            self.buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        assert self.buf is not None
        flat = self.buf.view(-1)
        for start, part in _slices(flats, like.numel()):
            out = flat[start:start + CHUNK]
            if first:
                out.copy_(fn(*part))
            else:
                out.add_(fn(*part))

    def add_tensor(self, r: Tensor, owned: bool = False) -> None:
        """Adds ``r`` (shaped like ``x``, or broadcasting); ``owned``: the caller's fresh tensor,
        which becomes the buffer when it is the first."""
        if self.buf is None:
            fits = r.shape == self.x.shape and r.is_contiguous()
            self.buf = r if owned and fits else r.expand(self.x.shape).clone(memory_format=torch.contiguous_format)
        else:
            self.buf.add_(r)

    def add_grad_p(self, p: Tensor, grad: Tensor) -> None:
        """Adds what ``grad``, a gradient of the probabilities the caller owns (it is overwritten),
        contributes: by slices through ``through_p`` (sigmoid), or ``grad * p`` in place (softmax)."""
        if self.softmax_p is None:
            self.add(_sigmoid_grad, p, grad)
        else:
            self.add_tensor(grad.mul_(p) if grad.shape == p.shape else grad * p, owned=True)

    def take(self) -> Tensor | None:
        buf, self.buf = self.buf, None
        if buf is not None and self.softmax_p is not None:  # dx_j = G_j - p_j sum_c G_c, in place
            buf.addcmul_(self.softmax_p, buf.sum(1, keepdim=True), value=-1.0)
        return buf


class _Gather(torch.autograd.Function):
    """``x -> 0``, a 0-dim anchor; its backward returns what the call's Functions added up."""

    @staticmethod
    def forward(x: Tensor, logits: EagerLogits) -> Tensor:  # type: ignore[override, unused-ignore]
        return x.new_zeros(())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, EagerLogits], output: Tensor) -> None:
        ctx.logits = inputs[1]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g: Tensor | None) -> tuple[Tensor | None, None]:  # type: ignore[override, unused-ignore]
        return ctx.logits.take(), None


def _nothing(anchor_like: Tensor) -> Tensor:
    """The anchor's own gradient (the real one went into the buffer)."""
    return anchor_like.new_zeros(())


def _first_order() -> None:
    """The backward passes here are first order only: refuse ``create_graph=True``."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "segloss: double backward (create_graph=True) is not supported through the eager loss "
            "internals (closed-form first-order gradients); differentiate the loss once"
        )


def _sigmoid_lse(x: Tensor) -> tuple[Tensor, Tensor]:
    # torch.sigmoid, not (1 or e) / (1 + e) through torch.where: a CPU kernel that reads a bool
    # mask runs ~15x slower than the float pass (1.0 vs 0.06 ms per 2^18 elements)
    lse = torch.log1p(torch.exp(x.abs().neg_()))  # log1p(exp(-|x|)), in place on a fresh buffer
    return torch.sigmoid(x), lse


def _sigmoid_grad(p: Tensor, g: Tensor) -> Tensor:
    return (1 - p).mul_(p).mul_(g)  # g p (1 - p)


def _bce(x: Tensor, t: Tensor, lse: Tensor) -> Tensor:
    return torch.addcmul(lse, t, x, value=-1.0).add_(torch.clamp(x, min=0))


def _bce_grad(p: Tensor, t: Tensor, g: Tensor) -> Tensor:
    return (p - t).mul_(g)


_Lg = EagerLogits


class Sigmoid(torch.autograd.Function):
    """``x -> (sigmoid(x), log1p(exp(-|x|)))`` from one exp and one log1p; only ``p`` is differentiable.

    ``Sigmoid.apply(anchor, logits)`` (``logits`` an ``EagerLogits``, ``anchor`` its anchor).
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg) -> tuple[Tensor, Tensor]:  # type: ignore[override, unused-ignore]
        return chunked(_sigmoid_lse, 2, lg.x, lg.x)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor | None, _Lg], output: tuple[Tensor, Tensor]) -> None:
        ctx.save_for_backward(output[0])
        ctx.lg = inputs[1]
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_p: Tensor | None, g_lse: Tensor | None) -> tuple[Tensor | None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        if g_p is None:
            return None, None
        (p,) = ctx.saved_tensors
        ctx.lg.add(_sigmoid_grad, p, g_p)
        return _nothing(p), None


class Softmax(torch.autograd.Function):
    """``x -> (softmax(x, 1), log_softmax(x, 1))``, multiclass; ``Softmax.apply(anchor, logits)``.

    The backward adds ``G = p g_p + g_logp`` into the call's buffer, which the other Functions
    fill with their share of ``G`` too; ``EagerLogits.take`` turns the sum into the gradient of
    the logits, ``G - p sum_c G``, once for every term.
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg) -> tuple[Tensor, Tensor]:  # type: ignore[override, unused-ignore]
        log_p = torch.log_softmax(lg.x, 1)
        return log_p.exp(), log_p

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor | None, _Lg], output: tuple[Tensor, Tensor]) -> None:
        ctx.save_for_backward(output[0])
        ctx.lg = inputs[1]
        ctx.lg.softmax_p = output[0].detach()
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_p: Tensor | None, g_lp: Tensor | None) -> tuple[Tensor | None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        (p,) = ctx.saved_tensors
        if g_lp is not None:
            ctx.lg.add_tensor(g_lp)
        if g_p is not None:
            if ctx.lg.buf is None:
                ctx.lg.add_tensor(p * g_p, owned=True)
            else:
                ctx.lg.buf.addcmul_(p, g_p)
        return (None if g_p is None and g_lp is None else _nothing(p)), None


def _log_sigmoid_grad(p: Tensor, g: Tensor, sign: int) -> Tensor:
    return (1 - p).mul_(g) if sign > 0 else (p * g).neg_()


class LogSigmoid(torch.autograd.Function):
    """``log p`` (``sign=1``) or ``log(1 - p)`` (``sign=-1``) from ``x`` and the shared ``p``, ``lse``.

    ``LogSigmoid.apply(anchor, logits, p, lse, sign)``.
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg, p: Tensor, lse: Tensor, sign: int) -> Tensor:  # type: ignore[override, unused-ignore]
        if sign > 0:
            return torch.clamp(lg.x, max=0).sub_(lse)  # min(x, 0) - lse
        return torch.clamp(lg.x, min=0).neg_().sub_(lse)  # -max(x, 0) - lse

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[2])
        ctx.lg, ctx.sign = inputs[1], inputs[4]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        (p,) = ctx.saved_tensors
        ctx.lg.add(_log_sigmoid_grad, p, g, ctx.sign)
        return _nothing(p), None, None, None, None


class BCEElements(torch.autograd.Function):
    """Per-element BCE from logits, ``softplus(x) - t x = max(x, 0) - t x + lse``; gradient ``p - t``.

    ``BCEElements.apply(anchor, logits, t, p, lse)``.
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg, t: Tensor, p: Tensor, lse: Tensor) -> Tensor:  # type: ignore[override, unused-ignore]
        return chunked(_bce, 1, lg.x, lg.x, t, lse)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[2], inputs[3])
        ctx.lg = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        t, p = ctx.saved_tensors
        ctx.lg.add(_bce_grad, p, t, g)
        return _nothing(p), None, None, None, None


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
        u = torch.lerp(p, torch.rsub(p, 1), t)  # 1 - p_t = p + t - 2 p t, in two passes
        bce = bce.mul_(u).mul_(u) if gamma == 2.0 else bce.mul_(focal_modulator(u, gamma)[0])
    if alpha is not None:
        bce = bce.mul_(torch.mul(t, 2 * alpha - 1).add_(1 - alpha))
    return bce


def _focal_grad(x: Tensor, t: Tensor, p: Tensor, lse: Tensor, g: Tensor, gamma: float,
                alpha: float | Tensor | None) -> Tensor:
    """``g d(a_t u^gamma bce)/dx = g a_t (u^gamma (p - t) + bce d(u^gamma)/du (1 - 2t) p (1 - p))``, in
    17 passes for gamma 2 (the temporaries reused in place; ``g`` folded into ``a_t``)."""
    grad = p - t  # d bce / dx
    if gamma > 0:
        q = torch.rsub(p, 1)
        u = torch.lerp(p, q, t)  # 1 - p_t = p + t - 2 p t
        mod, dmod = (None, u) if gamma == 2.0 else focal_modulator(u, gamma)  # gamma 2: u^2 and (2) u
        side = None
        if dmod is not None:  # bce dmod (1 - 2t) p (1 - p), in the buffer of the recomputed bce
            side = _bce(x, t, lse).mul_(dmod).mul_(torch.rsub(t, 1, alpha=2)).mul_(q.mul_(p))
        if mod is None:
            grad.mul_(u).mul_(u)
        else:
            grad.mul_(mod)
        if side is not None:
            grad.add_(side, alpha=2.0 if gamma == 2.0 else 1.0)
    if alpha is None:
        return grad.mul_(g)
    return grad.mul_(torch.mul(t, (2 * alpha - 1) * g).add_((1 - alpha) * g))  # a_t g


class FocalElements(torch.autograd.Function):
    """Per-element binary focal loss ``a_t u^gamma bce``, ``u = p + t - 2 p t``, ``a_t = a t + (1 - a)(1 - t)``.

    ``FocalElements.apply(anchor, logits, t, p, lse, gamma, alpha)``; ``alpha``: None (no
    weighting), a float, or a tensor broadcasting against ``t`` (per channel).
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg, t: Tensor, p: Tensor, lse: Tensor,  # type: ignore[override, unused-ignore]
                gamma: float, alpha: float | Tensor | None) -> Tensor:
        return chunked(_focal, 1, lg.x, lg.x, t, p, lse, gamma, alpha)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _, lg, t, p, lse, gamma, alpha = inputs
        ctx.save_for_backward(t, p, lse)
        ctx.lg, ctx.gamma, ctx.alpha = lg, gamma, alpha

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        t, p, lse = ctx.saved_tensors
        ctx.lg.add(_focal_grad, ctx.lg.x, t, p, lse, g, ctx.gamma, ctx.alpha)
        return _nothing(p), None, None, None, None, None, None


class Elementwise(NamedTuple):
    """A per-element formula of ``(x, t, p, lse, gamma, alpha)`` and its gradient times ``g``
    (``(x, t, p, lse, g, gamma, alpha)``), as ``ElementSum`` takes them."""

    forward: Any
    backward: Any


BCE_ELEMENTS = Elementwise(lambda x, t, p, lse, *_: _bce(x, t, lse), lambda x, t, p, lse, g, *_: _bce_grad(p, t, g))
FOCAL_ELEMENTS = Elementwise(_focal, _focal_grad)


def _weighted(fn: Any, n_args: int) -> Any:
    """``fn(*args) * m`` with ``m`` the argument after the first ``n_args`` (None: ``fn(*args)``)."""
    def run(*a: Any) -> Tensor:
        out: Tensor = fn(*a[:n_args], *a[n_args + 1:])
        return out if a[n_args] is None else out.mul_(a[n_args])
    return run


def chunked_sum(fn: Any, like: Tensor, *args: Any) -> Tensor:
    """``fn(*args).sum()`` (0-dim) slice by slice, as ``chunked``: no full-size tensor at all."""
    flats = _plan(like, args)
    if flats is None:
        return fn(*args).sum()  # type: ignore[no-any-return]
    return torch.stack([fn(*part).sum() for _, part in _slices(flats, like.numel())]).sum()


class ElementSum(torch.autograd.Function):
    """``sum(f(x) * m)`` of a per-element formula (an ``Elementwise``: ``BCE_ELEMENTS``,
    ``FOCAL_ELEMENTS``), a 0-dim tensor, with no per-element tensor:
    ``ElementSum.apply(anchor, logits, formula, t, p, lse, m, gamma, alpha)``.

    ``m``: None, or weights shaped like ``x`` or broadcasting to it (the mask); ``gamma``,
    ``alpha`` as ``FocalElements`` (``BCE_ELEMENTS`` ignores them). The backward adds
    ``g f'(x) m`` into the call's buffer slice by slice. The sum of a mean then takes no pass of
    its own, and the forward no buffer the size of the logits.
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg, formula: Elementwise, t: Tensor, p: Tensor, lse: Tensor,  # type: ignore[override, unused-ignore]
                m: Tensor | None, gamma: float, alpha: float | Tensor | None) -> Tensor:
        fwd = _weighted(formula.forward, 4)
        return chunked_sum(fwd, lg.x, lg.x, t, p, lse, m, gamma, alpha)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _, lg, formula, t, p, lse, m, gamma, alpha = inputs
        ctx.save_for_backward(t, p, lse, m)
        ctx.lg, ctx.formula, ctx.gamma, ctx.alpha = lg, formula, gamma, alpha

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override, unused-ignore]
        _first_order()
        t, p, lse, m = ctx.saved_tensors
        grad = _weighted(ctx.formula.backward, 5)
        ctx.lg.add(grad, ctx.lg.x, t, p, lse, g.reshape(1), m, ctx.gamma, ctx.alpha)
        return (_nothing(p),) + (None,) * 8


class LogProbSum(torch.autograd.Function):
    """``sum(w log p)`` of the softmax's ``log p`` (given detached) and weights ``w`` of its shape,
    a 0-dim tensor: ``LogProbSum.apply(anchor, logits, log_p, w)``. The forward is one dot product
    (no per-element tensor), the backward adds ``g w`` into the call's buffer (G's share).
    """

    @staticmethod
    def forward(anchor: Tensor | None, lg: _Lg, log_p: Tensor, w: Tensor) -> Tensor:  # type: ignore[override, unused-ignore]
        if log_p.is_contiguous() and w.is_contiguous() and w.shape == log_p.shape:
            return torch.dot(w.view(-1), log_p.view(-1))
        return (w * log_p).sum()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[3])
        ctx.lg = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override, unused-ignore]
        _first_order()
        (w,) = ctx.saved_tensors
        lg = ctx.lg
        if lg.buf is None:
            lg.add_tensor(w * g, owned=True)
        else:
            lg.buf.addcmul_(w, g)
        return _nothing(w), None, None, None


def _one_sum(p: Tensor, t: Tensor, dims: tuple[int, ...]) -> bool:
    """Whether ``dims`` reduce contiguous CPU ``p`` and ``t`` of one shape to one value per class, C = 1."""
    return (p.device.type == "cpu" and p.shape == t.shape and p.dim() > 1 and p.shape[1] == 1
            and set(dims) == set(range(p.dim())) - {1} and p.is_contiguous() and t.is_contiguous()
            and p.numel() > 2 * CHUNK)


def _dot_sums(p: Tensor, t: Tensor, dims: tuple[int, ...]) -> bool:
    """Whether ``sum(p t)`` over ``dims`` (all spatial axes, with or without the batch) can be one
    dot product per sample and class: contiguous, one shape (no per-element product tensor)."""
    spatial = set(range(2, p.dim()))
    return (p.shape == t.shape and p.dim() > 2 and p.is_contiguous() and t.is_contiguous()
            and set(dims) in (spatial, spatial | {0}) and p.numel() > 0)


_MAX_DOT_ROWS = 512
"""Rows (samples x classes) up to which ``_row_dots`` loops over ``torch.dot``."""


def _row_dots(p: Tensor, t: Tensor) -> Tensor:
    """``(p t).sum(spatial axes)`` of contiguous (N, C, *S) tensors, (N, C), as one ``torch.dot`` per
    sample and class: no per-element product tensor. ``torch.bmm`` of (N C, 1, S) by (N C, S, 1), which
    the eager path used before, computes the same without a Python loop but is slower at every size
    measured (``python profiles/perf_internals.py dots``, 2-core CPU, torch 2.13: 8x4x256x256 0.86 ms
    against 7.0; 2x16x128x128 0.47 against 1.8; 2x150x128x128 5.1 against 6.4). Multiplying and summing
    is faster for short rows (0.25 and 3.6 ms at the last two sizes) but allocates a tensor the size of
    the logits, which eager's peak memory is kept free of. Past ``_MAX_DOT_ROWS`` rows (the loop's few
    microseconds a row would add up), and off the CPU (one kernel launch a row), ``bmm`` serves."""
    n, c = p.shape[:2]
    pv, tv = p.view(n * c, -1), t.view(n * c, -1)
    if n * c > _MAX_DOT_ROWS or p.device.type != "cpu":
        return torch.bmm(pv.unsqueeze(1), tv.unsqueeze(2)).view(n, c)
    return torch.stack([torch.dot(pv[i], tv[i]) for i in range(n * c)]).view(n, c)



def _chunked_soft_sums(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(sum min(p, t), sum p, sum t)`` of one class, shape (1,), slice by slice (no full-size ``min``)."""
    return chunked_sum(torch.minimum, p, p, t).reshape(1), p.sum().reshape(1), t.sum().reshape(1)


def _soft_region_grad(p: Tensor, t: Tensor, gi: Tensor, gp: Tensor | None, through: Any = None) -> Tensor:
    # d min(p, t)/dp: 1 where p < t, 1/2 where p == t, 0 where p > t, i.e. (1 + sign(t - p)) / 2,
    # in float ops only (no bool mask, see ``_sigmoid_lse``); then ``through(p, grad)`` if given
    grad = (t - p).sign_().add_(1).mul_(gi * 0.5)
    grad = grad if gp is None else grad.add_(gp)
    return grad if through is None else through(p, grad)


class RegionSums(torch.autograd.Function):
    """``(I, P, T)`` summed over ``dims``: ``I = sum(min(p w, t_w))`` (``soft``) or ``sum(p w t)``,
    ``P = sum(p w)``, ``T = sum(t_w)``; ``w`` None or weights broadcasting against ``p``;
    ``t_w = w t`` when ``weigh_t`` (float weights), else ``t`` (0/1 weights: ``t`` is already 0
    where ``w`` is). ``t`` carries no gradient. The ties of ``min`` split the gradient in
    halves, as ``torch.minimum``.

    ``RegionSums.apply(p, t, w, dims, soft, weigh_t)``: the gradient goes to ``p``. With
    ``anchor, logits`` after them: ``p`` is the (detached) sigmoid or softmax of ``logits.x``
    and the gradient goes into the call's one buffer (``EagerLogits.through_p``), in the same
    pass.
    """

    @staticmethod
    def forward(p: Tensor, t: Tensor, w: Tensor | None, dims: tuple[int, ...],  # type: ignore[override, unused-ignore]
                soft: bool, weigh_t: bool, anchor: Tensor | None = None,
                lg: _Lg | None = None) -> tuple[Tensor, Tensor, Tensor]:
        if w is None and soft and _one_sum(p, t, dims):  # one class summed over everything: by slices
            return _chunked_soft_sums(p, t)
        if not soft and w is None and _dot_sums(p, t, dims):  # sum(p t) per class as dot products
            inter = _row_dots(p, t)
            return (inter.sum(0) if 0 in dims else inter), p.sum(dims), t.sum(dims)
        pw = p if w is None else p * w
        tw = t * w if weigh_t and w is not None else t
        inter = torch.minimum(pw, tw) if soft else pw * t
        return inter.sum(dims), pw.sum(dims), tw.sum(dims)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
        p, t, w, dims, soft, weigh_t, _, lg = (*inputs, None, None)[:8]
        ctx.save_for_backward(p, t, w)
        ctx.dims, ctx.soft, ctx.shape, ctx.weigh_t, ctx.lg = dims, soft, p.shape, weigh_t, lg
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g_i: Tensor | None, g_p: Tensor | None,  # type: ignore[override, unused-ignore]
                 g_t: Tensor | None) -> tuple[Tensor | None, None, None, None, None, None, Tensor | None, None]:
        _first_order()
        if g_i is None and g_p is None:
            return None, None, None, None, None, None, None, None
        if ctx.lg is None:
            return RegionSums._grad(ctx, g_i, g_p), None, None, None, None, None, None, None
        RegionSums._grad(ctx, g_i, g_p)
        return None, None, None, None, None, None, _nothing(ctx.saved_tensors[0]), None

    @staticmethod
    def _grad(ctx: Any, g_i: Tensor | None, g_p: Tensor | None) -> Tensor | None:
        """The gradient of ``p``; or, with ``ctx.lg``, that of the logits added into its buffer (None)."""
        p, t, w = ctx.saved_tensors
        dims, shape, lg = ctx.dims, ctx.shape, ctx.lg

        def expand(g: Tensor) -> Tensor:  # a sum's gradient: the reduced axes back as size-1 axes
            view = list(g.shape)
            for d in sorted(dims):
                view.insert(d, 1)
            return g.reshape(view)

        grad: Tensor
        if g_i is not None and w is None and ctx.soft and _one_sum(p, t, dims):  # by slices, as the forward
            args = (p, t, expand(g_i), None if g_p is None else expand(g_p))
            if lg is not None:
                lg.add(_soft_region_grad, *args, lg.through_p)
                return None
            return chunked(_soft_region_grad, 1, p, *args)  # type: ignore[no-any-return]
        if g_i is not None:
            gi = expand(g_i)
            if ctx.soft:
                pw = p if w is None else p * w
                tw = t * w if ctx.weigh_t and w is not None else t
                grad = _soft_region_grad(pw, tw, gi, None)
                if g_p is not None:
                    grad = grad.add_(expand(g_p))
            elif g_p is not None:  # t g_I + g_P (an addcmul with the broadcast g_P first was slower on the CPU)
                grad = torch.mul(t, gi).add_(expand(g_p))
            else:
                grad = t * gi
        else:
            assert g_p is not None
            grad = expand(g_p).expand(shape).clone()
        if w is not None:
            grad = grad.mul_(w) if grad.shape == torch.broadcast_shapes(grad.shape, w.shape) else grad * w
        if grad.shape != shape:
            grad = grad.expand(shape).contiguous()
        if lg is not None:
            lg.add_grad_p(p, grad)
            return None
        return grad
