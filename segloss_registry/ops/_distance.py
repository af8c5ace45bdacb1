"""Exact Euclidean distance transforms in torch: batched, on the tensor's own device, no host sync.

``distance_transform_edt(mask, spacing=None)``
    For a boolean tensor ``mask`` of shape ``(N, *S)`` (``S`` 1D, 2D or 3D; each of the N
    samples is transformed on its own) the float32 tensor ``(N, *S)`` holding, for every
    element, the Euclidean distance to the nearest ``True`` element of the same sample, in the
    units of ``spacing`` (one positive length per spatial axis, or one for all; default 1, like
    scipy's ``sampling``). ``True`` elements get 0.

    **Convention.** scipy's ``scipy.ndimage.distance_transform_edt(x)`` measures the distance
    of every non-zero element to the nearest *zero* element; this op measures the distance to
    the nearest *True* element. So scipy's value for one sample ``x`` is
    ``distance_transform_edt(~x)``: ``distance_transform_edt(x == 0)`` in general.

    **A sample with no True element** (empty mask) has no distance to measure: it gives 0
    everywhere (finite, never inf). A full mask gives 0 everywhere as well (every element is
    True). The losses rely on this: a class absent from an image (or present everywhere) has
    no boundary and contributes 0, as in MONAI's ``BoundaryLoss``/``HausdorffDTLoss`` and
    Kervadec's ``one_hot2dist``. (scipy gives an artefact for an input without zeros: the
    distance to a virtual zero outside the array.)

``signed_distance(mask, spacing=None)``
    Kervadec's signed distance map (``one_hot2dist`` of the boundary-loss paper's code, and
    MONAI's ``BoundaryLoss``), per sample: ``d_out`` (distance to the nearest True element)
    outside the mask, ``-(d_in - 1)`` inside it, with ``d_in`` the distance to the nearest
    False element: negative inside, 0 on the inner contour, positive outside. As in
    ``one_hot2dist`` the ``1`` is not scaled by ``spacing``. An empty or a full sample gives 0
    everywhere (no interface; MONAI skips such masks and ``one_hot2dist`` leaves empty ones 0).

How: a separable exact algorithm. The first spatial axis is done by scans (the index of the
last True element at or before each position, a running max by log2(n) shifted maxima, and of
the next one, a reversed running min): the 1D distance ``g`` along that axis, squared. Each
further axis is an exact min-plus pass of parabolas, ``f(i) = min_j g(j) + (s (i - j))^2``
over the whole line (the squared distances stay exact: integers in float32 for unit
spacing): for short lines one broadcast sum and ``amin``; for lines of 384 elements or more
on the CPU a two-level pass that uses the monotone minimisers of this Monge matrix
(``_minplus_two_level``: ``O(n^1.5)`` instead of ``O(n^2)`` per line, static shapes). The
lines go through in chunks of about ``2**20`` elements on the CPU (``2**26`` on an
accelerator) so every intermediate stays small. No Python loop over samples or classes, no
branch on tensor values, no host read: the whole transform is one custom operator
(``torch.ops.segloss_registry.squared_edt``, with a shape-only fake for tracing), so it runs
inside a compiled graph (``fullgraph=True``) as one opaque call, as well as beside one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from .._errors import InputError

__all__ = [
    "ClassDistances",
    "class_distances",
    "distance_field",
    "distance_transform_edt",
    "signed_distance",
    "signed_distance_map",
    "squared_distance_transform",
]

_CHUNK_ELEMENTS = {"cpu": 1 << 20}
_CHUNK_DEFAULT = 1 << 26  # cuda and other accelerators: a few large kernels


def _spacing(spacing: float | Sequence[float] | None, ndim: int, what: str) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
        values: tuple[float, ...] = (float(spacing),) * ndim
    else:
        try:
            values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InputError(
                f"{what}: spacing must be a positive number or one per spatial axis (got {spacing!r})"
            ) from None
        if len(values) != ndim:
            raise InputError(
                f"{what}: spacing has {len(values)} entries but the mask has {ndim} spatial axes; "
                f"give one length per spatial axis, e.g. spacing={[1.0] * ndim}"
            )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"{what}: every spacing must be finite and > 0 (got {spacing!r})")
    return values


def _check_mask(mask: object, what: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise InputError(f"{what}: mask must be a torch.Tensor (got {type(mask).__name__})")
    if mask.dtype != torch.bool:
        raise InputError(
            f"{what}: mask must be a bool tensor (got {mask.dtype}, shape {tuple(mask.shape)}); "
            f"pass e.g. target > 0.5 or mask.bool()"
        )
    if not 2 <= mask.dim() <= 4:
        raise InputError(
            f"{what}: mask must be (N, *S) with a batch axis and 1 to 3 spatial axes (got shape "
            f"{tuple(mask.shape)}); add a batch axis with mask[None]"
        )
    return mask


def _scan_pass(mask: Tensor, s: float) -> Tensor:
    """Squared 1D distance along axis 1 to the nearest True element (inf where the line has none)."""
    n = mask.shape[1]
    view = (1, n) + (1,) * (mask.dim() - 2)
    idx = torch.arange(n, device=mask.device, dtype=torch.float32).view(view)
    prev = torch.where(mask, idx, float("-inf"))  # -> the last True at or before i
    nxt = torch.where(mask, idx, float("inf"))  # -> the next True at or after i
    shift = 1
    while shift < n:  # log2(n) shifted maxima: several times faster than cummax over a strided axis
        prev[:, shift:] = torch.maximum(prev[:, shift:], prev[:, :-shift])
        nxt[:, :-shift] = torch.minimum(nxt[:, :-shift], nxt[:, shift:])
        shift *= 2
    d = torch.minimum(idx - prev, nxt - idx)
    if s != 1.0:
        d = d * s
    return d * d


def _budget(device: torch.device) -> int:
    return _CHUNK_ELEMENTS.get(device.type, _CHUNK_DEFAULT)


def _minplus_brute(lines: Tensor, s: float) -> Tensor:
    """``f(i) = min_j g(j) + (s (i - j))^2`` for every line of ``lines`` (L, n), all j for every i."""
    n = lines.shape[1]
    j = torch.arange(n, device=lines.device, dtype=torch.float32)
    kernel = (j.view(-1, 1) - j.view(1, -1)).square_()  # (i, j)
    if s != 1.0:
        kernel.mul_(s * s)
    step = max(1, _budget(lines.device) // (n * n))
    if step >= lines.shape[0]:
        return (lines.unsqueeze(1) + kernel).amin(dim=-1)
    out = torch.empty_like(lines)
    for start in range(0, lines.shape[0], step):
        torch.amin(lines[start : start + step].unsqueeze(1) + kernel, dim=-1, out=out[start : start + step])
    return out


_BLOCK = 32  # queries per block of the two-level pass
_TWO_LEVEL_FROM = 384  # line length from which it beats the full pass on the CPU


def _minplus_two_level(lines: Tensor, s: float, B: int = _BLOCK, integer: bool = False,
                       bound: int | None = None) -> Tensor:
    """The same minima in ``O(n^1.5)`` per line instead of ``O(n^2)``, exactly.

    The cost matrix ``M[i, j] = g(j) + (s (i - j))^2`` is a Monge matrix, so its row minimisers
    are monotone: if ``J(a)`` minimises row ``a`` and ``J(b)`` row ``b > a``, every row in
    between has a minimiser in ``[J(a), J(b)]`` (for any choice of the minimisers: a column
    left of ``J(a)`` never beats ``J(a)`` below row ``a``, one right of ``J(b)`` never beats
    ``J(b)`` above row ``b``). So: all columns for the anchor rows ``0, B, 2B, ..., n - 1``
    (``n^2 / B``), then each block of ``B`` rows against the columns between its two anchors'
    minimisers, cut into chunks of ``B`` columns. Those ranges overlap only at their ends, so a
    line has at most ``P = ceil((n - 1 + n/B) / B) + n/B`` (block, chunk) pairs whatever the
    data: static shapes, no host sync; a pair's ``B x B`` costs go through one fused
    multiply-add and a min, and a scatter-min puts each row's minimum back in place.
    ``integer``: every value of ``lines`` is an integer (unit spacing on every axis so far),
    which allows a cheaper exact expansion of the costs; with ``bound``, an upper bound of
    every finite value plus ``(n - 1)^2``, the anchors' minimisers come from packed int32 keys.
    """
    L, n = lines.shape
    dev = lines.device
    nb = -(-n // B)
    anchors = torch.tensor([b * B for b in range(nb)] + [n - 1], device=dev, dtype=torch.float32)
    s2 = s * s
    cols = torch.arange(n, device=dev, dtype=torch.float32)
    anchor_kernel = (anchors.view(-1, 1) - cols.view(1, -1)).square_().mul_(s2)  # (nb + 1, n)
    P = -(-(n - 1 + nb) // B) + nb
    pairs = torch.arange(P, device=dev)
    within = torch.arange(B, device=dev)
    rows_f = within.to(torch.float32).view(B, 1)
    tail = within.to(torch.float32).square().mul_(s2)
    block_start = torch.arange(nb, device=dev) * B
    # integer costs below 2**31 once shifted: the anchors' minimisers come from packed int32 keys
    keyed: tuple[float, int, Tensor] | None = None
    bits = max(1, (n - 1).bit_length())
    if integer and bound is not None and (bound + 2 + (n - 1) ** 2) << bits < 2**31:
        keyed = (float(bound + 1), bits, anchor_kernel.to(torch.int32).bitwise_left_shift_(bits))
    cols_i = torch.arange(n, device=dev, dtype=torch.int32)
    out = torch.empty_like(lines)
    step = max(1, _budget(dev) // max((nb + 1) * n, P * B * B))
    for start in range(0, L, step):
        g = lines[start : start + step]
        m = g.shape[0]
        if keyed is not None:  # one int32 min of (cost << bits | column): several times cheaper than argmin
            sentinel, bits, kernel_keys = keyed
            gk = torch.where(torch.isinf(g), sentinel, g).to(torch.int32).bitwise_left_shift_(bits).add_(cols_i)
            J = (gk.unsqueeze(1) + kernel_keys).amin(dim=-1).bitwise_and_((1 << bits) - 1)
        else:
            J = (g.unsqueeze(1) + anchor_kernel).argmin(dim=-1)  # (m, nb + 1): a minimiser per anchor row
        J = J.long()
        lo = torch.minimum(J[:, :-1], J[:, 1:])
        hi = torch.maximum(J[:, :-1], J[:, 1:])
        chunks = torch.div(hi - lo, B, rounding_mode="floor") + 1  # (m, nb)
        ends = chunks.cumsum(dim=1)
        blk = torch.searchsorted(ends, pairs.expand(m, P).contiguous(), right=True)  # (m, P)
        used = blk < nb
        blk = blk.clamp_(max=nb - 1)
        first = ends.gather(1, blk) - chunks.gather(1, blk)
        j = (lo.gather(1, blk) + (pairs - first) * B).unsqueeze(-1) + within  # (m, P, B) columns
        ok = (j <= hi.gather(1, blk).unsqueeze(-1)) & used.unsqueeze(-1)
        gj = g.gather(1, j.clamp(max=n - 1).flatten(1)).view(m, P, B)
        delta = (block_start[blk].unsqueeze(-1) - j).to(torch.float32)  # bB - j, an integer
        if integer:
            # every value an integer below 2**24: cost(row bB + r, column j) expanded as
            # [g_j + (bB - j)^2] + [2 (bB - j)] r + r^2 is exact, and one fused multiply-add
            a = torch.where(ok, gj + delta * delta, float("inf"))
            best = torch.addcmul(a.unsqueeze(-2), (2 * delta).unsqueeze(-2), rows_f).amin(dim=-1) + tail
        else:
            # g_j + s^2 (bB + r - j)^2 with the integer offset formed first: no cancellation
            a = torch.where(ok, gj, float("inf"))
            d = delta.unsqueeze(-2) + rows_f
            best = torch.addcmul(a.unsqueeze(-2), d, d, value=s2).amin(dim=-1)
        rows = block_start[blk].unsqueeze(-1) + within
        best = torch.where(rows < n, best, float("inf"))
        part = torch.full((m, n), float("inf"), device=dev)
        part.scatter_reduce_(1, rows.clamp(max=n - 1).flatten(1), best.flatten(1), "amin")
        out[start : start + step] = part
    return out


def _minplus_pass(g: Tensor, axis: int, s: float, integer: bool = False) -> Tensor:
    """``f(i) = min_j g(j) + (s (i - j))^2`` along ``axis`` of ``g`` (the exact lower envelope of parabolas)."""
    n = g.shape[axis]
    moved = g.movedim(axis, -1)
    shape = moved.shape
    lines = moved.reshape(-1, n)
    if n >= _TWO_LEVEL_FROM and g.device.type == "cpu":
        bound = sum((k - 1) ** 2 for k in g.shape[1:])  # the largest finite squared distance (unit spacing)
        exact = integer and bound < 2**23
        out = _minplus_two_level(lines, s, integer=exact, bound=bound if exact else None)
    else:
        out = _minplus_brute(lines, s)
    return out.reshape(shape).movedim(-1, axis)


def _squared_eager(mask: Tensor, sp: Sequence[float]) -> Tensor:
    f = _scan_pass(mask, sp[0])
    unit = all(x == 1.0 for x in sp)
    for axis in range(2, mask.dim()):
        f = _minplus_pass(f, axis, sp[axis - 1], integer=unit)
    # only a sample without any True element is inf after the passes: document it as 0
    return torch.where(torch.isinf(f), torch.zeros_like(f), f)


# One opaque operator for torch.compile: inductor would fuse the full min-plus pass into one
# reduction loop, several times slower on the CPU than these chunked kernels, and could not
# trace the data-dependent (but static-shaped) two-level pass as efficiently.
@torch.library.custom_op("segloss_registry::squared_edt", mutates_args=(),
                         schema="(Tensor mask, float[] spacing) -> Tensor")
def _squared_edt_op(mask: Tensor, spacing: Sequence[float]) -> Tensor:
    return _squared_eager(mask, spacing)


@_squared_edt_op.register_fake
def _(mask: Tensor, spacing: Sequence[float]) -> Tensor:
    return mask.new_empty(mask.shape, dtype=torch.float32)


def _squared(mask: Tensor, sp: tuple[float, ...]) -> Tensor:
    return _squared_edt_op(mask, list(sp))  # type: ignore[no-any-return]


@torch.no_grad()
def squared_distance_transform(mask: Tensor, spacing: float | Sequence[float] | None = None) -> Tensor:
    """The squared distances of ``distance_transform_edt`` (float32, ``(N, *S)``), 0 for an empty sample.

    Exact: for unit spacing the squared distances are integers, held exactly in float32 up
    to 2**24 (a 3D volume of side ~2000). Cheaper than squaring the distances (no sqrt).
    """
    mask = _check_mask(mask, "squared_distance_transform")
    sp = _spacing(spacing, mask.dim() - 1, "squared_distance_transform")
    return _squared(mask, sp)


@torch.no_grad()
def distance_transform_edt(mask: Tensor, spacing: float | Sequence[float] | None = None) -> Tensor:
    """Exact Euclidean distance from every element to the nearest True element of its sample.

    ``mask``: bool ``(N, *S)``, ``S`` 1D, 2D or 3D, any device. ``spacing``: None (1), a
    positive number, or one positive length per spatial axis (scipy's ``sampling``).
    Returns float32 ``(N, *S)`` on ``mask``'s device: 0 on True elements, and 0 everywhere
    in a sample with no True element. scipy's ``distance_transform_edt(x)`` (distance to the
    nearest zero) is ``distance_transform_edt(x == 0)``. See the module docstring.
    """
    mask = _check_mask(mask, "distance_transform_edt")
    sp = _spacing(spacing, mask.dim() - 1, "distance_transform_edt")
    return _squared(mask, sp).sqrt()


def _signed_from(mask: Tensor, d_out: Tensor, d_in: Tensor) -> Tensor:
    """Kervadec's signed map from the distances to the mask (``d_out``) and to its complement (``d_in``)."""
    dims = tuple(range(1, mask.dim()))
    view = (-1,) + (1,) * (mask.dim() - 1)
    full = mask.all(dim=dims).view(view)  # no False element: no interface, 0 like an empty mask
    inside = torch.where(full, torch.zeros_like(d_in), 1 - d_in)
    return torch.where(mask, inside, d_out)


