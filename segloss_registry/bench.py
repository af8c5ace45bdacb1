"""The measurement engine of ``segloss bench``: forward+backward time, memory and bandwidth.

What one run measures, for every candidate (the spec eager and compiled, the ``also`` specs,
the peers that are installed) on the same inputs:

- **time**: wall time of one training step of the loss, ``loss = fn(logits, target);
  loss.backward()`` (CUDA: synchronised before and after). Candidates are *interleaved*: each
  round runs one step of every candidate, so a machine shared with other work slows them all
  alike; the report gives the median, the interquartile range, min and max, and each
  candidate's ratio to the reference (the spec compiled) as the median of the per-round ratios.
- **first call**: the wall time of the first step of a compiled candidate (dynamo trace,
  AOTAutograd, inductor for the forward and the backward graph), with the inductor and
  AOTAutograd cache hits/misses of that call, so a second process shows the cache at work.
- **peak memory**: bytes allocated during one step above what was alive before it (the
  inputs), the gradient buffer included. CUDA: ``torch.cuda.max_memory_allocated``. CPU:
  the allocation events of ``torch.profiler`` (``profile_memory=True``), summed in time
  order; both are measured, not estimated.
- **effective bandwidth**: ``(bytes(logits) + bytes(target) + bytes(grad)) / median time``,
  the data a fused single pass must move at least, divided by the time.
- **distance-map share**: for a spec with a distance-map term (``surface``, ``hausdorff_dt``,
  ``log_hausdorff_dt``), extra rows time the distance maps alone (ours eager and compiled,
  MONAI's scipy path), and their note gives the share of the whole step they take.

``run_benchmark(BenchConfig(...)) -> BenchReport``; ``report.format_text()``,
``format_markdown()`` and ``to_dict()`` (JSON) render it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._composite import CompositeLoss, build_loss
from ._errors import SeglossError

__all__ = [
    "BenchConfig",
    "BenchReport",
    "Candidate",
    "Measurement",
    "run_benchmark",
    "make_inputs",
    "machine_info",
    "seed_peer",
    "monai_peer",
    "peak_memory_of",
    "profiler_peak_bytes",
    "distance_candidates",
    "DISTANCE_TERMS",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BenchConfig:
    """What to measure. ``shape`` is the logits' shape (N, C, *S); ``also``: more specs to time
    beside ``spec`` (e.g. ``("bce",)`` to see what composition costs)."""

    spec: str
    mode: str = "binary"
    shape: tuple[int, ...] = (8, 1, 512, 512)
    dtype: str = "float32"
    device: str = "cpu"
    steps: int = 20
    warmup: int = 3
    peers: bool = True
    also: tuple[str, ...] = ()
    eager: bool = True
    compiled: bool = True
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    progress: bool = True
    name: str | None = None


@dataclass
class Candidate:
    """One thing to time: ``fn(logits, target)`` -> 0-dim loss, with its own target layout."""

    name: str
    group: str  # "segloss" | "seed" | "monai"
    fn: LossFn
    target: Tensor
    compiled: bool = False
    reference: bool = False
    note: str = ""
    share_of: str | None = None  # a part of another candidate's step: the note gives its share (prefix match)


@dataclass
class Measurement:
    """The numbers of one candidate (times in milliseconds, memory in bytes)."""

    name: str
    group: str
    compiled: bool
    reference: bool = False
    note: str = ""
    times_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    first_call_s: float | None = None
    cache: dict[str, int] = field(default_factory=dict)
    peak_bytes: int | None = None
    value: float | None = None
    error: str | None = None

    def _q(self, q: float) -> float:
        xs = sorted(self.times_ms)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def iqr_ms(self) -> tuple[float, float]:
        return self._q(0.25), self._q(0.75)

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        if self.times_ms:
            q1, q3 = self.iqr_ms
            d.update(median_ms=self.median_ms, q1_ms=q1, q3_ms=q3, min_ms=min(self.times_ms),
                     max_ms=max(self.times_ms), ratio_to_reference=self.ratio)
        return d


@dataclass
class BenchReport:
    """The result of ``run_benchmark``."""

    config: BenchConfig
    machine: dict[str, Any]
    bytes_moved: int
    memory_method: str
    results: list[Measurement]

    def to_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["shape"] = list(self.config.shape)
        out = {"config": cfg, "machine": self.machine, "bytes_moved": self.bytes_moved,
               "memory_method": self.memory_method, "results": []}
        for m in self.results:
            s = m.summary()
            if m.times_ms:
                s["bandwidth_gb_s"] = self.bytes_moved / (m.median_ms * 1e-3) / 1e9
            out["results"].append(s)
        return out

    def _rows(self) -> list[list[str]]:
        logits_bytes = _numel(self.config.shape) * _DTYPES[self.config.dtype].itemsize
        rows = []
        for m in self.results:
            if m.error is not None or not m.times_ms:
                rows.append([m.name, "-", "-", "-", "-", "-", "-", m.error or "not run"])
                continue
            q1, q3 = m.iqr_ms
            r = m.ratio
            ratio = "1 (ref)" if m.reference else (f"{r:.2f}" if r is not None else "-")
            gbs = self.bytes_moved / (m.median_ms * 1e-3) / 1e9
            mem = "-" if m.peak_bytes is None else f"{m.peak_bytes / 2**20:.1f} ({m.peak_bytes / logits_bytes:.1f}x)"
            first = "-"
            if m.first_call_s is not None:
                first = f"{m.first_call_s:.1f}"
                hits, misses = _cache_counts(m.cache)
                if hits or misses:
                    first += f" (cache {hits} hit/{misses} miss)"
            rows.append([m.name, f"{m.median_ms:.2f}", f"{q1:.2f}-{q3:.2f}", ratio, f"{gbs:.2f}", mem, first, m.note])
        return rows

    _HEAD = ["candidate", "median ms", "IQR ms", "x ref", "GB/s", "peak MiB (x logits)", "first call s", "note"]

    def header_lines(self) -> list[str]:
        c, mach = self.config, self.machine
        shape = "x".join(map(str, c.shape))
        return [
            f"segloss bench: {c.spec!r}  mode={c.mode}  logits {shape} {c.dtype} on {c.device}",
            f"machine: {mach['machine']}; torch {mach['torch']}, {mach['threads']} threads, Python {mach['python']}",
            f"{c.steps} timed forward+backward steps per candidate after {c.warmup} warm-up, interleaved; "
            f"x ref = median of per-round time ratios to the reference",
            f"peak memory: {self.memory_method}; GB/s = {self.bytes_moved / 1e6:.1f} MB "
            f"(logits + target read, gradient written) / median time",
        ]

    def format_text(self) -> str:
        rows = [self._HEAD, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEAD))]
        lines = self.header_lines() + [""]
        for i, r in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def format_markdown(self) -> str:
        lines = [f"<!-- {line} -->" for line in self.header_lines()]
        lines.append("| " + " | ".join(self._HEAD) + " |")
        lines.append("|" + "---|" * len(self._HEAD))
        for r in self._rows():
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in r) + " |")
        return "\n".join(lines)


# -- inputs and machine -------------------------------------------------------------------------
def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def make_inputs(mode: str, shape: Sequence[int], dtype: str = "float32", device: str = "cpu",
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random logits (a leaf that requires grad) and a target for ``mode``.

    binary / multilabel: target in {0, 1} of the logits' shape and dtype (30 % foreground);
    multiclass: int64 class ids (N, *S) drawn uniformly from [0, C).
    """
    if dtype not in _DTYPES:
        raise SeglossError(f"bench: dtype must be one of {', '.join(_DTYPES)} (got {dtype!r})")
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        raise SeglossError(f"bench: device {device!r} is not usable here ({str(exc).splitlines()[0]}); "
                           f"use --device cpu") from None
    from .scenarios import parse_shape

    shape = parse_shape(list(shape))
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(shape, generator=g)).to(device=dev, dtype=_DTYPES[dtype]).requires_grad_(True)
    if mode == "multiclass":
        target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g).to(dev)
    elif mode in ("binary", "multilabel"):
        target = (torch.rand(shape, generator=g) < 0.3).to(device=dev, dtype=_DTYPES[dtype])
    else:
        raise SeglossError(f"bench: mode must be binary, multiclass or multilabel (got {mode!r})")
    return logits, target


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model and core count (and GPU name on CUDA), torch/Python versions, thread count."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    machine = f"{info['cpu']} ({info['cores']} cores visible)"
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        machine = f"{info['gpu']} ({info['gpu_memory_gib']} GiB), CUDA {info['cuda']}; host {machine}"
    info["machine"] = machine
    return info


