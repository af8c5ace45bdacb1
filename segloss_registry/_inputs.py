"""Input normalisation: the one place where modes, layouts, one-hot targets and ignore masks live.

``check_inputs`` runs outside the compiled region and raises ``InputError``;
``normalise`` is pure tensor code that ``torch.compile`` traces, and returns the ``Inputs``
that every loss receives. Shared work (the sigmoid/softmax, the one-hot target, the valid
mask, the per-class sums) is computed lazily and once per call, whichever terms ask for it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _autograd as _ag
from ._checks import widen
from ._compile import is_compiling
from ._errors import InputError, LossConfigError
from ._fastmath import log1p_unit
from ._options import InputOptions
from .distributed import sync_sum

__all__ = ["InputOptions", "Inputs", "check_inputs", "compact_ids", "normalise", "safe_ratio", "soft_minimum"]

CheckInputs = Literal["first", "always", "never"]
T = TypeVar("T")




def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _binary_channel_form(logits: Tensor) -> bool:
    return logits.dim() >= 3 and logits.shape[1] == 1


def check_inputs(logits: Any, target: Any, opts: InputOptions, values: bool = False, mask: Any = None) -> int:
    """Raise ``InputError`` for inputs that do not fit ``opts.mode``; return the spatial rank.

    Shapes, dtypes and devices only (no device sync; traceable). ``values=True`` also checks
    values at once (one device sync; see ``_checks``): finite logits, target ids in range and
    whole, target values in [0, 1], probabilities in [0, 1], a mask >= 0.
    """
    mode = opts.mode
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise InputError(
            f"{mode}: logits and target must be torch.Tensor (got {type(logits).__name__} and "
            f"{type(target).__name__}); convert with torch.as_tensor(...)"
        )
    ls, ts = _shape(logits), _shape(target)
    if not logits.is_floating_point():
        raise InputError(
            f"{mode}: logits must be a floating-point tensor (got {logits.dtype}, shape {ls}); "
            "pass the model's raw float output, or logits.float()"
        )
    if logits.device != target.device:
        raise InputError(
            f"{mode}: logits are on {logits.device} but target is on {target.device}; "
            f"move them together, e.g. target.to(logits.device)"
        )
    if target.requires_grad:
        raise InputError(f"{mode}: target requires grad (shape {ts}); pass target.detach()")
    if target.is_complex() or logits.is_complex():
        raise InputError(f"{mode}: complex tensors are not supported (logits {logits.dtype}, target {target.dtype})")
    if logits.dim() < 2:
        raise InputError(
            f"{mode}: logits must have a batch axis and at least one spatial axis, e.g. (N, C, H, W); got {ls}"
        )
    if ls[0] == 0:
        raise InputError(f"{mode}: empty batch (N = 0, logits {ls}); skip the loss for empty batches")

    if mode == "binary":
        channel = _binary_channel_form(logits)
        spatial = ls[2:] if channel else ls[1:]
        ok = ts == ls or (channel and ts == (ls[0], *spatial))
        if not ok:
            want = f"{ls} or {(ls[0], *spatial)}" if channel else f"{ls}"
            raise InputError(
                f"binary: target shape {ts} does not fit logits {ls}; expected target {want}. "
                f"For C > 1 channels use mode='multiclass' (class ids) or mode='multilabel'"
            )
    else:
        if logits.dim() < 3:
            raise InputError(f"{mode}: logits must be (N, C, *S) with a spatial axis; got {ls}")
        C = ls[1]
        spatial = ls[2:]
        if mode == "multiclass":
            if C < 2:
                raise InputError(
                    f"multiclass: logits must be (N, C, *S) with C >= 2 classes; got {ls}. "
                    f"For one foreground channel use mode='binary'"
                )
            if target.is_floating_point():
                if ts == ls and opts.ignore_index is not None:
                    raise InputError(
                        f"multiclass: ignore_index={opts.ignore_index} applies to class ids, but the target {ts} is "
                        f"one-hot/soft (N, C, *S); pass class ids (N, *S) with the ignored label, or mark the "
                        f"ignored pixels with mask=... (0 where ignored) and build without ignore_index"
                    )
                if ts != ls and ts not in ((ls[0], *spatial), (ls[0], 1, *spatial)):
                    raise InputError(
                        f"multiclass: float target {ts} does not fit logits {ls}; expected class ids (N, *S) = "
                        f"{(ls[0], *spatial)} or (N, 1, *S), or one-hot/soft (N, C, *S) = {ls}"
                    )
            elif ts not in ((ls[0], *spatial), (ls[0], 1, *spatial)):
                raise InputError(
                    f"multiclass: target of class ids {ts} does not fit logits {ls}; expected "
                    f"{(ls[0], *spatial)} or {(ls[0], 1, *spatial)}"
                    + ("; a one-hot target must be float: use target.float()" if ts == ls else "")
                )
        elif mode == "multilabel":
            if ts != ls:
                raise InputError(
                    f"multilabel: target {ts} must have the shape of logits {ls} (one 0/1 map per channel); "
                    f"for class ids use mode='multiclass'"
                )
        else:  # guarded at build time; kept for the plain functions
            raise InputError(f"unknown mode '{mode}'; use 'binary', 'multiclass' or 'multilabel'")
    if len(spatial) == 0:
        raise InputError(f"{mode}: logits {ls} have no spatial axis; expected (N, C, *S) with S 1D, 2D or 3D")
    if any(n == 0 for n in ls):
        raise InputError(
            f"{mode}: logits {ls} have a zero-size axis; every axis needs at least one element "
            f"(skip the loss for empty crops)"
        )
    if mask is not None:
        _check_mask(mask, logits, mode)
    if len(spatial) > 3:
        raise InputError(f"{mode}: {len(spatial)}D spatial inputs are not supported (logits {ls}); use 1D, 2D or 3D")
    if values and logits.device.type != "meta":  # meta tensors hold no data to check
        from ._checks import raise_for_counts, value_counts

        m = None if mask is None else mask
        counts = value_counts(logits, target, m, mode, opts.from_logits, opts.ignore_index).tolist()
        raise_for_counts(counts, mode, (ls, ts), (logits, target), opts.ignore_index)
    return len(spatial)


def _check_mask(mask: Any, logits: Tensor, mode: str) -> None:
    ls = _shape(logits)
    if not isinstance(mask, Tensor):
        raise InputError(f"{mode}: mask must be a torch.Tensor (got {type(mask).__name__}); use torch.as_tensor(...)")
    ms = _shape(mask)
    if mask.device != logits.device:
        raise InputError(f"{mode}: mask is on {mask.device} but logits are on {logits.device}; move it with .to()")
    if mask.is_complex() or not (mask.is_floating_point() or mask.dtype == torch.bool):
        raise InputError(
            f"{mode}: mask must be bool (True = counts) or float weights >= 0 (got {mask.dtype}, shape {ms}); "
            f"use mask.bool() or mask.float()"
        )
    if mask.requires_grad:
        raise InputError(f"{mode}: mask requires grad (shape {ms}); pass mask.detach()")
    channel = mode != "binary" or _binary_channel_form(logits)
    N = ls[0]
    spatial = ls[2:] if channel else ls[1:]
    C = ls[1] if channel else 1
    ok = [(N, *spatial), (N, 1, *spatial)] + ([(N, C, *spatial)] if mode == "multilabel" else [])
    if ms not in ok:
        raise InputError(
            f"{mode}: mask {ms} does not fit logits {ls}; expected one of "
            f"{', '.join(str(s) for s in dict.fromkeys(ok))} (per pixel, or per pixel and class)"
        )


def no_autocast(device_type: str) -> Any:
    """A context that switches autocast off on ``device_type`` (the losses compute in float32)."""
    if device_type == "meta":  # shape-only tensors: autocast has no meta backend
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def _safe_log(p: Tensor) -> Tensor:
    """log of probabilities, clamped at log(tiny) so that p = 0 gives a finite value and gradient."""
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def soft_minimum(a: Tensor, b: Tensor) -> Tensor:
    """``min(a, b)`` as ``(a + b - |a - b|) / 2`` inside compiled graphs: within an ulp of the larger
    argument of ``torch.minimum``, exact at ties, the same gradient (1 to the smaller, 1/2 each at ties).

    With ``torch.minimum`` inductor's partitioner saves the comparison masks (``a == b``,
    ``a > b``) as bool tensors for the backward, and its CPU kernels store bool tensors about
    20x slower than the whole rest of the pass (torch 2.13: a compiled soft Dice forward of
    8x1x512x512 took 31 ms instead of 1.3 ms; ``python profiles/perf_internals.py masks``).
    The form with ``abs`` leaves nothing but floats to save or recompute.
    """
    return (a + b - (a - b).abs()) * 0.5


def safe_ratio(num: Tensor, den: Tensor, empty: float = 1.0) -> Tensor:
    """``num / den``, and ``empty`` where ``den == 0`` (both sets empty with smooth = 0).

    A NaN ``den`` gives NaN (a non-finite input never becomes a finite loss).
    """
    zero = den == 0
    return torch.where(zero, torch.full_like(num, empty), num / torch.where(zero, torch.ones_like(den), den))


class _SigmoidStats(torch.autograd.Function):
    """(sigmoid(x), log sigmoid(x), log(1 - sigmoid(x))) from one exp and one log1p.

    The backward needs only the sigmoid: every term's gradient reaches x through
    ``p(1-p)``, ``1-p`` and ``-p`` with no further transcendental work. ``cheap``: the log1p
    as ``_fastmath.log1p_unit`` (compiled float32 CPU graphs, see ``_compile.cheap_log1p``).
    """

    @staticmethod
    def forward(x: Tensor, cheap: bool = False) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override, unused-ignore]
        # out of place: compiled graphs fuse it into one loop, and the CPU's save policy
        # (selective activation checkpointing, ``_compile.with_saved_softplus``) refuses in-place
        # writes into the tensors it keeps
        e = torch.exp(-x.abs())  # exp(-|x|)
        lse = log1p_unit(e) if cheap else torch.log1p(e)
        log_p = torch.clamp(x, max=0) - lse  # min(x, 0) - lse
        log1m_p = -torch.clamp(x, min=0) - lse  # -max(x, 0) - lse
        p = torch.where(x >= 0, 1.0, e) / (e + 1)  # (1 or e) / (1 + e)
        return p, log_p, log1m_p

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, bool], output: tuple[Tensor, Tensor, Tensor]) -> None:
        ctx.save_for_backward(output[0])
        ctx.set_materialize_grads(False)  # an output no term used gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx: Any, g_p: Tensor | None, g_log_p: Tensor | None,  # type: ignore[override, unused-ignore]
                 g_log1m_p: Tensor | None) -> tuple[Tensor | None, None]:
        # g_p p q + g_log_p q - g_log1m_p p, skipping the outputs that no term used
        (p,) = ctx.saved_tensors
        q = 1 - p
        grad: Tensor | None = None
        if g_p is not None:
            grad = g_p * p * q
        if g_log_p is not None:
            grad = g_log_p * q if grad is None else grad + g_log_p * q
        if g_log1m_p is not None:
            grad = -(g_log1m_p * p) if grad is None else grad - g_log1m_p * p
        return grad, None


class Inputs:
    """The normalised inputs every loss function receives.

    - ``logits``: (N, C, *S) in the compute dtype (float32, or float64 for float64 inputs);
      holds probabilities when ``from_logits`` is False. Binary mode has C = 1.
    - ``target``: (N, C, *S) float, one-hot or soft, 0 where ignored.
    - ``mask``: None, or a 0/1 float tensor that broadcasts to ``target`` ((N, 1, *S) for
      binary and multiclass, (N, C, *S) for multilabel).
    - ``prob``, ``log_prob``, ``log1m_prob``: sigmoid (binary, multilabel) or softmax
      (multiclass) probabilities and their logs, computed once on first use.
    """

    def __init__(self, mode: str, logits: Tensor, target: Tensor, mask: Tensor | None, from_logits: bool, hard: bool,
                 binary_mask: bool = True):
        self.mode = mode
        self.binary_mask = binary_mask  # mask is None or 0/1 (ignore_index, a bool mask=); else per-pixel weights
        self.logits = logits
        self.target = target
        self.mask = mask
        self.from_logits = from_logits
        self.hard = hard  # target came as integer class ids
        # (prob, log_prob, log1m_prob) once computed; the eager Functions fill it as terms ask
        self._act: tuple[Tensor, Tensor, Tensor | None] | None = None
        self._eager_act: list[Tensor | None] = [None, None, None]
        self._bce: Tensor | None = None
        self._sig: tuple[Tensor, Tensor] | None = None
        self._lg: tuple[Tensor | None, _ag.EagerLogits] | None = None  # the eager Functions' one gradient buffer
        self._stats: dict[tuple[bool, str], tuple[Tensor, Tensor, Tensor]] = {}
        self._shared: dict[Any, Any] = {}
        # the sigmoid's log1p as the polynomial of ``_fastmath`` (set by the composite for its own
        # compiled float32 CPU graphs, ``_compile.cheap_log1p``); torch.log1p otherwise
        self.cheap_log1p = False

    def shared(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()`` once per call for ``key``, shared by every term that asks for it.

        The memo for work that several terms need (a distance map of the target, a pooled
        target): the first term computes it, the others get the same tensor. ``key`` is any
        hashable value; include the parameters the result depends on, e.g.
        ``inp.shared(("signed_distance", spacing), lambda: ...)``. Plugins share work with
        one another through it exactly as the built-ins do.
        """
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]  # type: ignore[no-any-return]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        return tuple(range(2, self.logits.dim()))

    def _eager_functions(self) -> bool:
        """Whether the closed-form Functions of ``_autograd`` serve this call: eager sigmoid modes
        from logits. Compiled graphs trace the plain formulas, whose save/recompute choice the
        partitioner makes (see ``_compile.save_policy``)."""
        return self.from_logits and self.mode != "multiclass" and not is_compiling()

    def _eager_softmax(self) -> bool:
        """Whether ``_autograd.Softmax`` serves this call: eager multiclass from logits."""
        return self.from_logits and self.mode == "multiclass" and not is_compiling()

    def _eager_logits(self) -> tuple[Tensor | None, _ag.EagerLogits]:
        """The anchor every eager Function of this call takes, and the logits with the buffer their
        gradient is gathered in (``_autograd.EagerLogits``), once per call."""
        if self._lg is None:
            lg = _ag.EagerLogits(self.logits)
            self._lg = (lg.anchor(), lg)
        return self._lg

    def _sigmoid(self) -> tuple[Tensor, Tensor]:
        """(p, lse = log1p(exp(-|x|))), once per call; eager sigmoid modes from logits."""
        if self._sig is None:
            self._sig = _ag.Sigmoid.apply(*self._eager_logits())  # type: ignore[no-untyped-call, unused-ignore]
            self._eager_act[0] = self._sig[0]
        return self._sig

    def _activate(self) -> tuple[Tensor, Tensor, Tensor | None]:
        if self._act is None:
            x = self.logits
            if self.mode == "multiclass":
                if self._eager_softmax():  # the gradient into the call's one buffer
                    p, log_p = _ag.Softmax.apply(*self._eager_logits())  # type: ignore[no-untyped-call, unused-ignore]
                elif self.from_logits:
                    log_p = F.log_softmax(x, dim=1)
                    p = log_p.exp()
                else:
                    p, log_p = x, _safe_log(x)
                self._act = (p, log_p, None)
            elif self.from_logits:
                self._act = _SigmoidStats.apply(x, self.cheap_log1p)  # type: ignore[no-untyped-call, unused-ignore]
            else:
                self._act = (x, _safe_log(x), _safe_log(1 - x))
        return self._act

    def _log_sigmoid(self, sign: int) -> Tensor:
        if self._eager_act[1 if sign > 0 else 2] is None:
            p, lse = self._sigmoid()
            self._eager_act[1 if sign > 0 else 2] = _ag.LogSigmoid.apply(*self._eager_logits(), p.detach(), lse, sign)  # type: ignore[no-untyped-call, unused-ignore]
        out = self._eager_act[1 if sign > 0 else 2]
        assert out is not None
        return out

    @property
    def prob(self) -> Tensor:
        """Probabilities (N, C, *S): sigmoid per channel, or softmax over classes."""
        if self._eager_functions():
            return self._sigmoid()[0]
        return self._activate()[0]

    @property
    def log_prob(self) -> Tensor:
        """log of ``prob``, computed stably from the logits."""
        if self._eager_functions():
            return self._log_sigmoid(1)
        return self._activate()[1]

    @property
    def log1m_prob(self) -> Tensor:
        """log(1 - prob), binary and multilabel modes only."""
        if self._eager_functions():
            return self._log_sigmoid(-1)
        out = self._activate()[2]
        if out is None:
            raise RuntimeError("log1m_prob is defined for sigmoid modes (binary, multilabel) only")
        return out

    def bce_elements(self) -> Tensor:
        """Per-element BCE ``-(t log p + (1 - t) log(1 - p))`` (N, C, *S), sigmoid modes only.

        Compiled and from probabilities: computed once per call and shared by the terms that need
        it. Eager from logits: one fresh pass per call from the shared ``p`` and ``lse`` (no
        transcendental op), so that no full-size tensor outlives the term that asked for it.
        """
        t = self.target
        if self._eager_functions():
            p, lse = self._sigmoid()
            return _ag.BCEElements.apply(*self._eager_logits(), t, p.detach(), lse)  # type: ignore[no-untyped-call, no-any-return, unused-ignore]
        if self._bce is None:
            if self.from_logits:  # log p - log(1 - p) = x: softplus(x) - t x, one pass
                self._bce = torch.addcmul(-self.log1m_prob, t, self.logits, value=-1.0)
            else:
                self._bce = -(t * self.log_prob + (1 - t) * self.log1m_prob)
        return self._bce

    @property
    def bce(self) -> Tensor:
        """``bce_elements()`` as a property, like ``prob`` and ``log_prob`` (the method stays for
        plugins written against it)."""
        return self.bce_elements()

    def focal_elements(self, gamma: float, alpha: float | list[float] | None) -> Tensor:
        """Per-element binary focal loss ``alpha_t (1 - p_t)^gamma bce`` (N, C, *S), sigmoid modes.

        ``1 - p_t = p + t - 2 p t``, ``alpha_t = a t + (1 - a)(1 - t)`` with ``a`` = ``alpha``
        (a number, or one per channel; None: no weighting). Eager from logits: one Function
        whose backward is closed-form, keeps only the shared sigmoid and adds its gradient into
        the call's one buffer (``_autograd``); otherwise the same formula in plain ops.
        """
        t = self.target
        a = self._alpha(alpha)
        if self._eager_functions():
            p, lse = self._sigmoid()
            return _ag.FocalElements.apply(*self._eager_logits(), t, p.detach(), lse, float(gamma), a)  # type: ignore[no-untyped-call, no-any-return, unused-ignore]
        loss = self.bce_elements()
        if gamma > 0:
            loss = loss * _ag.focal_modulator(torch.addcmul(t, self.prob, 1 - 2 * t), gamma)[0]
        if a is not None:
            loss = loss * (t * (2 * a - 1) + (1 - a))
        return loss

    def _alpha(self, alpha: float | list[float] | None) -> float | Tensor | None:
        """A per-channel ``alpha`` list as a (1, C, 1, ...) tensor broadcasting against the target."""
        if not isinstance(alpha, list):
            return alpha
        t = self.target
        return torch.tensor(alpha, dtype=t.dtype, device=t.device).view(1, -1, *([1] * (t.dim() - 2)))

    def bce_mean(self) -> Tensor:
        """``pixel_mean(bce_elements())``, 0-dim; eager from logits with no per-element tensor."""
        return self._element_mean(_ag.BCE_ELEMENTS, self.bce_elements, 0.0, None)

    def focal_mean(self, gamma: float, alpha: float | list[float] | None) -> Tensor:
        """``pixel_mean(focal_elements(gamma, alpha))``, 0-dim; eager from logits with no per-element tensor."""
        return self._element_mean(_ag.FOCAL_ELEMENTS, lambda: self.focal_elements(gamma, alpha), gamma, alpha)

    def _element_mean(self, formula: _ag.Elementwise, elements: Callable[[], Tensor], gamma: float,
                      alpha: float | list[float] | None) -> Tensor:
        if not self._eager_functions():
            return self.pixel_mean(elements())
        t = self.target
        p, lse = self._sigmoid()
        total = _ag.ElementSum.apply(*self._eager_logits(), formula, t, p.detach(), lse, self.mask, float(gamma),  # type: ignore[no-untyped-call, unused-ignore]
                                     self._alpha(alpha))
        return self._mean_of(total, t.shape)

    def log_prob_mean(self, weights: Tensor) -> Tensor:
        """``pixel_mean((weights * log_prob).sum(1, keepdim=True))``, 0-dim: a cross-entropy is
        ``-log_prob_mean(soft target)``; ``weights`` broadcasts to the logits. Eager multiclass from
        logits: one dot product, with no per-element tensor."""
        w = weights if self.mask is None else weights * self.mask
        pixels = (self.logits.shape[0], 1, *self.logits.shape[2:])
        if not self._eager_softmax():
            return self._mean_of((w * self.log_prob).sum(), pixels)
        w = w if w.shape == self.logits.shape else w.expand(self.logits.shape)
        total = _ag.LogProbSum.apply(*self._eager_logits(), self.log_prob.detach(), w.contiguous())  # type: ignore[no-untyped-call, unused-ignore]
        return self._mean_of(total, pixels)

    def _mean_of(self, total: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """``total`` (a masked sum over a tensor of ``shape``) divided by the valid elements of
        ``shape``: all of them without a mask; 0 when none is valid."""
        if self.mask is None:
            return total / math.prod(shape)
        count = self.mask.expand(shape).sum()
        return total / torch.where(count > 0, count, torch.ones_like(count))

    def masked(self, x: Tensor) -> Tensor:
        """``x * mask`` (ignored pixels zeroed), or ``x`` when nothing is ignored."""
        return x if self.mask is None else x * self.mask

    def pixel_mean(self, loss: Tensor) -> Tensor:
        """Mean of a per-element loss (N, K, *S) over the valid elements; 0 when none is valid."""
        # the sum, then the division: ``mean``'s backward would divide a full-size gradient, the sum's
        # is a broadcast view (the same value on the CPU)
        return self._mean_of(loss.sum() if self.mask is None else (loss * self.mask).sum(), loss.shape)

    def class_sums(self, x: Tensor, per_image: bool = False) -> Tensor:
        """Sum over batch and space per class (C,), or over space per sample and class (N, C)."""
        dims = self.spatial_dims if per_image else (0, *self.spatial_dims)
        return x.sum(dim=dims)

    def region_stats(self, per_image: bool = False, sync: str = "local") -> tuple[Tensor, Tensor, Tensor]:
        """(intersection, sum of prob, sum of target) per class over valid pixels, computed once.

        Shapes (C,), or (N, C) with ``per_image``. ``sync="global"`` sums the (C,) statistics
        over the ranks of the default process group (one autograd-aware collective, traced by
        torch.compile; see ``segloss_registry.distributed``), so the loss is that of the global
        batch on every rank. A region loss gets it by calling
        ``inp.region_stats(params.per_image, params.sync)`` with params derived from
        ``RegionParams``. Raises ``InputError`` for ``"global"`` without a process group, and
        ``LossConfigError`` for ``per_image=True`` with ``"global"``.
        """
        key = (per_image, sync)
        if key not in self._stats:
            if sync == "global" and per_image:
                raise LossConfigError(
                    f"{self.mode}: region_stats(per_image=True, sync='global') is not supported: per-image "
                    "statistics need no all-reduce; use sync='local'"
                )
            if (per_image, "local") in self._stats:
                local = self._stats[(per_image, "local")]
            else:
                t = self.target  # already 0 where ignored
                # I = sum(min(p, t)): p t on 0/1 targets; on soft targets the soft-label intersection
                # of Wang & Blaschko 2023 (MONAI's soft_label=True), whose minimum is at p = t
                if not is_compiling():  # eager: the backward is a broadcast (``_autograd.RegionSums``)
                    dims = self.spatial_dims if per_image else (0, *self.spatial_dims)
                    soft, weigh_t = not self.hard, not self.binary_mask
                    if self._eager_functions() or self._eager_softmax():  # the gradient into the one buffer
                        local = _ag.RegionSums.apply(self.prob.detach(), t, self.mask, dims, soft, weigh_t,  # type: ignore[no-untyped-call, unused-ignore]
                                                     *self._eager_logits())
                    else:
                        local = _ag.RegionSums.apply(self.prob, t, self.mask, dims, soft, weigh_t)  # type: ignore[no-untyped-call, unused-ignore]
                else:
                    p = self.masked(self.prob)
                    tw = t if self.binary_mask else self.masked(t)
                    inter = soft_minimum(p, tw) if not self.hard else p * t
                    local = (self.class_sums(inter, per_image), self.class_sums(p, per_image),
                             self.class_sums(tw, per_image))
                self._stats[(per_image, "local")] = local
            if sync != "local":
                self._stats[key] = sync_sum(local, sync, self.mode)  # type: ignore[assignment]
        return self._stats[key]

    def class_mean(self, per_class: Tensor, params: Any = None, present: Tensor | None = None) -> Tensor:
        """Mean of a per-class loss (C,) or (N, C) over classes (then samples).

        Honours ``include_background`` (multiclass) and ``class_weights`` of ``params``.
        ``present`` (bool, the shape of ``per_class``): each mean runs over the classes it marks
        only (Lovasz's ``classes="present"``); a row without one gives 0.
        """
        weights = getattr(params, "class_weights", None)
        if self.mode == "multiclass" and not getattr(params, "include_background", True):
            per_class = per_class[..., 1:]
            weights = weights[1:] if weights is not None else None
            present = present[..., 1:] if present is not None else None
        if present is not None:
            w = present.to(per_class.dtype)
            if weights is not None:
                w = w * torch.tensor(weights, dtype=per_class.dtype, device=per_class.device)
            w_sum = w.sum(-1)
            per_sample = (per_class * w).sum(-1) / torch.where(w_sum > 0, w_sum, torch.ones_like(w_sum))
        elif weights is not None:
            total = math.fsum(weights)  # normalised in float64 on the host: tiny weights keep their ratios
            w = torch.tensor([x / total for x in weights], dtype=per_class.dtype, device=per_class.device)
            per_sample = (per_class * w).sum(-1)
        else:
            per_sample = per_class.mean(-1)
        return per_sample.mean()


_INT32 = torch.iinfo(torch.int32)


def compact_ids(target: Tensor, opts: InputOptions, logits: Tensor | None = None) -> Tensor:
    """Integer class ids as int32 (multiclass mode), unless ``ignore_index`` needs int64.

    Inductor's CPU kernels compare int64 ids with the class index several times slower than
    int32 ones (``segloss bench multiclass_ce_dice_2d``), so the composite converts the ids
    before its compiled graph; ids are checked to lie in [0, C) or equal ``ignore_index``.
    """
    if opts.mode != "multiclass" or target.dtype == torch.int32:
        return target
    if target.is_floating_point() and logits is not None and tuple(target.shape) == tuple(logits.shape):
        return target  # one-hot / soft
    if target.is_floating_point():  # float class ids (MONAI's labels), checked to be whole numbers
        target = target.to(torch.int64)
    ii = opts.ignore_index
    if ii is not None and not _INT32.min <= ii <= _INT32.max:
        return target.long()
    return target.to(torch.int32)


LOGIT_BOUND = 1e15
"""Logits are clamped to [-LOGIT_BOUND, LOGIT_BOUND] inside: every loss is saturated long before,
and sums of per-pixel losses of logits near the float32 limit (3e38) would overflow to Inf."""


def _within_bound(x: Tensor) -> bool:
    """True when the clamp to +-LOGIT_BOUND would change nothing and may be skipped: eager on the
    CPU only (one reduction read at once, no copy of the logits kept for the backward); compiled
    graphs and accelerators always clamp (fused there, and no host sync)."""
    if is_compiling() or x.device.type != "cpu" or x.numel() == 0:
        return False
    lo, hi = torch.aminmax(x.detach())
    return bool(lo >= -LOGIT_BOUND) and bool(hi <= LOGIT_BOUND)  # NaN compares False: clamped


def _layout_mask(mask: Tensor, like: Tensor, dtype: torch.dtype) -> Tensor:
    """A call-time mask (N, *S), (N, 1, *S) or (N, C, *S) as float weights of ``like``'s rank."""
    m = mask.to(dtype)
    return m if m.dim() == like.dim() else m.unsqueeze(1)


def normalise(logits: Tensor, target: Tensor, opts: InputOptions, mask: Tensor | None = None) -> Inputs:
    """Bring checked inputs to the (N, C, *S) layout of ``Inputs``; traceable by torch.compile.

    ``mask``: an optional call-time mask (bool, or float weights >= 0), multiplied into the
    mask of ``ignore_index``; the target is zeroed where the combined mask is 0.
    """
    mode, ii = opts.mode, opts.ignore_index
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype)
    if opts.from_logits and not _within_bound(x):
        x = x.clamp(-LOGIT_BOUND, LOGIT_BOUND)
    target = widen(target)
    valid: Tensor | None = None
    hard = False
    if mode == "binary":
        if not _binary_channel_form(logits):
            x = x.unsqueeze(1)
        t = target if target.dim() == x.dim() else target.unsqueeze(1)
        if ii is not None:
            valid = t != ii
    elif mode == "multiclass" and (not target.is_floating_point() or tuple(target.shape) != tuple(logits.shape)):
        hard = True
        ids = target.squeeze(1) if target.dim() == x.dim() else target
        ids = compact_ids(ids, opts)
        if ii is not None:
            ok = ids != ii
            valid = ok.unsqueeze(1)
            ids = torch.where(ok, ids, torch.zeros_like(ids))
        classes = torch.arange(x.shape[1], device=ids.device, dtype=ids.dtype).view(1, -1, *([1] * (ids.dim() - 1)))
        t = ids.unsqueeze(1) == classes
    else:
        t = target
        if ii is not None:
            valid = t != ii
    weights: Tensor | None = None if valid is None else valid.to(dtype)
    if mask is not None:
        m = _layout_mask(mask, x, dtype)
        weights = m if weights is None else weights * m
    t = t.to(dtype)
    if weights is not None:
        t = torch.where(weights != 0, t, torch.zeros_like(t))
    binary_mask = mask is None or mask.dtype == torch.bool
    return Inputs(mode, x, t, weights, opts.from_logits, hard, binary_mask)