@torch.no_grad()
def signed_distance(mask: Tensor, spacing: float | Sequence[float] | None = None) -> Tensor:
    """Kervadec's signed distance map of each sample of ``mask`` (bool ``(N, *S)``), float32.

    ``d_out`` outside (distance to the nearest True element), ``-(d_in - 1)`` inside
    (``d_in``: distance to the nearest False element), 0 for an empty or full sample; equal
    to ``one_hot2dist`` of Kervadec et al.'s code (with ``resolution=spacing``) and to the
    map of MONAI's ``BoundaryLoss``. One batched distance transform of ``mask`` and ``~mask``.
    """
    mask = _check_mask(mask, "signed_distance")
    sp = _spacing(spacing, mask.dim() - 1, "signed_distance")
    both = _squared(torch.cat([mask, ~mask]), sp).sqrt()
    d_out, d_in = both.chunk(2)
    return _signed_from(mask, d_out, d_in)


# -- per-class distance maps of a loss's inputs, computed once per call ---------------------------
class ClassDistances(NamedTuple):
    """The two sets of every (sample, class) map and the distances to each, all ``(N, C, *S)``.

    ``fg``/``bg``: bool, the foreground (value > 0.5) and background (<= 0.5) among the valid
    elements (an element that ``inp.mask`` ignores is in neither set, so it is neither
    foreground nor background: distances are measured to the valid elements only).
    ``to_fg``/``to_bg``: the distance to the nearest foreground/background element of the
    same sample and class (0 where that set is empty), in the dtype of ``inp.target``.
    """

    fg: Tensor
    bg: Tensor
    to_fg: Tensor
    to_bg: Tensor