# -- peers ---------------------------------------------------------------------------------------
class _Sum(nn.Module):
    """``sum_i w_i * module_i(logits, target_i)`` for the peers."""

    def __init__(self, parts: list[tuple[float, nn.Module, Callable[[Tensor], Tensor]]]):
        super().__init__()
        self.mods = nn.ModuleList([m for _, m, _ in parts])
        self.weights = [w for w, _, _ in parts]
        self.adapt = [a for _, _, a in parts]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total: Tensor | None = None
        for w, m, a in zip(self.weights, self.mods, self.adapt):
            v = m(logits, a(target))
            v = v if w == 1.0 else v * w
            total = v if total is None else total + v
        assert total is not None
        return total


def _same(t: Tensor) -> Tensor:
    return t


def seed_peer(criterion: CompositeLoss) -> tuple[str, nn.Module] | str:
    """The seed's modules for the same terms, or why there are none.

    Binary mode only (the seed flattens everything into one binary score). ``bce`` and
    ``dice`` with one weight become ``DiceBCELoss``; ``dice``, ``iou`` and ``focal`` their own
    module. The seed's modules ignore hyperparameters (smooth 1, focal alpha 0.8, gamma 2).
    """
    from . import _seed_reference as seed

    if criterion.options.mode != "binary":
        return "the seed's losses are binary only"
    if criterion.options.ignore_index is not None or not criterion.options.from_logits:
        return "the seed has no ignore_index and takes logits only"
    terms = {t.info.name: t for t in criterion.terms}
    if len(terms) != len(criterion.terms):
        return "a term repeats"
    parts: list[tuple[float, nn.Module, Callable[[Tensor], Tensor]]] = []
    names: list[str] = []
    if "bce" in terms and "dice" in terms and terms["bce"].weight == terms["dice"].weight:
        parts.append((terms.pop("bce").weight, seed.DiceBCELoss(), _same))
        terms.pop("dice")
        names.append("DiceBCELoss")
    table = {"dice": seed.DiceLoss, "iou": seed.IoULoss, "focal": seed.FocalLoss}
    for name, t in terms.items():
        if name not in table:
            return f"the seed has no module for '{name}' on its own"
        parts.append((t.weight, table[name](), _same))
        names.append(table[name].__name__)
    return "seed " + " + ".join(names), _Sum(parts)


