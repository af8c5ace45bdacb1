"""Input normalisation: the one place where modes, layouts, one-hot targets and ignore masks live.

``check_inputs`` runs outside the compiled region and raises ``InputError``;
``normalise`` is pure tensor code that ``torch.compile`` traces, and returns the ``Inputs``
that every loss receives. Shared work (the sigmoid/softmax, the one-hot target, the valid
mask, the per-class sums) is computed lazily and once per call, whichever terms ask for it.
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._errors import InputError, LossConfigError
from .distributed import sync_sum

__all__ = ["InputOptions", "Inputs", "check_inputs", "compact_ids", "normalise", "safe_ratio"]

CheckInputs = Literal["first", "always", "never"]


@dataclass(frozen=True)
class InputOptions:
    """The options common to every term of a loss."""

    mode: str = "binary"
    from_logits: bool = True
    ignore_index: int | None = None


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _binary_channel_form(logits: Tensor) -> bool:
    return logits.dim() >= 3 and logits.shape[1] == 1


def check_inputs(logits: Any, target: Any, opts: InputOptions, values: bool) -> int:
    """Raise ``InputError`` for inputs that do not fit ``opts.mode``; return the spatial rank.

    ``values=True`` also checks values (needs one device sync): finite logits, target ids in
    range, target values in [0, 1], probabilities in [0, 1].
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
                if ts != ls:
                    hint = (
                        "class ids must have an integer dtype: use target.long()"
                        if ts in ((ls[0], *spatial), (ls[0], 1, *spatial))
                        else f"expected ids (N, *S) = {(ls[0], *spatial)} or one-hot/soft (N, C, *S) = {ls}"
                    )
                    raise InputError(f"multiclass: float target {ts} does not fit logits {ls}; {hint}")
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
    if len(spatial) > 3:
        raise InputError(f"{mode}: {len(spatial)}D spatial inputs are not supported (logits {ls}); use 1D, 2D or 3D")
    if values:
        _check_values(logits, target, opts)
    return len(spatial)


def _check_values(logits: Tensor, target: Tensor, opts: InputOptions) -> None:
    """Value checks (one device sync): finite logits, target ids or values in range, one-hot sums."""
    if logits.device.type == "meta":  # no data to check (shape tracing)
        return
    mode, ii = opts.mode, opts.ignore_index
    multiclass_ids = mode == "multiclass" and not target.is_floating_point()
    with torch.no_grad():
        x = logits.detach()
        t = target.detach()
        valid = torch.ones_like(t, dtype=torch.bool) if ii is None else t != ii
        checks: dict[str, Tensor] = {"logits": torch.isfinite(x).all()}
        if multiclass_ids:
            checks["ids"] = ((t >= 0) & (t < x.shape[1]) | ~valid).all()
        else:
            tf = t.float()
            if t.is_floating_point():
                checks["nan"] = ~(torch.isnan(tf) & valid).any()
            checks["range"] = ((tf >= 0) & (tf <= 1) | ~valid).all()
            if mode == "multiclass":
                checks["onehot"] = ((tf.sum(1) - 1).abs() <= 1e-3).logical_or(~valid.all(1)).all()
        if not opts.from_logits:
            checks["probs"] = ((x >= 0) & (x <= 1)).all()
            if mode == "multiclass":
                checks["prob_sums"] = ((x.float().sum(1) - 1).abs() <= 1e-3).all()
        flags = dict(zip(checks, torch.stack(list(checks.values())).tolist()))  # the one sync
    if all(flags.values()):
        return
    ls, ts = _shape(logits), _shape(target)
    if not flags["logits"]:
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise InputError(
            f"{mode}: logits {ls} hold {n_nan} NaN and {n_inf} Inf values; the model diverged or its input "
            f"is broken (check the learning rate, the data, or use gradient clipping)"
        )
    if not flags.get("ids", True):
        C = x.shape[1]
        bad = t[valid & ((t < 0) | (t >= C))]
        vals = sorted(set(bad.unique()[:8].tolist()))
        hint = (
            f"; if {vals[0]} marks unlabelled pixels pass ignore_index={vals[0]}"
            if len(vals) == 1 and ii is None
            else f"; give the model one output channel per class, or map the labels into [0, {C})"
            + ("" if ii is not None else " (ignore_index=... for a label that marks unlabelled pixels)")
        )
        raise InputError(
            f"multiclass: target {ts} holds class ids {vals} outside [0, {C}) for logits {ls} with C = {C}{hint}"
        )
    if not flags.get("nan", True):
        raise InputError(
            f"{mode}: target {ts} holds {int((torch.isnan(t) & valid).sum())} NaN values; fix the data "
            f"(or mark those pixels with a finite ignore_index)"
        )
    if not flags.get("range", True):
        tf = t.float()
        bad = tf[valid & ((tf < 0) | (tf > 1))]
        raise InputError(
            f"{mode}: target {ts} holds values outside [0, 1] (min {float(bad.min()):g}, max {float(bad.max()):g})"
            + ("; pass ignore_index=... for a value that marks unlabelled pixels" if ii is None else "")
            + ("; class ids (N, *S) belong to mode='multiclass'" if mode != "multiclass" else "")
        )
    if not flags.get("onehot", True):
        raise InputError(
            f"multiclass: float target {ts} is not one-hot or soft: its values do not sum to 1 over the "
            f"class axis; pass class ids as an integer tensor (N, *S), or normalise the target"
        )
    if not flags.get("probs", True):
        raise InputError(
            f"{mode}: from_logits=False but the input {ls} holds values outside [0, 1]; pass probabilities, "
            f"or raw logits with from_logits=True"
        )
    raise InputError(
        f"multiclass: from_logits=False but the input {ls} does not sum to 1 over the class axis; "
        f"apply softmax(dim=1) first, or pass raw logits with from_logits=True"
    )