Source = Literal["target", "prediction"]


def class_distances(inp: Any, source: Source = "target", spacing: Sequence[float] | None = None,
                    what: str = "class_distances") -> ClassDistances:
    """``ClassDistances`` of ``inp.target`` (``source="target"``) or of the thresholded
    prediction ``inp.prob > 0.5`` (``"prediction"``), shared through ``inp.shared``: every
    term of one call that asks for the same source and spacing gets the same tensors. Computed
    without gradient, by one batched ``distance_transform_edt`` of the ``2 N C`` masks.
    """
    nd = inp.target.dim() - 2
    sp = _spacing(spacing, nd, what)

    def compute() -> ClassDistances:
        # inp.prob outside no_grad: it is computed once and cached for the terms that need its gradient
        x = inp.target if source == "target" else inp.prob
        with torch.no_grad():
            on = x.detach() > 0.5
            if inp.mask is None:
                fg, bg = on, ~on
            else:
                valid = inp.mask != 0
                fg, bg = on & valid, ~on & valid
            n, c = fg.shape[0], fg.shape[1]
            spatial = fg.shape[2:]
            # squared distances are exact in float32 (integers on the unit grid); the root in the
            # compute dtype, so float64 inputs get float64-accurate maps
            d = _squared(torch.cat([fg, bg]).reshape(-1, *spatial), sp).to(x.dtype).sqrt()
            to_fg, to_bg = d.reshape(2 * n, c, *spatial).chunk(2)
            return ClassDistances(fg, bg, to_fg, to_bg)

    return inp.shared(("segloss_registry.ops.class_distances", source, sp), compute)  # type: ignore[no-any-return]


