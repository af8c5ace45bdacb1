"""The demo's training loop: a composite loss trains a small U-Net on synthetic data.

``run_demo(DemoConfig(...))`` builds the loss with ``build_loss``, trains with Adam (one-cycle
learning rate), optionally ramps term weights (``schedule``, through ``criterion.set_weights``),
shows the per-term losses (``criterion.last_terms``) in a progress bar, evaluates Dice, IoU and
boundary F1 on the held-out split (hard predictions, computed from counts, not from any loss),
and writes to ``out``: ``summary.json``, TensorBoard scalars (when tensorboard is installed), a
profiler trace, and the PNGs ``grid.png`` and ``curves.png`` (when matplotlib is installed).
``summary.json`` says which of them were written (``outputs``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import build_loss
from .._composite import CompositeLoss
from .._errors import SeglossError, did_you_mean
from .._machine import machine_info
from .._options import CompileMode, Mode
from .data import CLASSES, TASKS, SegData, make_splits
from .model import TinyUNet

__all__ = [
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "default_spec",
    "default_steps",
    "class_counts",
    "dice_iou",
    "evaluate",
    "predict",
    "measure_step_times",
    "choose_threads",
    "faster_threads",
    "auto_threads",
    "boundary",
    "boundary_counts",
    "boundary_f1",
    "mode_of",
    "WeightSchedule",
    "parse_schedule",
    "machine_info",
    "resolve_device",
    "PLOT_HINT",
]

PLOT_HINT = 'pictures need matplotlib: pip install "segloss-registry[plot]"'
TENSORBOARD_HINT = 'TensorBoard scalars need tensorboard: pip install "segloss-registry[profile]"'
BOUNDARY_TOLERANCE = 1  # pixels: boundary F1 counts a boundary pixel within 1 pixel (8-neighbourhood) as matched


def mode_of(task: str) -> Mode:
    """The loss mode of a demo task: ``multiclass`` for multiclass, ``binary`` for binary and thin."""
    return "multiclass" if task == "multiclass" else "binary"


def default_spec(task: str) -> str:
    """``bce+dice`` for binary and thin, ``ce+dice`` for multiclass (bce is a sigmoid loss)."""
    return "ce+dice" if task == "multiclass" else "bce+dice"


def default_steps(task: str) -> int:
    """200 steps for binary (Dice > 0.99), 600 for multiclass (telling the shapes apart takes longer),
    300 for thin structures (enough for the losses to part ways)."""
    return {"binary": 200, "multiclass": 600, "thin": 300}.get(task, 200)


@dataclass
class DemoConfig:
    """Everything a demo run depends on (the defaults are the README's figures)."""

    spec: str | None = None  # None: default_spec(task)
    task: str = "binary"
    steps: int | None = None  # None: default_steps(task)
    batch_size: int = 16
    lr: float = 5e-3
    size: int = 64
    width: int = 8
    depth: int = 3
    n_train: int = 512
    n_val: int = 128
    device: str = "auto"
    threads: int | str | None = None  # None: leave torch's setting; "auto": choose_threads(); N: N threads
    compile: CompileMode = "auto"
    schedule: tuple[str, ...] | str | None = None  # e.g. "dice:1->0.2" or ("bce:0.01->1", ...); see parse_schedule
    seed: int = 0
    out: str | None = "runs/demo"  # None: write nothing
    eval_every: int = 0  # 0: five evaluations over the run
    timing_steps: int = 10  # steps timed with the eager and the compiled criterion; 0 skips
    profile_steps: int = 3  # training steps recorded by the profiler; 0 skips
    progress: bool = True
    plots: bool = True
    tensorboard: bool = True


@dataclass
class DemoResult:
    """What ``run_demo`` made: the trained model, the summary written to summary.json, the data."""

    model: nn.Module
    criterion: CompositeLoss
    summary: dict[str, Any]
    history: list[dict[str, float]]
    train: SegData
    val: SegData
    files: dict[str, str] = field(default_factory=dict)


# -- metrics (from hard predictions; independent of the losses) --------------------------------
def predict(logits: Tensor, task: str) -> Tensor:
    """Class ids (N,H,W): ``logits > 0`` for binary and thin (N,1,H,W), ``argmax`` over C for multiclass."""
    return logits.argmax(1) if task == "multiclass" else (logits[:, 0] > 0).long()


def _ids(target: Tensor, task: str) -> Tensor:
    return target if task == "multiclass" else (target[:, 0] > 0.5).long()


def class_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per-class counts (C, 3) of (intersection, predicted, true) pixels from class ids (N,*S)."""
    p = torch.nn.functional.one_hot(pred.reshape(-1), num_classes)
    t = torch.nn.functional.one_hot(target.reshape(-1), num_classes)
    return torch.stack([(p * t).sum(0), p.sum(0), t.sum(0)], dim=1)


def dice_iou(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class Dice ``2I/(P+T)`` and IoU ``I/(P+T-I)`` (float64, shape (C,)); a class absent from
    both prediction and target scores 1."""
    i, p, t = counts.double().unbind(1)
    empty = (p + t) == 0
    dice = torch.where(empty, 1.0, 2 * i / (p + t).clamp_min(1))
    iou = torch.where(empty, 1.0, i / (p + t - i).clamp_min(1))
    return dice, iou


def boundary(mask: Tensor) -> Tensor:
    """Boundary pixels (N,H,W) bool of masks (N,H,W): pixels of the mask with at least one of their
    8 neighbours outside it (outside the image counts as outside): ``mask & ~erode_3x3(mask)``."""
    m = F.pad(mask.float()[:, None], (1, 1, 1, 1), value=0.0)
    eroded = -F.max_pool2d(-m, 3, stride=1)  # a min-pool: 1 only where the whole 3x3 is inside
    return mask & (eroded[:, 0] < 0.5)


def boundary_counts(pred: Tensor, truth: Tensor, tolerance: int = BOUNDARY_TOLERANCE) -> Tensor:
    """(matched predicted, predicted, matched true, true) boundary pixel counts (4,) int64 of bool
    masks (N,H,W): a boundary pixel is matched when the other mask's boundary lies within
    ``tolerance`` pixels of it (a (2 tolerance + 1)^2 square)."""
    bp, bt = boundary(pred), boundary(truth)

    def near(b: Tensor) -> Tensor:
        k = 2 * tolerance + 1
        return F.max_pool2d(b.float()[:, None], k, stride=1, padding=tolerance)[:, 0] > 0.5

    return torch.stack([(bp & near(bt)).sum(), bp.sum(), (bt & near(bp)).sum(), bt.sum()])


def boundary_f1(counts: Tensor) -> float:
    """Boundary F1 (the BF score of Csurka et al. 2013) from ``boundary_counts``: ``2 P R / (P + R)``
    with P the matched share of the predicted boundary and R that of the true one; 1 when both
    boundaries are empty, 0 when only one is."""
    mp, p, mt, t = (int(v) for v in counts.tolist())
    if p == 0 and t == 0:
        return 1.0
    precision = mp / p if p else 0.0
    recall = mt / t if t else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


@torch.no_grad()
def evaluate(model: nn.Module, data: SegData, batch_size: int = 64) -> dict[str, Any]:
    """Held-out Dice, IoU and boundary F1 over the whole split (pixel counts summed over all images).

    Binary and thin: the foreground class. Multiclass: the mean over the foreground classes
    (disc, rectangle, triangle), with each class's figures in ``per_class``. Boundary F1 uses a
    tolerance of ``BOUNDARY_TOLERANCE`` pixels.
    """
    was_training = model.training
    model.eval()
    C = len(CLASSES) if data.task == "multiclass" else 2
    counts = torch.zeros(C, 3, dtype=torch.int64, device=data.images.device)
    bcounts = torch.zeros(C, 4, dtype=torch.int64, device=data.images.device)
    for start in range(0, len(data), batch_size):
        logits = model(data.images[start:start + batch_size])
        pred = predict(logits, data.task)
        truth = _ids(data.targets[start:start + batch_size], data.task)
        counts += class_counts(pred, truth, C)
        for c in range(1, C):
            bcounts[c] += boundary_counts(pred == c, truth == c)
    model.train(was_training)
    dice, iou = dice_iou(counts.cpu())
    bf1 = [boundary_f1(bcounts[c].cpu()) for c in range(1, C)]
    names = CLASSES[1:] if data.task == "multiclass" else ("foreground",)
    return {
        "dice": float(dice[1:].mean()),
        "iou": float(iou[1:].mean()),
        "boundary_f1": sum(bf1) / len(bf1),
        "per_class": {n: {"dice": float(d), "iou": float(j), "boundary_f1": b}
                      for n, d, j, b in zip(names, dice[1:], iou[1:], bf1)},
    }


# -- timing -------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step_times(spec: str | dict[str, Any], mode: Mode, model: nn.Module, images: Tensor, target: Tensor,
                       steps: int = 5, lr: float = 1e-3) -> dict[str, Any]:
    """Time training steps (forward, loss, backward, Adam step) and the loss alone (forward and
    backward on fixed logits) on one batch, with the criterion eager (compile=False) and
    compiled (compile=True).

    Works on copies of ``model``. After a warm-up (the compiled criterion compiles on its first
    call, timed as ``first_call_s``), eager and compiled steps alternate, so that a busy machine
    slows both alike; each figure is the median of ``steps``, in milliseconds.
    """
    device = images.device
    with torch.no_grad():
        fixed = copy.deepcopy(model)(images)  # a copy: a forward in train mode updates BatchNorm statistics
    runners: dict[str, dict[str, Callable[[], None]]] = {}
    first: dict[str, float] = {}
    criteria: dict[str, CompositeLoss] = {}
    for name, flag in (("eager", False), ("compiled", True)):
        criterion = criteria[name] = build_loss(spec, mode=mode, compile=flag)
        net = copy.deepcopy(model)
        opt = torch.optim.Adam(net.parameters(), lr=lr)

        def train_step(criterion: CompositeLoss = criterion, net: nn.Module = net,
                       opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            criterion(net(images), target).backward()
            opt.step()

        def loss_step(criterion: CompositeLoss = criterion) -> None:
            criterion(fixed.clone().requires_grad_(True), target).backward()

        t0 = time.perf_counter()
        loss_step()  # first call: input checks, and for the compiled criterion the compile
        _sync(device)
        first[name] = time.perf_counter() - t0
        train_step()
        runners[name] = {"loss_ms": loss_step, "train_step_ms": train_step}
    times: dict[str, dict[str, list[float]]] = {n: {"loss_ms": [], "train_step_ms": []} for n in runners}
    for _ in range(steps):
        for key in ("loss_ms", "train_step_ms"):
            for name in runners:
                t0 = time.perf_counter()
                runners[name][key]()
                _sync(device)
                times[name][key].append(time.perf_counter() - t0)
    out: dict[str, Any] = {"steps": steps, "batch": list(images.shape)}
    for name, rows in times.items():
        out[name] = {key: 1e3 * sorted(v)[len(v) // 2] for key, v in rows.items()}
    out["compiled"]["first_call_s"] = first["compiled"]
    out["compiled"]["fell_back_to_eager"] = not criteria["compiled"].uses_compile(device)
    out["loss_speedup"] = out["eager"]["loss_ms"] / out["compiled"]["loss_ms"]
    return out


# -- threads ------------------------------------------------------------------------------------
def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def choose_threads() -> tuple[int, str]:
    """The starting point of ``--threads auto``: one thread per core this process may use, at most
    torch's default. ``faster_threads`` then times the real work with it and with one thread.

    Not the load average: it lags by a minute, so the ``pip install`` that runs just before the
    quick start's demo would make an idle machine look busy and cost the whole run a thread.
    """
    n = min(available_cores(), torch.get_num_threads())
    note = f"one per core: {n} of {available_cores()} cores"
    if hasattr(os, "getloadavg"):
        note += f" (1-minute load {os.getloadavg()[0]:.2f})"
    return n, note


def faster_threads(step: Callable[[], None], cores: int, rounds: int = 3) -> tuple[int, dict[int, float]]:
    """Time ``step`` with ``cores`` threads and with one, alternating, set torch to the faster and
    return it with the median ms of each.

    A measurement of the work itself, now: on an idle machine the cores win; when other processes
    keep every core busy, torch's threads wait on each other at every operator and one thread
    can be several times faster (the default demo: 208 s with 2 threads, 59 s with 1, under a
    load of 5 on 2 cores). One untimed call (one thread) warms up; then up to ``rounds`` timed
    pairs, stopping after the first when one count is more than twice as fast. With
    ``cores <= 1`` nothing is timed.
    """
    if cores <= 1:
        torch.set_num_threads(max(1, cores))
        return max(1, cores), {}
    torch.set_num_threads(1)
    step()  # first call: input checks, allocations
    times: dict[int, list[float]] = {cores: [], 1: []}
    med: dict[int, float] = {}
    for _ in range(rounds):
        for n in (cores, 1):
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            step()
            times[n].append(time.perf_counter() - t0)
        med = {n: 1e3 * sorted(v)[len(v) // 2] for n, v in times.items()}
        if max(med.values()) > 2 * min(med.values()):
            break
    best = 1 if med[1] < med[cores] else cores
    torch.set_num_threads(best)
    return best, med


def probe_note(best: int, med: dict[int, float], what: str) -> str:
    """``auto: 1 (a training step took 61 ms with 1 thread, 188 ms with 2, just now)``."""
    if not med:
        return f"auto: {best} (one core)"
    (cores,) = [n for n in med if n != 1]
    return f"auto: {what} took {med[1]:.3g} ms with 1 thread and {med[cores]:.3g} ms with {cores}, just now"


# -- term weight schedules ---------------------------------------------------------------------
_RAMP = re.compile(r"^\s*(?P<term>[A-Za-z_]\w*)\s*:\s*(?P<start>(?:(?!->).)+?)\s*(?:->\s*(?P<end>\S+))?\s*$")


@dataclass(frozen=True)
class WeightSchedule:
    """Linear ramps of term weights over a run: ``term -> (start, end)``.

    At step ``s`` of ``S`` (0-based) a term's weight is ``start + (end - start) * s / (S - 1)``,
    so the first step uses ``start`` and the last ``end``; a constant is a ramp with
    ``start == end``. Applied with ``criterion.set_weights``, which changes the weights of a
    built criterion (compiled or not) without building or compiling it again.
    """

    ramps: tuple[tuple[str, float, float], ...]

    def at(self, step: int, steps: int) -> dict[str, float]:
        f = step / (steps - 1) if steps > 1 else 1.0
        return {term: a * (1 - f) + b * f for term, a, b in self.ramps}  # exactly a first, b last

    def text(self) -> str:
        return ", ".join(f"{t}:{a:g}->{b:g}" if a != b else f"{t}:{a:g}" for t, a, b in self.ramps)


def parse_schedule(items: str | Sequence[str] | None, keys: Sequence[str]) -> WeightSchedule | None:
    """``"surface:0.01->0.5"`` (or several, comma-separated or as a list) -> ``WeightSchedule``.

    Each item is ``TERM:START->END`` (a linear ramp over the run) or ``TERM:VALUE`` (constant);
    ``TERM`` is a key of the criterion (``criterion.keys``, as in ``last_terms``); weights are
    finite numbers >= 0. Raises ``SeglossError`` naming the bad item.
    """
    if items is None:
        return None
    parts = [p for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",") if p.strip()]
    if not parts:
        return None
    ramps: list[tuple[str, float, float]] = []
    for part in parts:
        m = _RAMP.match(part)
        if m is None:
            raise SeglossError(f"demo: --schedule item {part!r} is not TERM:START->END or TERM:VALUE, "
                               f"e.g. '{keys[-1]}:0.01->0.5'")
        term = m["term"]
        if term not in keys:
            raise SeglossError(f"demo: --schedule names the term {term!r}{did_you_mean(term, keys)}, but the loss "
                               f"has the terms {', '.join(keys)}")
        if any(term == t for t, _, _ in ramps):
            raise SeglossError(f"demo: --schedule gives the term {term!r} twice")
        values = []
        for text in (m["start"], m["end"] if m["end"] is not None else m["start"]):
            try:
                v = float(text)
            except ValueError:
                v = math.nan
            if not (math.isfinite(v) and v >= 0):
                raise SeglossError(f"demo: --schedule {part!r}: weights must be finite numbers >= 0 (got {text!r})")
            values.append(v)
        ramps.append((term, values[0], values[1]))
    return WeightSchedule(tuple(ramps))


def resolve_device(name: str) -> torch.device:
    """``auto``: cuda when available, else cpu; anything else must be a device torch knows and has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise SeglossError(f"demo: unknown device {name!r} ({exc}); use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SeglossError(f"demo: device {name!r} asked for, but torch {torch.__version__} sees no CUDA device; "
                           "use --device cpu")
    return device


def _check_config(cfg: DemoConfig) -> None:
    problems = []
    if cfg.task not in TASKS:
        problems.append(f"task must be one of {', '.join(TASKS)} (got {cfg.task!r})")
    for name in ("batch_size", "size", "width", "depth", "n_train", "n_val"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be an int >= 1 (got {value!r})")
    for name in ("eval_every", "timing_steps", "profile_steps"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{name} must be an int >= 0 (got {value!r})")
    if cfg.steps is not None and (isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 1):
        problems.append(f"steps must be an int >= 1 (got {cfg.steps!r})")
    if cfg.threads not in (None, "auto") and (isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int)
                                              or cfg.threads < 1):
        problems.append(f"threads must be 'auto' or an int >= 1 (got {cfg.threads!r})")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        problems.append(f"lr must be a finite number > 0 (got {cfg.lr!r})")
    if not problems and cfg.size % 2**cfg.depth:
        problems.append(f"size must be divisible by 2**depth = {2**cfg.depth} (got size {cfg.size}, depth {cfg.depth})")
    if problems:
        raise SeglossError("demo: " + "; ".join(problems))


# -- the run --------------------------------------------------------------------------------------
@dataclass
class _Run:
    """A run as set up: the config with its defaults filled in, and what was built from it."""

    cfg: DemoConfig  # steps and spec filled in
    steps: int
    mode: Mode
    device: torch.device
    criterion: CompositeLoss
    schedule: WeightSchedule | None
    out: Path | None
    machine: dict[str, Any]
    t_start: float


@dataclass
class _Trained:
    """What the training loop made: per-step losses, held-out evaluations, step times, the batches."""

    history: list[dict[str, float]]
    evals: list[dict[str, Any]]
    step_times: list[float]
    weights: dict[str, float]  # the term weights of the last step ({} without a schedule)
    seconds: float
    batch: Callable[[int], tuple[Tensor, Tensor]]


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Train, evaluate, measure, and write the outputs; see the module docstring."""
    run = _set_up(cfg, log)
    train, val, data_s = _make_data(run)
    model = _make_model(run, train, log)
    untrained = evaluate(model, val)
    writer = _writer(run.out, run.cfg, log) if run.out is not None else None
    trained = _train(run, model, train, val, untrained, writer, log)
    _log_heldout(run, trained, untrained, log)
    x, y = trained.batch(0)
    timing = _time_steps(run, model, x, y, log)
    profile = _profile_run(run, model, x, y, log)
    summary = _summary(run, trained, untrained, data_s, timing, profile)
    files = {"profile": profile["dir"]} if profile is not None else {}
    files.update(_write_pictures_and_scalars(run, model, val, trained, writer, log))
    _finish_summary(run, summary, files)
    _write_summary(run, summary, files, log)
    log(f"done in {summary['time']['total_s']:.1f} s")
    return DemoResult(model, run.criterion, summary, trained.history, train, val, files)


def _set_up(cfg: DemoConfig, log: Callable[[str], None]) -> _Run:
    """Check ``cfg`` and fill in its defaults; pick the device and the threads; build the criterion
    (a bad spec or schedule fails here, before any work); say what the run will do."""
    _check_config(cfg)
    steps = cfg.steps or default_steps(cfg.task)
    spec = cfg.spec or default_spec(cfg.task)
    cfg = replace(cfg, steps=steps, spec=spec)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    threads_note = set_threads(cfg.threads)  # "auto": one per core for now; timed once there is a model
    mode = mode_of(cfg.task)
    criterion, schedule = _criterion(spec, mode, cfg.compile, cfg.schedule, steps)
    machine = machine_info(device)
    machine["torch_threads_chosen_by"] = threads_note
    uses_compile = criterion.uses_compile(device)
    log(f"segloss demo: {criterion.spec} ({cfg.task}), {steps} steps of {cfg.batch_size} "
        f"{cfg.size}x{cfg.size} images on {device}, criterion {'compiled' if uses_compile else 'eager'}"
        + (f"; weights ramped {schedule.text()}" if schedule is not None else ""))
    out = Path(cfg.out) if cfg.out is not None else None
    return _Run(cfg, steps, mode, device, criterion, schedule, out, machine, t_start)


def _criterion(spec: str, mode: Mode, compile: CompileMode, schedule_items: str | Sequence[str] | None,
               steps: int) -> tuple[CompositeLoss, WeightSchedule | None]:
    """The criterion and its weight schedule, set to the schedule's first step (every weight 0 fails here)."""
    criterion = build_loss(spec, mode=mode, compile=compile)
    schedule = parse_schedule(schedule_items, criterion.keys)
    if schedule is not None:
        criterion.set_weights(schedule.at(0, steps))
    return criterion, schedule


def _make_data(run: _Run) -> tuple[SegData, SegData, float]:
    """The training and held-out splits on the run's device (seeded), and the seconds they took."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train, val = make_splits(cfg.seed, cfg.n_train, cfg.n_val, cfg.task, cfg.size)
    train, val = train.to(run.device), val.to(run.device)
    return train, val, time.perf_counter() - t0


def _make_model(run: _Run, train: SegData, log: Callable[[str], None]) -> TinyUNet:
    """The untrained U-Net; with ``--threads auto`` on the CPU, the thread count timed on it."""
    cfg = run.cfg
    model = TinyUNet(3, train.num_classes, cfg.width, cfg.depth).to(run.device)
    note = run.machine["torch_threads_chosen_by"]
    if cfg.threads == "auto" and run.device.type == "cpu":
        note = auto_threads(model, run.criterion, train, cfg.batch_size)
    run.machine["torch_threads"] = run.machine["threads"] = torch.get_num_threads()
    run.machine["torch_threads_chosen_by"] = note
    log(f"threads: {run.machine['torch_threads']} ({note})")
    return model


class _LossLog:
    """The per-step losses: kept on the device and read back ten steps at a time (one device sync
    per ten steps) into ``history`` rows, and into TensorBoard scalars when there is a writer."""

    def __init__(self, keys: tuple[str, ...], writer: Any) -> None:
        self.keys = ("total", *keys)
        self.writer = writer
        self.history: list[dict[str, float]] = []
        self._pending: list[tuple[int, Tensor, float, dict[str, float]]] = []

    def add(self, step: int, values: Tensor, lr: float, weights: dict[str, float]) -> None:
        self._pending.append((step, values, lr, weights))

    @property
    def due(self) -> bool:
        return len(self._pending) >= 10

    def flush(self) -> None:
        for s, values, lr, w in self._pending:
            row = {"step": s, "lr": lr, **dict(zip(self.keys, values.tolist()))}
            row.update({f"weight/{k}": v for k, v in w.items()})
            self.history.append(row)
            if self.writer is not None:
                for k in self.keys:
                    self.writer.add_scalar(f"loss/{k}", row[k], s)
                self.writer.add_scalar("lr", lr, s)
                for k, v in w.items():
                    self.writer.add_scalar(f"weight/{k}", v, s)
        self._pending = []


def _train(run: _Run, model: nn.Module, train: SegData, val: SegData, untrained: dict[str, Any], writer: Any,
           log: Callable[[str], None]) -> _Trained:
    """The training loop: Adam with a one-cycle learning rate, the weight schedule, held-out
    evaluations (five by default), and the losses shown in a progress bar or periodic lines."""
    cfg, steps, criterion, schedule = run.cfg, run.steps, run.criterion, run.schedule
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    if writer is not None:
        _scalars(writer, "heldout", untrained, 0)
    batch = batches(train, cfg.batch_size, torch.Generator().manual_seed(cfg.seed), run.device)
    eval_every = cfg.eval_every or max(1, steps // 5)
    losses = _LossLog(criterion.keys, writer)
    evals: list[dict[str, Any]] = [{"step": 0, **untrained}]
    bar = _progress(cfg)
    every = max(1, steps // 10)
    model.train()
    t_train = time.perf_counter()
    step_times: list[float] = []
    weights: dict[str, float] = {}
    for step in range(steps):
        t_step = time.perf_counter()
        x, y = batch(step)
        if schedule is not None:
            weights = schedule.at(step, steps)
            criterion.set_weights(weights)
        loss = _train_step(model, criterion, opt, x, y)
        sched.step()
        losses.add(step + 1, torch.stack([loss.detach(), *criterion.last_terms.values()]),
                   float(sched.get_last_lr()[0]), weights)
        last = step + 1 == steps
        print_now = bar is None and ((step + 1) % every == 0 or last)
        if losses.due or last or print_now:
            losses.flush()
        _sync(run.device)
        step_times.append(time.perf_counter() - t_step)
        if (step + 1) % eval_every == 0 or last:
            metrics = evaluate(model, val)
            evals.append({"step": step + 1, **metrics})
            if writer is not None:
                _scalars(writer, "heldout", metrics, step + 1)
        text = _status(losses.history, losses.keys, schedule, weights, evals)
        if bar is not None:
            bar.set_postfix_str(text, refresh=False)
            bar.update(1)
        elif print_now:
            log(f"  step {step + 1:>5}/{steps}  {text}")
    if bar is not None:
        bar.close()
    return _Trained(losses.history, evals, step_times, weights, time.perf_counter() - t_train, batch)


def _train_step(model: nn.Module, criterion: CompositeLoss, opt: torch.optim.Optimizer, x: Tensor,
                y: Tensor) -> Tensor:
    """One optimiser step on the batch ``(x, y)``; returns the loss (not read back)."""
    opt.zero_grad(set_to_none=True)
    loss = criterion(model(x), y)
    loss.backward()
    opt.step()
    return loss


def _status(history: list[dict[str, float]], keys: tuple[str, ...], schedule: WeightSchedule | None,
            weights: dict[str, float], evals: list[dict[str, Any]]) -> str:
    """The progress line: the last losses read back, the weights, the last held-out Dice."""
    terms = history[-1] if history else {}
    text = " ".join(f"{k}={terms[k]:.3f}" for k in keys if k in terms)
    if schedule is not None:
        text += " | w " + " ".join(f"{k}={v:.3g}" for k, v in weights.items())
    if evals[-1]["step"] > 0:
        text += f" | held-out dice={evals[-1]['dice']:.3f}"
    return text


def _log_heldout(run: _Run, trained: _Trained, untrained: dict[str, Any], log: Callable[[str], None]) -> None:
    """The final held-out figures, beside the untrained model's."""
    final = trained.evals[-1]
    log(f"held-out ({run.cfg.n_val} images): Dice {final['dice']:.4f}  IoU {final['iou']:.4f}  "
        f"boundary F1 {final['boundary_f1']:.4f}  (untrained model: Dice {untrained['dice']:.4f})  "
        f"trained in {trained.seconds:.1f} s")
    if run.cfg.task == "multiclass":
        log("  per class: " + ", ".join(f"{n} {m['dice']:.3f}" for n, m in final["per_class"].items()))


def _time_steps(run: _Run, model: nn.Module, x: Tensor, y: Tensor,
                log: Callable[[str], None]) -> dict[str, Any] | None:
    """``measure_step_times`` of the trained model on one batch (``timing_steps`` 0: None)."""
    cfg = run.cfg
    if not cfg.timing_steps:
        return None
    log(f"timing {cfg.timing_steps} steps with the criterion eager and compiled (the compile takes a while) ...")
    timing = measure_step_times(run.criterion.config(), run.mode, model, x, y, cfg.timing_steps, lr=cfg.lr)
    log(f"  loss forward+backward: eager {timing['eager']['loss_ms']:.2f} ms, compiled "
        f"{timing['compiled']['loss_ms']:.2f} ms (first call {timing['compiled']['first_call_s']:.1f} s); "
        f"training step: eager {timing['eager']['train_step_ms']:.1f} ms, compiled "
        f"{timing['compiled']['train_step_ms']:.1f} ms")
    return timing


def _profile_run(run: _Run, model: nn.Module, x: Tensor, y: Tensor,
                 log: Callable[[str], None]) -> dict[str, Any] | None:
    """A profiler trace of ``profile_steps`` training steps in ``out/profile`` (no output or 0 steps: None)."""
    cfg = run.cfg
    if run.out is None or not cfg.profile_steps:
        return None
    profile = _profile(model, run.criterion, x, y, run.out / "profile", cfg.profile_steps, cfg.lr, run.device)
    labels = profile["labels_total_ms"]
    log(f"profiled {cfg.profile_steps} training steps: {profile['step_ms']:.1f} ms each under the profiler; "
        + ", ".join(f"{k} {v / cfg.profile_steps:.1f} ms" for k, v in labels.items()))
    return profile


def _summary(run: _Run, trained: _Trained, untrained: dict[str, Any], data_s: float,
             timing: dict[str, Any] | None, profile: dict[str, Any] | None) -> dict[str, Any]:
    """``summary.json`` as far as it is known before the outputs are written (``_finish_summary`` completes it)."""
    cfg, criterion, schedule, history = run.cfg, run.criterion, run.schedule, trained.history
    final = trained.evals[-1]
    warm = trained.step_times[min(5, len(trained.step_times) - 1):]
    keys = ("total", *criterion.keys)
    return {
        "spec": criterion.spec,
        "task": cfg.task,
        "mode": run.mode,
        "loss_config": criterion.config(),
        "metrics": {
            "heldout_images": cfg.n_val,
            "dice": final["dice"],
            "iou": final["iou"],
            "boundary_f1": final["boundary_f1"],
            "per_class": final["per_class"],
            "untrained": {"dice": untrained["dice"], "iou": untrained["iou"], "boundary_f1": untrained["boundary_f1"]},
            "definition": "hard predictions (logit > 0 or argmax); Dice 2I/(P+T) and IoU I/(P+T-I) from pixel "
                          "counts summed over the held-out split; boundary F1: 2PR/(P+R) of the boundary pixels "
                          f"matched within {BOUNDARY_TOLERANCE} pixel; multiclass: mean over the foreground classes",
        },
        "schedule": None if schedule is None else {
            "ramps": {t: {"start": a, "end": b} for t, a, b in schedule.ramps},
            "rule": "linear in the step: start at the first step, end at the last; criterion.set_weights each step",
            "final_weights": criterion.weights if hasattr(criterion, "weights") else trained.weights,
        },
        "evaluations": trained.evals,
        "final_losses": {k: history[-1][k] for k in keys},
        "final_losses_mean_last_10": {k: sum(r[k] for r in history[-10:]) / len(history[-10:]) for k in keys},
        "time": {
            "total_s": None,  # filled in by _finish_summary
            "data_s": data_s,
            "train_s": trained.seconds,
            "train_step_ms_mean": 1e3 * sum(warm) / len(warm),
            "criterion": "compiled" if criterion.uses_compile(run.device) else "eager",
        },
        "step_times": timing,
        "profile": profile,
        # what was asked for; "outputs" (_finish_summary) says what was written
        "settings": {(f"{k}_requested" if k in ("tensorboard", "plots") else k):
                     (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "machine": run.machine,
        "torch": torch.__version__,
    }


def _write_pictures_and_scalars(run: _Run, model: nn.Module, val: SegData, trained: _Trained, writer: Any,
                                log: Callable[[str], None]) -> dict[str, str]:
    """The PNGs (with matplotlib and ``plots``) and the closed TensorBoard scalars; what was written."""
    if run.out is None:
        return {}
    cfg = run.cfg
    files = {}
    if cfg.plots:
        files = _pictures(run.out, model, val, trained.history, trained.evals, run.criterion.keys, cfg, log)
    if writer is not None:
        writer.close()
        files["scalars"] = str(run.out / "scalars")
    return files


def _finish_summary(run: _Run, summary: dict[str, Any], files: dict[str, str]) -> None:
    """The total time, the load at the end, and what was written (``outputs``) or is missing and why."""
    cfg = run.cfg
    summary["time"]["total_s"] = time.perf_counter() - run.t_start
    summary["machine"]["load_average_at_end"] = machine_info(run.device).get("load_average_1_5_15")
    summary["outputs"] = {
        "tensorboard_scalars": "scalars" in files,
        "profiler_trace": "profile" in files,
        "pictures": "grid" in files,
        "missing": [what for what, ok, want in (
            (TENSORBOARD_HINT, "scalars" in files, cfg.tensorboard),
            (PLOT_HINT, "grid" in files, cfg.plots)) if want and not ok and run.out is not None],
    }


def _write_summary(run: _Run, summary: dict[str, Any], files: dict[str, str], log: Callable[[str], None]) -> None:
    """``summary.json`` (listing every file written, itself included) and how to look at the outputs."""
    out = run.out
    if out is None:
        return
    files["summary"] = str(out / "summary.json")
    summary["files"] = files
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"wrote {out}/: " + ", ".join(Path(p).name for p in files.values()))
    view = _view_hint(out, "scalars" in files, "profile" in files)
    if view:
        log(view)


def auto_threads(model: nn.Module, criterion: CompositeLoss, train: SegData, batch_size: int) -> str:
    """``--threads auto`` with a model: time forward, loss and backward of the first batch on a copy
    of ``model`` (its BatchNorm statistics stay untouched) with one thread per core and with one,
    keep the faster (``faster_threads``), and say why."""
    net = copy.deepcopy(model)
    x, y = train.images[:batch_size], train.targets[:batch_size]

    def step() -> None:
        net.zero_grad(set_to_none=True)
        criterion(net(x), y).backward()

    best, med = faster_threads(step, choose_threads()[0])
    return probe_note(best, med, "a training step")


def set_threads(threads: int | str | None) -> str:
    """Apply ``threads`` (None: leave torch's setting; "auto": ``choose_threads``; N) and say why."""
    if threads == "auto":
        n, note = choose_threads()
        torch.set_num_threads(n)
        return note
    if threads is not None:
        torch.set_num_threads(int(threads))
        return "--threads"
    return "as set by the caller"


def batches(train: SegData, batch_size: int, gen: torch.Generator,
            device: torch.device) -> Callable[[int], tuple[Tensor, Tensor]]:
    """``batch(step)`` for steps 0, 1, 2, ...: a fresh shuffle of ``train`` every epoch (drawn from
    ``gen``), then random horizontal and vertical flips; the same generator seed gives the same batches."""
    n_train = len(train)
    per_epoch = max(1, n_train // batch_size)
    order = torch.randperm(n_train, generator=gen)

    def batch(step: int) -> tuple[Tensor, Tensor]:
        nonlocal order
        k = step % per_epoch
        if k == 0 and step > 0:
            order = torch.randperm(n_train, generator=gen)
        idx = order[k * batch_size:(k + 1) * batch_size].to(device)
        x, y = train.images[idx], train.targets[idx]
        # random flips: the classes (disc, rectangle, triangle) and thin structures are unchanged by them
        dims = [d for d, flip in zip((-1, -2), torch.rand(2, generator=gen) < 0.5) if flip]
        return (x.flip(dims), y.flip(dims)) if dims else (x, y)

    return batch


def _view_hint(out: Path, scalars: bool, trace: bool) -> str | None:
    """How to look at what was written: TensorBoard only when it is installed and has something to show."""
    import importlib.util

    has_tb = importlib.util.find_spec("tensorboard") is not None
    has_tb_profiler = importlib.util.find_spec("torch_tb_profiler") is not None
    if scalars or (trace and has_tb and has_tb_profiler):
        what = ["scalars"] if scalars else []
        if trace and has_tb_profiler:
            what.append("the trace in the PyTorch Profiler tab")
        return f"  view: tensorboard --logdir {out}   ({'; '.join(what)})"
    if trace:
        return (f"  view the trace {out}/profile/*.pt.trace.json in https://ui.perfetto.dev, or "
                f"{TENSORBOARD_HINT.replace('TensorBoard scalars need', 'for TensorBoard:')}")
    return None


def _progress(cfg: DemoConfig) -> Any:
    if not cfg.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.steps, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def _writer(out: Path, cfg: DemoConfig, log: Callable[[str], None]) -> Any:
    if not cfg.tensorboard:
        return None
    folder = out / "scalars"
    if folder.is_dir():  # one run per output folder: old event files would mix with (or pass for) the new curves
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log(f"no TensorBoard scalars: {TENSORBOARD_HINT}")
        return None
    return SummaryWriter(log_dir=str(folder))


def _scalars(writer: Any, prefix: str, metrics: dict[str, Any], step: int) -> None:
    writer.add_scalar(f"{prefix}/dice", metrics["dice"], step)
    writer.add_scalar(f"{prefix}/iou", metrics["iou"], step)
    writer.add_scalar(f"{prefix}/boundary_f1", metrics["boundary_f1"], step)
    if len(metrics["per_class"]) > 1:
        for name, m in metrics["per_class"].items():
            writer.add_scalar(f"{prefix}/dice_{name}", m["dice"], step)
            writer.add_scalar(f"{prefix}/iou_{name}", m["iou"], step)


def _profile(model: nn.Module, criterion: CompositeLoss, x: Tensor, y: Tensor, folder: Path, steps: int,
             lr: float, device: torch.device) -> dict[str, Any]:
    """A profiler trace of ``steps`` training steps on a copy of the model (``profiling.profile_steps``,
    the code path of ``segloss profile``); returns where it is and what took the time."""
    from ..profiling import profile_steps, safe_run_name

    net = copy.deepcopy(model)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.profiler.record_function("demo/model_forward"):
            logits = net(x)
        loss = criterion(logits, y)
        with torch.profiler.record_function("demo/backward"):
            loss.backward()
        with torch.profiler.record_function("demo/optimizer"):
            opt.step()

    if folder.is_dir():  # one trace per output folder
        for old in folder.glob("*.pt.trace.json*"):
            old.unlink()
    from ..cli._quiet import without_profiler_noise

    with without_profiler_noise():  # kineto's start/stop lines on stderr
        s = profile_steps(step, folder, steps=steps, device=device, worker=safe_run_name(f"demo_{criterion.spec}"))
    return {
        "dir": str(folder),
        "files": [str(f) for f in s.trace_files],
        "steps": s.steps,
        "step_ms": s.step_ms,
        "peak_bytes": s.peak_bytes,
        "top_ops_self_ms": {r.name: r.self_us / 1e3 for r in s.top_ops[:8]},
        "labels_total_ms": {r.name: r.total_us / 1e3 for r in s.labels + s.top_ops
                            if r.name.startswith(("segloss/", "demo/"))},
    }


# -- pictures ---------------------------------------------------------------------------------------
_COLOURS = ((0.0, 0.0, 0.0), (0.95, 0.35, 0.25), (0.25, 0.75, 0.35), (0.3, 0.5, 0.95))  # background, classes


def _pictures(out: Path, model: nn.Module, val: SegData, history: list[dict[str, float]],
              evals: list[dict[str, Any]], keys: tuple[str, ...], cfg: DemoConfig,
              log: Callable[[str], None]) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        log(f"no pictures: {PLOT_HINT}")
        return {}
    out.mkdir(parents=True, exist_ok=True)
    colours = torch.tensor(_COLOURS)
    n = min(6, len(val))
    with torch.no_grad():
        model.eval()
        pred = predict(model(val.images[:n]), val.task).cpu()
        model.train()
    truth = _ids(val.targets[:n], val.task).cpu()
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for j in range(n):
        panels = (val.images[j].cpu().permute(1, 2, 0), colours[truth[j]], colours[pred[j]])
        for i, (panel, title) in enumerate(zip(panels, ("image", "target", "prediction"))):
            axes[i, j].imshow(panel.numpy(), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(title)
    names = CLASSES[1:] if val.task == "multiclass" else ("foreground",)
    handles = [Rectangle((0, 0), 1, 1, color=_COLOURS[k + 1]) for k in range(len(names))]
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    what = "mean Dice over the shapes" if val.task == "multiclass" else "Dice"
    fig.suptitle(f"{cfg.task}, loss {cfg.spec}: held-out {what} {evals[-1]['dice']:.3f}")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    grid = out / "grid.png"
    fig.savefig(grid, dpi=72)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps = [r["step"] for r in history]
    for k in ("total", *keys):
        values = [r[k] for r in history]
        line, = left.plot(steps, values, alpha=0.25, lw=0.8)
        left.plot(steps, _smooth(values), color=line.get_color(), lw=1.6, label=k)
    left.set_xlabel("step")
    left.set_ylabel("loss (per term, unweighted)")
    positive = all(r[k] > 0 for r in history for k in ("total", *keys))
    left.set_yscale("log" if positive else "symlog", **({} if positive else {"linthresh": 1e-2}))  # surface < 0
    left.legend()
    left.set_title("training losses")
    for key, label in (("dice", "Dice"), ("iou", "IoU"), ("boundary_f1", "boundary F1")):
        right.plot([e["step"] for e in evals], [e[key] for e in evals], marker="o", label=f"held-out {label}")
    right.set_ylim(0, 1)
    right.set_xlabel("step")
    right.legend(loc="lower right")
    right.set_title("held-out metrics" + (" (mean over the shapes)" if val.task == "multiclass" else ""))
    right.grid(alpha=0.3)
    fig.tight_layout()
    curves = out / "curves.png"
    fig.savefig(curves, dpi=72)
    plt.close(fig)
    return {"grid": str(grid), "curves": str(curves)}


def _smooth(values: list[float], alpha: float = 0.9) -> list[float]:
    """Exponential moving average, bias-corrected like TensorBoard's smoothing."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = alpha * avg + (1 - alpha) * v
        out.append(avg / (1 - alpha**i))
    return out
