"""Value checks: a bad batch is reported at any step of training, without a host sync on accelerators.

``value_counts`` is pure tensor code: a small int64 vector of counts (NaN logits, target ids out
of range, ...), computed on the inputs' own device. What happens with it depends on
``check_inputs``:

- ``"auto"`` (the default): on the CPU the checks are read at once (reading costs nothing
  there) and a bad batch raises ``InputError`` in the call that got it; on an accelerator the
  counts are copied to host memory without blocking and read at the start of the next call,
  so the error comes at most one step late and names the step it happened in.
- ``"always"``: read at once on every device (one device sync per call).
- ``"deferred"``: read at the next call on every device (the accelerator behaviour, also on
  the CPU; ``criterion.check_pending()`` reads the last one on demand).
- ``"first"``: only the first call is checked (the old default; later bad batches go unseen).
- ``"never"``: no value checks.

Inside a user's own ``torch.compile`` the host-side part is skipped: nothing is read back
there, since reading would break the user's graph. Whatever the checks, a non-finite input
never gives a finite loss: the criterion then adds ``0 * sum(logits)`` to every term, which is
NaN exactly when an input is (see ``CompositeLoss``).

Checks read at once use ``value_flags`` first: nine minima and maxima, fused into the loss's own
compiled graph, that are bad exactly when some count is; only then are the counts computed, to
say what is wrong and where. (The counts themselves, int64 sums of per-element tests, cost more
than a compiled ``bce+dice+focal`` step on the CPU: ``python profiles/check_cost.py``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._errors import InputError

__all__ = [
    "CHECKS", "FLAGS", "value_counts", "value_flags", "flags_bad", "ids_form", "raise_for_counts", "widen",
    "PendingCheck",
]

CHECKS = (
    "nan_logits",
    "inf_logits",
    "ids",
    "nonint_ids",
    "nan_target",
    "range",
    "onehot",
    "probs",
    "prob_sums",
    "mask",
)

_NARROW = (torch.uint8, torch.int8, torch.int16, torch.bool)


def widen(target: Tensor) -> Tensor:
    """uint8/int8/int16/bool targets as int32, so that comparisons with Python ints do not wrap.

    ``uint8 != -1`` is False in torch (the -1 wraps to 255); every comparison of a target with
    ``ignore_index`` or a class count goes through this first.
    """
    return target.to(torch.int32) if target.dtype in _NARROW else target


def ids_form(logits: Tensor, target: Tensor, mode: str) -> bool:
    """Multiclass targets holding class ids (integer, or float ids of shape (N, *S) / (N, 1, *S))."""
    return mode == "multiclass" and (not target.is_floating_point() or tuple(target.shape) != tuple(logits.shape))


def value_counts(logits: Tensor, target: Tensor, mask: Tensor | None, mode: str, from_logits: bool,
                 ignore_index: int | None) -> Tensor:
    """Counts of bad values, one per name in ``CHECKS`` (int64, on the inputs' device); traceable."""
    with torch.no_grad():
        x = logits.detach()
        t = widen(target.detach())
        zero = torch.zeros((), dtype=torch.int64, device=x.device)
        valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
        counts = dict.fromkeys(CHECKS, zero)
        counts["nan_logits"] = torch.isnan(x).sum()
        counts["inf_logits"] = torch.isinf(x).sum()
        if ids_form(x, t, mode):
            C = x.shape[1]
            counts["ids"] = (valid & ((t < 0) | (t >= C))).sum()
            if t.is_floating_point():
                counts["nonint_ids"] = (valid & (t != torch.floor(t))).sum()  # NaN ids count here too
        else:
            tf = t if t.is_floating_point() else t.to(torch.float32)
            if t.is_floating_point():
                counts["nan_target"] = (torch.isnan(tf) & valid).sum()
            counts["range"] = (valid & ((tf < 0) | (tf > 1))).sum()
            if mode == "multiclass":
                counts["onehot"] = (((tf.sum(1) - 1).abs() > 1e-3) & valid.all(1)).sum()
        if not from_logits:
            counts["probs"] = ((x < 0) | (x > 1)).sum()
            if mode == "multiclass":
                counts["prob_sums"] = ((x.to(torch.float32).sum(1) - 1).abs() > 1e-3).sum()
        if mask is not None:
            m = mask.detach()
            counts["mask"] = (~torch.isfinite(m) | (m < 0)).sum() if m.is_floating_point() else (m < 0).sum()
        return torch.stack([counts[k] for k in CHECKS])


FLAGS = ("logits_lo", "logits_hi", "target_lo", "target_hi", "fraction", "onehot", "prob_sums", "mask_lo", "mask_hi")
"""What ``value_flags`` returns, in order: a few minima and maxima that say whether any count is bad."""


def value_flags(logits: Tensor, target: Tensor, mask: Tensor | None, mode: str, from_logits: bool,
                ignore_index: int | None) -> Tensor:
    """The everyday form of the checks: nine float64 numbers (``FLAGS``), traceable.

    Minima and maxima only (NaN-propagating, fused into one pass by inductor; no per-element
    int64 counts, which cost more than the loss itself on the CPU): the logits' range, the
    target's range over the pixels that count, the largest fractional part of float class ids,
    the largest deviation of a one-hot target's (or a probability input's) class sum from 1, the
    mask's range. ``flags_bad`` reads them; it is true exactly when some count of
    ``value_counts`` is non-zero, which then says what is wrong and where.
    """
    with torch.no_grad():
        x = logits.detach()
        t = widen(target.detach())
        f64 = torch.float64
        zero = torch.zeros((), dtype=f64, device=x.device)
        flags = dict.fromkeys(FLAGS, zero)
        lo, hi = torch.aminmax(x)
        flags["logits_lo"], flags["logits_hi"] = lo.to(f64), hi.to(f64)
        valid = None if ignore_index is None else t != ignore_index
        tv = t if valid is None else torch.where(valid, t, torch.zeros_like(t))
        lo, hi = torch.aminmax(tv)
        flags["target_lo"], flags["target_hi"] = lo.to(f64), hi.to(f64)
        ids = ids_form(x, t, mode)
        if ids and t.is_floating_point():
            flags["fraction"] = (tv - torch.floor(tv)).abs().amax().to(f64)
        if mode == "multiclass" and not ids:
            dev = (tv.to(torch.float32).sum(1) - 1).abs()
            if valid is not None:
                dev = torch.where(valid.all(1), dev, torch.zeros_like(dev))
            flags["onehot"] = dev.amax().to(f64)
        if not from_logits and mode == "multiclass":
            flags["prob_sums"] = (x.to(torch.float32).sum(1) - 1).abs().amax().to(f64)
        if mask is not None and mask.dtype != torch.bool:
            m = mask.detach()
            lo, hi = torch.aminmax(m)
            flags["mask_lo"], flags["mask_hi"] = lo.to(f64), hi.to(f64)
        return torch.stack([flags[k] for k in FLAGS])


def flags_bad(flags: list[float], mode: str, classes: int, from_logits: bool, ids: bool) -> bool:
    """Whether the ``value_flags`` of one call show a bad value (``ids``: class-id targets;
    ``classes``: the logits' C). Exact: true if and only if ``value_counts`` counts something."""
    f = dict(zip(FLAGS, flags))
    if not all(math.isfinite(v) for v in flags):  # NaN or Inf logits, target, mask; NaN ids
        return True
    if not from_logits and (f["logits_lo"] < 0 or f["logits_hi"] > 1 or f["prob_sums"] > 1e-3):
        return True
    upper = classes - 1 if ids else 1
    if f["target_lo"] < 0 or f["target_hi"] > upper or f["fraction"] > 0:
        return True
    return f["onehot"] > 1e-3 or f["mask_lo"] < 0


def _where(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(out))


def _bad_values(bad: Tensor, values: Tensor) -> list[Any]:
    vals = sorted(set(torch.unique(values[bad])[:8].tolist()))
    return [int(v) if isinstance(v, float) and v.is_integer() and not values.is_floating_point() else v for v in vals]


def _place(bad: Tensor, shape: tuple[int, ...]) -> str:
    first = int(bad.reshape(-1).nonzero()[0, 0])
    return f"at {int(bad.sum())} of {bad.numel()} elements, the first at index {_where(first, shape)}"


def _values_and_place(bad: Tensor, values: Tensor, shape: tuple[int, ...]) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in _bad_values(bad, values))
    return f"{shown} {_place(bad, shape)}"