def signed_distance_map(inp: Any, spacing: Sequence[float] | None = None, what: str = "signed_distance_map") -> Tensor:
    """Kervadec's signed distance map of each class of ``inp.target``, ``(N, C, *S)``, shared.

    ``to_fg`` on the background, ``1 - to_bg`` on the foreground (``-(d_in - 1)``), 0 on
    ignored elements and for a class that is empty or fills every valid element of a sample.
    Equal to ``signed_distance`` per (sample, class) when nothing is ignored.
    """
    sp = _spacing(spacing, inp.target.dim() - 2, what)

    def compute() -> Tensor:
        dist = class_distances(inp, "target", sp, what)
        with torch.no_grad():
            has_bg = dist.bg.flatten(2).any(-1).view(*dist.bg.shape[:2], *([1] * (dist.bg.dim() - 2)))
            zero = torch.zeros_like(dist.to_fg)
            inside = torch.where(has_bg, 1 - dist.to_bg, zero)
            return torch.where(dist.fg, inside, torch.where(dist.bg, dist.to_fg, zero))

    return inp.shared(("segloss_registry.ops.signed_distance_map", sp), compute)  # type: ignore[no-any-return]


def distance_field(inp: Any, source: Source = "target", spacing: Sequence[float] | None = None,
                   what: str = "distance_field") -> Tensor:
    """Karimi's distance field (MONAI ``HausdorffDTLoss.distance_field``), ``(N, C, *S)``, shared.

    For each (sample, class) of the target or the thresholded prediction: the distance of a
    foreground element to the nearest background element, of a background element to the
    nearest foreground element; 0 on ignored elements and where a set is empty.
    """
    sp = _spacing(spacing, inp.target.dim() - 2, what)

    def compute() -> Tensor:
        dist = class_distances(inp, source, sp, what)
        with torch.no_grad():
            zero = torch.zeros_like(dist.to_fg)
            return torch.where(dist.fg, dist.to_bg, torch.where(dist.bg, dist.to_fg, zero))

    return inp.shared(("segloss_registry.ops.distance_field", source, sp), compute)  # type: ignore[no-any-return]