def monai_peer(criterion: CompositeLoss) -> tuple[str, nn.Module, Callable[[Tensor], Tensor]] | str:
    """MONAI's losses for the same terms (with the same hyperparameters), or why there are none.

    ``dice`` pairs with ``focal`` into ``DiceFocalLoss`` or with ``bce``/``ce`` into
    ``DiceCELoss``; the rest map to ``DiceLoss`` (``iou``: ``jaccard=True``), ``FocalLoss``,
    and torch's ``BCEWithLogitsLoss`` / ``CrossEntropyLoss`` (MONAI has no plain BCE).
    Returns ``(name, module, target adapter)``.
    """
    try:
        import monai.losses as ml
    except ImportError:
        return "MONAI is not installed (pip install monai)"
    mode = criterion.options.mode
    if criterion.options.ignore_index is not None or not criterion.options.from_logits:
        return "not compared with ignore_index or probabilities"
    terms = {t.info.name: t for t in criterion.terms}
    if len(terms) != len(criterion.terms):
        return "a term repeats"
    multiclass = mode == "multiclass"
    act: dict[str, Any] = {"softmax": True, "to_onehot_y": True} if multiclass else {"sigmoid": True}

    def ids(t: Tensor) -> Tensor:
        return t.unsqueeze(1)

    def ids_flat(t: Tensor) -> Tensor:
        return t

    adapt = ids if multiclass else _same

    def region(t: Any) -> dict[str, Any]:
        p = t.params
        kw = {"smooth_nr": p.smooth, "smooth_dr": p.smooth, "batch": not p.per_image}
        if getattr(p, "class_weights", None) is not None:
            raise _Unsupported("class_weights")
        if multiclass:
            kw["include_background"] = p.include_background
        return kw

    parts: list[tuple[float, nn.Module, Callable[[Tensor], Tensor]]] = []
    names: list[str] = []
    try:
        if "dice" in terms and "focal" in terms:
            d, f = terms.pop("dice"), terms.pop("focal")
            parts.append((1.0, ml.DiceFocalLoss(**act, **region(d), gamma=f.params.gamma, alpha=f.params.alpha,
                                               lambda_dice=d.weight, lambda_focal=f.weight), adapt))
            names.append("DiceFocalLoss")
        elif "dice" in terms and ("bce" in terms or "ce" in terms):
            d = terms.pop("dice")
            c = terms.pop("ce") if "ce" in terms else terms.pop("bce")
            if getattr(c.params, "pos_weight", None) is not None or getattr(c.params, "class_weights", None):
                raise _Unsupported("weighted cross-entropy")
            if getattr(c.params, "label_smoothing", 0.0):
                raise _Unsupported("label_smoothing")
            parts.append((1.0, ml.DiceCELoss(**act, **region(d), lambda_dice=d.weight, lambda_ce=c.weight), adapt))
            names.append("DiceCELoss")
        for name, t in terms.items():
            if name == "dice":
                parts.append((t.weight, ml.DiceLoss(**act, **region(t)), adapt))
                names.append("DiceLoss")
            elif name == "iou":
                parts.append((t.weight, ml.DiceLoss(**act, **region(t), jaccard=True), adapt))
                names.append("DiceLoss(jaccard)")
            elif name == "focal":
                kw = {"use_softmax": True, "to_onehot_y": True} if multiclass else {}
                parts.append((t.weight, ml.FocalLoss(**kw, gamma=t.params.gamma, alpha=t.params.alpha), adapt))
                names.append("FocalLoss")
            elif name == "bce" and not multiclass and t.params.pos_weight is None:
                parts.append((t.weight, nn.BCEWithLogitsLoss(), _same))
                names.append("BCEWithLogits")
            elif name == "ce" and multiclass and not t.params.class_weights and not t.params.label_smoothing:
                parts.append((t.weight, nn.CrossEntropyLoss(), ids_flat))
                names.append("CrossEntropy")
            elif name in _MONAI_DISTANCE:
                parts.append((t.weight, _monai_distance_module(ml, t, act), adapt))
                names.append(_MONAI_DISTANCE[name])
            else:
                return f"MONAI has no equivalent of '{t.spec()}'"
    except _Unsupported as exc:
        return f"not compared with {exc}"
    return "MONAI " + " + ".join(names), _Sum(parts), _same