def raise_for_counts(counts: list[int], mode: str, shapes: tuple[tuple[int, ...], tuple[int, ...]],
                     tensors: tuple[Tensor, Tensor] | None, ignore_index: int | None, step: str = "") -> None:
    """Raise ``InputError`` for the first bad count; with the ``(logits, target)`` tensors, say
    which values are bad and where. ``step`` names the call the counts belong to (deferred checks).
    """
    c = dict(zip(CHECKS, counts))
    if not any(c.values()):
        return
    ls, ts = shapes
    logits, target = tensors if tensors is not None else (None, None)
    where = f"{step}: " if step else ": "
    if c["nan_logits"] or c["inf_logits"]:
        raise InputError(
            f"{mode}{where}logits {ls} hold {c['nan_logits']} NaN and {c['inf_logits']} Inf values; the model "
            f"diverged or its input is broken (check the learning rate, the data, or use gradient clipping)"
        )
    if c["ids"] or c["nonint_ids"]:
        C = ls[1] if len(ls) > 1 else None
        vals: list[Any] = []
        place = f"at {c['ids'] + c['nonint_ids']} elements"
        if logits is not None and target is not None:
            t = widen(target.detach())
            valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
            if c["nonint_ids"]:
                bad = valid & (t != torch.floor(t))
            else:
                bad = valid & ((t < 0) | (t >= logits.shape[1]))
            vals, place = _bad_values(bad, t), _place(bad, ts)
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals)
        if c["nonint_ids"]:
            raise InputError(
                f"multiclass{where}float target {ts} holds class ids that are not whole numbers ({shown} {place}); "
                f"a float target of shape (N, *S) or (N, 1, *S) is read as class ids: round it, or pass one-hot/"
                f"soft probabilities of shape (N, C, *S)"
            )
        single = vals[0] if len(vals) == 1 else None
        hint = (
            f"; if {single:g} marks unlabelled pixels pass ignore_index={int(single)}"
            if single is not None and ignore_index is None
            else f"; give the model one output channel per class, or map the labels into [0, {C})"
            + ("" if ignore_index is not None else " (ignore_index=... for a label that marks unlabelled pixels)")
        )
        listed = f" [{shown}]" if vals else ""
        raise InputError(
            f"multiclass{where}target {ts} holds class ids{listed} outside [0, {C}) for logits {ls} with C = {C} "
            f"({place}){hint}"
        )
    if c["nan_target"]:
        raise InputError(
            f"{mode}{where}target {ts} holds {c['nan_target']} NaN values; fix the data "
            f"(or mark those pixels with a finite ignore_index, or mask=...)"
        )
    if c["range"]:
        if logits is not None and target is not None:
            t = widen(target.detach())
            tf = t if t.is_floating_point() else t.to(torch.float32)
            valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
            detail = ": " + _values_and_place(valid & ((tf < 0) | (tf > 1)), tf, ts)
        else:
            detail = f" ({c['range']} elements)"
        raise InputError(
            f"{mode}{where}target {ts} holds values outside [0, 1]{detail}"
            + ("; pass ignore_index=... for a value that marks unlabelled pixels" if ignore_index is None else "")
            + ("; class ids (N, *S) belong to mode='multiclass'" if mode != "multiclass" else "")
            + ("; a 0/255 mask needs target / 255 or target > 0" if mode != "multiclass" else "")
        )
    if c["onehot"]:
        raise InputError(
            f"multiclass{where}float target {ts} is not one-hot or soft: at {c['onehot']} pixels its values do not "
            f"sum to 1 over the class axis; pass class ids as an integer tensor (N, *S), or normalise the target"
        )
    if c["probs"]:
        raise InputError(
            f"{mode}{where}from_logits=False but the input {ls} holds {c['probs']} values outside [0, 1]; pass "
            f"probabilities, or raw logits with from_logits=True"
        )
    if c["prob_sums"]:
        raise InputError(
            f"multiclass{where}from_logits=False but the input {ls} does not sum to 1 over the class axis at "
            f"{c['prob_sums']} pixels; apply softmax(dim=1) first, or pass raw logits with from_logits=True"
        )
    raise InputError(
        f"{mode}{where}mask holds {c['mask']} negative or non-finite values; a mask is a bool tensor or "
        f"non-negative per-pixel weights"
    )