def no_autocast(device_type: str) -> Any:
    """A context that switches autocast off on ``device_type`` (the losses compute in float32)."""
    if device_type == "meta":  # shape-only tensors: autocast has no meta backend
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def _safe_log(p: Tensor) -> Tensor:
    """log of probabilities, clamped at log(tiny) so that p = 0 gives a finite value and gradient."""
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def safe_ratio(num: Tensor, den: Tensor, empty: float = 1.0) -> Tensor:
    """``num / den``, and ``empty`` where ``den == 0`` (both sets empty with smooth = 0)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.full_like(num, empty))


class _SigmoidStats(torch.autograd.Function):
    """(sigmoid(x), log sigmoid(x), log(1 - sigmoid(x))) from one exp and one log1p.

    The backward needs only the sigmoid: every term's gradient reaches x through
    ``p(1-p)``, ``1-p`` and ``-p`` with no further transcendental work.
    """

    @staticmethod
    def forward(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        # in-place on fresh buffers: the same values as the out-of-place formulas, with fewer
        # allocations in eager mode (inductor fuses either form into one loop)
        e = torch.exp(x.abs().neg_())  # exp(-|x|)
        lse = torch.log1p(e)
        log_p = torch.clamp(x, max=0).sub_(lse)  # min(x, 0) - lse
        log1m_p = torch.clamp(x, min=0).neg_().sub_(lse)  # -max(x, 0) - lse
        p = torch.where(x >= 0, 1.0, e).div_(e.add_(1))  # (1 or e) / (1 + e)
        return p, log_p, log1m_p

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: tuple[Tensor, Tensor, Tensor]) -> None:
        ctx.save_for_backward(output[0])
        ctx.set_materialize_grads(False)  # an output no term used gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx: Any, g_p: Tensor | None, g_log_p: Tensor | None,  # type: ignore[override]
                 g_log1m_p: Tensor | None) -> Tensor | None:
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
        return grad


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

    def __init__(self, mode: str, logits: Tensor, target: Tensor, mask: Tensor | None, from_logits: bool, hard: bool):
        self.mode = mode
        self.logits = logits
        self.target = target
        self.mask = mask
        self.from_logits = from_logits
        self.hard = hard  # target came as integer class ids
        self._act: tuple[Tensor, Tensor, Tensor | None] | None = None
        self._bce: Tensor | None = None
        self._stats: dict[tuple[bool, str], tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        return tuple(range(2, self.logits.dim()))

    def _activate(self) -> tuple[Tensor, Tensor, Tensor | None]:
        if self._act is None:
            x = self.logits
            if self.mode == "multiclass":
                if self.from_logits:
                    log_p = F.log_softmax(x, dim=1)
                    p = log_p.exp()
                else:
                    p, log_p = x, _safe_log(x)
                self._act = (p, log_p, None)
            elif self.from_logits:
                self._act = _SigmoidStats.apply(x)
            else:
                self._act = (x, _safe_log(x), _safe_log(1 - x))
        return self._act

    @property
    def prob(self) -> Tensor:
        """Probabilities (N, C, *S): sigmoid per channel, or softmax over classes."""
        return self._activate()[0]

    @property
    def log_prob(self) -> Tensor:
        """log of ``prob``, computed stably from the logits."""
        return self._activate()[1]

    @property
    def log1m_prob(self) -> Tensor:
        """log(1 - prob), binary and multilabel modes only."""
        out = self._activate()[2]
        if out is None:
            raise RuntimeError("log1m_prob is defined for sigmoid modes (binary, multilabel) only")
        return out

    def bce_elements(self) -> Tensor:
        """Per-element BCE ``-(t log p + (1 - t) log(1 - p))`` (N, C, *S), sigmoid modes only.

        Computed once per call and shared by the terms that need it (bce, focal), so an eager
        composite does not repeat these passes over the data.
        """
        if self._bce is None:
            t = self.target
            if self.from_logits:  # log p - log(1 - p) = x: softplus(x) - t x, one pass
                self._bce = torch.addcmul(-self.log1m_prob, t, self.logits, value=-1.0)
            else:
                self._bce = -(t * self.log_prob + (1 - t) * self.log1m_prob)
        return self._bce

    def masked(self, x: Tensor) -> Tensor:
        """``x * mask`` (ignored pixels zeroed), or ``x`` when nothing is ignored."""
        return x if self.mask is None else x * self.mask

    def pixel_mean(self, loss: Tensor) -> Tensor:
        """Mean of a per-element loss (N, K, *S) over the valid elements; 0 when none is valid."""
        if self.mask is None:
            return loss.mean()
        m = self.mask.expand_as(loss) if self.mask.shape != loss.shape else self.mask
        count = m.sum()
        return (loss * m).sum() / torch.where(count > 0, count, torch.ones_like(count))

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
                p = self.masked(self.prob)
                t = self.target  # already 0 where ignored
                local = (
                    self.class_sums(p * t, per_image),
                    self.class_sums(p, per_image),
                    self.class_sums(t, per_image),
                )
                self._stats[(per_image, "local")] = local
            if sync != "local":
                self._stats[key] = sync_sum(local, sync, self.mode)  # type: ignore[assignment]
        return self._stats[key]

    def class_mean(self, per_class: Tensor, params: Any = None) -> Tensor:
        """Mean of a per-class loss (C,) or (N, C) over classes (then samples).

        Honours ``include_background`` (multiclass) and ``class_weights`` of ``params``.
        """
        weights = getattr(params, "class_weights", None)
        if self.mode == "multiclass" and not getattr(params, "include_background", True):
            per_class = per_class[..., 1:]
            weights = weights[1:] if weights is not None else None
        if weights is not None:
            w = torch.tensor(weights, dtype=per_class.dtype, device=per_class.device)
            per_sample = (per_class * w).sum(-1) / w.sum().clamp_min(1e-12)
        else:
            per_sample = per_class.mean(-1)
        return per_sample.mean()


_INT32 = torch.iinfo(torch.int32)


def compact_ids(target: Tensor, opts: InputOptions) -> Tensor:
    """Integer class ids as int32 (multiclass mode), unless ``ignore_index`` needs int64.

    Inductor's CPU kernels compare int64 ids with the class index several times slower than
    int32 ones (``segloss bench multiclass_ce_dice_2d``), so the composite converts the ids
    before its compiled graph; ids are checked to lie in [0, C) or equal ``ignore_index``.
    """
    if opts.mode != "multiclass" or target.is_floating_point() or target.dtype == torch.int32:
        return target
    ii = opts.ignore_index
    if ii is not None and not _INT32.min <= ii <= _INT32.max:
        return target.long()
    return target.to(torch.int32)


def normalise(logits: Tensor, target: Tensor, opts: InputOptions) -> Inputs:
    """Bring checked inputs to the (N, C, *S) layout of ``Inputs``; traceable by torch.compile."""
    mode, ii = opts.mode, opts.ignore_index
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype)
    mask: Tensor | None = None
    hard = False
    if mode == "binary":
        if not _binary_channel_form(logits):
            x = x.unsqueeze(1)
        t = target if target.dim() == x.dim() else target.unsqueeze(1)
    elif mode == "multiclass" and not target.is_floating_point():
        hard = True
        t = target.squeeze(1) if target.dim() == x.dim() else target
        t = compact_ids(t, opts)
        if ii is not None:
            valid = t != ii
            mask = valid.unsqueeze(1).to(dtype)
            t = torch.where(valid, t, torch.zeros_like(t))
        classes = torch.arange(x.shape[1], device=t.device, dtype=t.dtype).view(1, -1, *([1] * (t.dim() - 1)))
        t = (t.unsqueeze(1) == classes).to(dtype)
        if mask is not None:
            t = t * mask
        return Inputs(mode, x, t, mask, opts.from_logits, hard)
    else:
        t = target
    if ii is not None:
        valid = t != ii
        mask = valid.to(dtype)
        t = torch.where(valid, t, torch.zeros_like(t))
    return Inputs(mode, x, t.to(dtype), mask, opts.from_logits, hard)