class _Unsupported(Exception):
    pass


# the distance-map losses and MONAI's modules (scipy distance transforms on the host)
_MONAI_DISTANCE = {"surface": "BoundaryLoss", "hausdorff_dt": "HausdorffDTLoss", "log_hausdorff_dt": "LogHausdorffDTLoss"}
DISTANCE_TERMS = tuple(_MONAI_DISTANCE)


def _monai_distance_module(ml: Any, term: Any, act: dict[str, Any]) -> nn.Module:
    p = term.params
    if getattr(p, "class_weights", None) is not None:
        raise _Unsupported("class_weights")
    if getattr(p, "spacing", None) is not None:
        raise _Unsupported("spacing (MONAI's distance losses have none)")
    kw: dict[str, Any] = {"include_background": p.include_background, **act}
    if term.info.name != "surface":
        kw["alpha"] = p.alpha
    return getattr(ml, _MONAI_DISTANCE[term.info.name])(**kw)  # type: ignore[no-any-return]


def distance_candidates(criterion: CompositeLoss, target: Tensor, compiled: bool, peers: bool
                        ) -> tuple[list[Candidate], list[Measurement]]:
    """Rows that time the distance maps alone, so the report shows their share of each step.

    ``segloss distance maps only``: what the criterion's distance terms transform (the target
    of ``surface``; target and thresholded prediction of ``hausdorff_dt``), through the same
    shared ops (``segloss_registry.ops``), eager and compiled. ``MONAI distance maps only``:
    the same maps by MONAI's own methods (``BoundaryLoss.compute_distance_map``,
    ``HausdorffDTLoss.distance_field``, scipy on the host). Empty when no term uses them.
    """
    from ._inputs import normalise
    from .ops import distance_field, signed_distance_map

    terms = [t for t in criterion.terms if t.info.name in DISTANCE_TERMS]
    if not terms:
        return [], []
    opts = criterion.options

    def ours(logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            inp = normalise(logits.detach(), target, opts)
            maps = []
            for t in terms:
                spacing = getattr(t.params, "spacing", None)
                sp = None if spacing is None else tuple(spacing)
                if t.info.name == "surface":
                    maps.append(signed_distance_map(inp, sp))
                else:
                    maps.append(distance_field(inp, "target", sp))
                    maps.append(distance_field(inp, "prediction", sp))
            return torch.stack([m.sum() for m in maps]).sum()

    whole = f"segloss {{}} {criterion.spec}"
    cands = [Candidate("segloss distance maps only (eager)", "segloss", ours, target, share_of=whole.format("eager"))]
    if compiled:
        cands.insert(0, Candidate("segloss distance maps only (compiled)", "segloss",
                                  torch.compile(ours, fullgraph=True), target, compiled=True,
                                  share_of=whole.format("compiled")))
    skipped: list[Measurement] = []
    if peers:
        peer = _monai_distance_maps(criterion)
        if isinstance(peer, str):
            skipped.append(Measurement("MONAI distance maps only", "monai", False, error=peer))
        else:
            cands.append(Candidate("MONAI distance maps only (scipy, eager)", "monai", peer, target,
                                   share_of="MONAI"))
    return cands, skipped


def _monai_distance_maps(criterion: CompositeLoss) -> LossFn | str:
    """MONAI's distance-map computations for the criterion's distance terms, as its losses run them."""
    try:
        import monai.losses as ml
        from monai.networks import one_hot  # type: ignore[attr-defined]
    except ImportError:
        return "MONAI is not installed (pip install monai)"
    mode = criterion.options.mode
    if criterion.options.ignore_index is not None or not criterion.options.from_logits:
        return "not compared with ignore_index or probabilities"
    terms = [t for t in criterion.terms if t.info.name in DISTANCE_TERMS]
    for t in terms:
        if getattr(t.params, "spacing", None) is not None:
            return "MONAI's distance losses have no spacing"

    def maps(logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            if mode == "multiclass":
                p = torch.softmax(logits.detach(), 1)
                t = one_hot(target.unsqueeze(1), num_classes=logits.shape[1])
            else:
                p, t = torch.sigmoid(logits.detach()), target
            out = []
            for term in terms:
                keep_bg = getattr(term.params, "include_background", True) or mode != "multiclass"
                a, b = (p, t) if keep_bg else (p[:, 1:], t[:, 1:])
                if term.info.name == "surface":
                    out.append(ml.BoundaryLoss().compute_distance_map(b).sum())  # type: ignore[attr-defined]
                else:
                    hd = ml.HausdorffDTLoss()  # type: ignore[attr-defined]
                    for i in range(a.shape[1]):  # as HausdorffDTLoss.forward: per channel
                        out.append(hd.distance_field(a[:, [i]]).sum() + hd.distance_field(b[:, [i]]).sum())
            return torch.stack(out).sum()

    return maps


# -- measuring ------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(fn: LossFn, logits: Tensor, target: Tensor) -> Tensor:
    logits.grad = None
    loss = fn(logits, target)
    if loss.requires_grad:  # a part timed alone (the distance maps) has no backward
        loss.backward()
    return loss


def _timed_step(fn: LossFn, logits: Tensor, target: Tensor) -> tuple[float, Tensor]:
    logits.grad = None
    _sync(logits.device)
    t0 = time.perf_counter()
    loss = fn(logits, target)
    if loss.requires_grad:
        loss.backward()
    _sync(logits.device)
    return (time.perf_counter() - t0) * 1e3, loss


def profiler_peak_bytes(prof: torch.profiler.profile, device_type: str = "cpu") -> int | None:
    """Peak of the running sum of the allocation events (``profile_memory=True``) on one device.

    The profiler reports each allocation (+bytes) and each free (-bytes), so the running sum
    is what the profiled code holds above what existed before; the peak is its largest rise
    above the lowest level reached before it (a free of an older block, such as last step's
    gradient, lowers the floor). None when there are no memory events.
    """
    want = torch.device(device_type).type
    events = []
    for e in prof.profiler.kineto_results.events():  # type: ignore[union-attr]
        if e.name() != "[memory]":
            continue
        kind = str(e.device_type()).split(".")[-1].lower()
        if kind == want:
            events.append((e.start_ns(), e.nbytes()))
    if not events:
        return None
    events.sort(key=lambda x: x[0])
    running = low = peak = 0
    for _, nbytes in events:
        running += nbytes
        low = min(low, running)  # frees of blocks from before the window (an old gradient)
        peak = max(peak, running - low)
    return peak


def peak_memory_of(fn: LossFn, logits: Tensor, target: Tensor) -> tuple[int | None, str]:
    """Bytes one step allocates above what lived before it (peak), and how it was measured."""
    dev = logits.device
    if dev.type == "cuda":
        logits.grad = None
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        _step(fn, logits, target)
        _sync(dev)
        return torch.cuda.max_memory_allocated(dev) - base, "torch.cuda.max_memory_allocated above the inputs"
    logits.grad = None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(fn, logits, target)
    return profiler_peak_bytes(prof, "cpu"), "torch.profiler CPU allocation events above the inputs"


def _cache_snapshot() -> dict[str, int]:
    from torch._dynamo.utils import counters

    out: dict[str, int] = {}
    for group in ("inductor", "aot_autograd"):
        for k, v in counters[group].items():
            if "cache_hit" in k or "cache_miss" in k:
                out[f"{group}.{k}"] = int(v)
    return out


def _cache_counts(cache: dict[str, int]) -> tuple[int, int]:
    hits = sum(v for k, v in cache.items() if k.endswith(("fxgraph_cache_hit", "autograd_cache_hit")))
    misses = sum(v for k, v in cache.items() if k.endswith(("fxgraph_cache_miss", "autograd_cache_miss")))
    return hits, misses


def _candidates(cfg: BenchConfig, logits: Tensor, target: Tensor) -> tuple[list[Candidate], list[Measurement]]:
    cands: list[Candidate] = []
    skipped: list[Measurement] = []
    main: CompositeLoss | None = None
    for i, spec in enumerate((cfg.spec, *cfg.also)):
        variants = [(True, cfg.compiled), (False, cfg.eager)] if i == 0 else [(True, True), (False, True)]
        for compiled, wanted in variants:
            if not wanted:
                continue
            crit = build_loss(spec, mode=cfg.mode, compile=compiled, **cfg.loss_kwargs)
            main = main or crit
            kind = "compiled" if compiled else "eager"
            cands.append(Candidate(f"segloss {kind} {crit.spec}", "segloss", crit, target, compiled,
                                   reference=(i == 0 and not any(c.reference for c in cands))))
    if main is None:
        raise SeglossError("bench: nothing to measure (both --no-eager and --no-compiled)")
    if cfg.peers:
        s = seed_peer(main)
        if isinstance(s, str):
            skipped.append(Measurement("seed", "seed", False, error=s))
        else:
            note = "seed's focal: on the batch-mean BCE, alpha 0.8" if "FocalLoss" in s[0] else ""
            cands.append(Candidate(s[0] + " (eager)", "seed", s[1].to(logits.device), target, note=note))
        m = monai_peer(main)
        if isinstance(m, str):
            skipped.append(Measurement("MONAI", "monai", False, error=m))
        else:
            name, mod, _ = m
            cands.append(Candidate(name + " (eager)", "monai", mod.to(logits.device), target))
    more, missing = distance_candidates(main, target, cfg.compiled, cfg.peers)
    return cands + more, skipped + missing


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> BenchReport:
    """Measure every candidate of ``cfg`` on one set of inputs; see the module docstring."""
    if cfg.steps < 1 or cfg.warmup < 0:
        raise SeglossError(f"bench: steps must be >= 1 and warmup >= 0 (got {cfg.steps}, {cfg.warmup})")
    logits, target = make_inputs(cfg.mode, cfg.shape, cfg.dtype, cfg.device, cfg.seed)
    cands, skipped = _candidates(cfg, logits, target)
    results = [Measurement(c.name, c.group, c.compiled, c.reference, c.note) for c in cands]
    live: list[int] = []
    say = log or (lambda s: None)

    # first calls: checks and compilation, one candidate at a time
    for i, (c, m) in enumerate(zip(cands, results)):
        say(f"first call: {c.name}")
        try:
            before = _cache_snapshot()
            _sync(logits.device)
            t0 = time.perf_counter()
            loss = _step(c.fn, logits, c.target)
            _sync(logits.device)
            elapsed = time.perf_counter() - t0
            after = _cache_snapshot()
            if c.compiled:
                m.first_call_s = elapsed
                m.cache = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
            m.value = float(loss.detach().float())
            live.append(i)
        except Exception as exc:  # noqa: BLE001 - a peer that fails on these inputs is reported, not fatal
            m.error = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"

    bar = _progress(len(live) * (cfg.warmup + cfg.steps), cfg.progress)
    for _ in range(cfg.warmup):
        for i in live:
            _step(cands[i].fn, logits, cands[i].target)
            bar.update(1)
    ref = next((i for i in live if cands[i].reference), None)
    for _ in range(cfg.steps):
        round_ms: dict[int, float] = {}
        for i in live:
            ms, _loss = _timed_step(cands[i].fn, logits, cands[i].target)
            round_ms[i] = ms
            results[i].times_ms.append(ms)
            bar.update(1)
        if ref is not None:
            for i in live:
                results[i].ratios.append(round_ms[i] / round_ms[ref])
    bar.close()

    _note_shares(cands, results)
    method = ""
    for i in live:
        say(f"memory: {cands[i].name}")
        results[i].peak_bytes, method = peak_memory_of(cands[i].fn, logits, cands[i].target)
    logits.grad = None
    moved = logits.numel() * logits.element_size() * 2 + target.numel() * target.element_size()
    return BenchReport(cfg, machine_info(cfg.device), moved, method, results + skipped)


def _note_shares(cands: list[Candidate], results: list[Measurement]) -> None:
    """For a candidate that times a part of another's step: its median as a share of that step's median."""
    for c, m in zip(cands, results):
        if c.share_of is None or not m.times_ms:
            continue
        whole = next((r for r in results if r is not m and r.name.startswith(c.share_of) and r.times_ms), None)
        if whole is not None:
            m.note = f"{100 * m.median_ms / whole.median_ms:.0f}% of '{whole.name}' (distance transforms, no backward)"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="segloss bench", unit="step", leave=False)