@dataclass
class PendingCheck:
    """Counts of one call, on their way to the host (``check_inputs="deferred"`` or an accelerator)."""

    step: int
    counts: Tensor  # on the host (pinned on CUDA) or still on the device
    event: Any = None  # a CUDA event recorded after the copy, or None
    mode: str = "binary"
    shapes: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    @staticmethod
    def start(step: int, counts: Tensor, mode: str, shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> PendingCheck:
        """Begin the copy of ``counts`` to the host without blocking."""
        if counts.is_cuda:
            host = torch.empty(counts.shape, dtype=counts.dtype, pin_memory=True)
            host.copy_(counts, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call, unused-ignore]
            event.record()
            return PendingCheck(step, host, event, mode, shapes)
        return PendingCheck(step, counts, None, mode, shapes)

    def read(self) -> list[int]:
        """The counts (waits, at most, for this call's copy: the next call's work is not waited for)."""
        if self.event is not None:
            self.event.synchronize()
        return [int(v) for v in self.counts.tolist()]

    def raise_if_bad(self) -> None:
        """Raise ``InputError`` naming the call these counts came from, if any is bad."""
        counts = self.read()
        if any(counts):
            raise_for_counts(counts, self.mode, self.shapes, None, None,
                             step=f" (in call {self.step}, reported one call late)")
