"""``segloss compare SPEC [SPEC ...]``: the same model trained with each loss, side by side.

``run_compare(CompareConfig(specs=("bce", "bce+dice")))`` makes one data set (by default the
``thin`` task: thin curves and tiny dots, about 3 % foreground), then for each spec trains the
same U-Net from the same initial weights on the same batches in the same order (the same seed),
so the loss is the only difference. For each it measures the held-out Dice, IoU and boundary F1
(hard predictions, pixel counts; ``train.evaluate``), the median wall time of a training step
and of the loss's forward and backward alone, and writes to ``out``:

- ``compare.md``: the table (Markdown), also printed;
- ``compare.json``: the same figures, the settings, the machine;
- ``compare.png``: one picture, held-out images in columns; rows: image, target, and each spec's
  prediction (binary tasks: white = found, red = false alarm, blue = missed).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import build_loss
from .._composite import CompositeLoss
from .._errors import SeglossError
from .._machine import machine_info
from .._options import CompileMode
from .data import CLASSES, TASKS, SegData, make_splits
from .model import TinyUNet
from .train import (
    _COLOURS,
    BOUNDARY_TOLERANCE,
    PLOT_HINT,
    _ids,
    _sync,
    auto_threads,
    batches,
    default_steps,
    evaluate,
    mode_of,
    predict,
    resolve_device,
    set_threads,
)

__all__ = ["CompareConfig", "CompareRow", "CompareResult", "run_compare", "format_table"]


@dataclass
class CompareConfig:
    """What a comparison depends on; every spec is trained with the same settings and seed."""

    specs: tuple[str, ...] = ("bce", "bce+dice")
    task: str = "thin"
    steps: int | None = None  # None: train.default_steps(task)
    batch_size: int = 16
    lr: float = 5e-3
    size: int = 64
    width: int = 8
    depth: int = 3
    n_train: int = 512
    n_val: int = 128
    device: str = "auto"
    threads: int | str | None = None  # None: torch's setting; "auto": one per core; N
    compile: CompileMode = "auto"
    seed: int = 0
    out: str | None = "runs/compare"  # None: write nothing
    loss_timing_steps: int = 10  # calls of the loss alone (forward+backward on fixed logits) per spec
    progress: bool = True
    plots: bool = True


@dataclass
class CompareRow:
    """One spec's results."""

    spec: str  # as given
    normalised: str  # criterion.spec
    dice: float
    iou: float
    boundary_f1: float
    step_ms: float  # median wall time of a training step (forward, loss, backward, Adam)
    loss_ms: float  # median wall time of the loss's forward+backward on fixed logits
    final_loss: float  # mean of the last ten steps' total loss
    train_s: float
    model: nn.Module = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model")
        return d


@dataclass
class CompareResult:
    rows: list[CompareRow]
    untrained: dict[str, Any]
    summary: dict[str, Any]
    val: SegData
    files: dict[str, str] = field(default_factory=dict)


def _check(cfg: CompareConfig) -> None:
    problems = []
    if isinstance(cfg.specs, str) or not cfg.specs:
        problems.append("give one or more specs, e.g. specs=('bce', 'bce+dice')")
    if cfg.task not in TASKS:
        problems.append(f"task must be one of {', '.join(TASKS)} (got {cfg.task!r})")
    for name in ("batch_size", "size", "width", "depth", "n_train", "n_val"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be an int >= 1 (got {value!r})")
    if cfg.steps is not None and (isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 1):
        problems.append(f"steps must be an int >= 1 (got {cfg.steps!r})")
    lts = cfg.loss_timing_steps
    if isinstance(lts, bool) or not isinstance(lts, int) or lts < 0:
        problems.append(f"loss_timing_steps must be an int >= 0 (got {cfg.loss_timing_steps!r})")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        problems.append(f"lr must be a finite number > 0 (got {cfg.lr!r})")
    if not problems and cfg.size % 2**cfg.depth:
        problems.append(f"size must be divisible by 2**depth = {2**cfg.depth} (got size {cfg.size}, depth {cfg.depth})")
    if problems:
        raise SeglossError("compare: " + "; ".join(problems))


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if v else math.nan


def _train_one(spec: str, criterion: CompositeLoss, train: SegData, cfg: CompareConfig, device: torch.device,
               log: Callable[[str], None]) -> tuple[nn.Module, list[float], list[float], float]:
    """Train a fresh model (initialised from ``cfg.seed``) with ``criterion``; the batches come from
    the same seed for every spec. Returns the model, step times (s), total losses, training time."""
    steps = cfg.steps or default_steps(cfg.task)
    torch.manual_seed(cfg.seed)
    model = TinyUNet(3, train.num_classes, cfg.width, cfg.depth).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    batch = batches(train, cfg.batch_size, torch.Generator().manual_seed(cfg.seed), device)
    bar = _progress(cfg, steps, spec)
    times: list[float] = []
    losses: list[Tensor] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        t = time.perf_counter()
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        _sync(device)
        times.append(time.perf_counter() - t)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return model, times, torch.stack(losses).tolist(), time.perf_counter() - t0


def _loss_ms(criterion: CompositeLoss, model: nn.Module, x: Tensor, y: Tensor, steps: int,
             device: torch.device) -> float:
    """Median ms of the loss's forward+backward on fixed logits (the trained model's, on one batch)."""
    if steps == 0:
        return math.nan
    with torch.no_grad():
        model.eval()
        fixed = model(x)
        model.train()
    times = []
    for _ in range(steps + 1):  # the first call is not timed (input checks; the compile, if compiled)
        logits = fixed.clone().requires_grad_(True)
        t = time.perf_counter()
        criterion(logits, y).backward()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 1e3 * _median(times[1:])


def format_table(rows: Sequence[CompareRow], markdown: bool = True) -> str:
    """The comparison table: spec, held-out Dice, IoU, boundary F1, ms per step, ms per loss call."""
    headers = ("spec", "held-out Dice", "IoU", f"boundary F1 ({BOUNDARY_TOLERANCE} px)", "ms / training step",
               "ms / loss fwd+bwd", "final loss")
    table = [(f"`{r.normalised}`" if markdown else r.normalised, f"{r.dice:.4f}", f"{r.iou:.4f}",
              f"{r.boundary_f1:.4f}", f"{r.step_ms:.1f}", "-" if math.isnan(r.loss_ms) else f"{r.loss_ms:.2f}",
              f"{r.final_loss:.4f}") for r in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    return "\n".join(lines)


def run_compare(cfg: CompareConfig, log: Callable[[str], None] = print) -> CompareResult:
    """Train the same model with each spec of ``cfg.specs``; see the module docstring."""
    _check(cfg)
    cfg = replace(cfg, specs=tuple(cfg.specs), steps=cfg.steps or default_steps(cfg.task))
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    threads_note = set_threads(cfg.threads)
    mode = mode_of(cfg.task)
    # every spec is built before any training: a bad one fails at once
    criteria = [build_loss(spec, mode=mode, compile=cfg.compile) for spec in cfg.specs]
    log(f"segloss compare: {len(criteria)} losses on the {cfg.task} task, {cfg.steps} steps of {cfg.batch_size} "
        f"{cfg.size}x{cfg.size} images each on {device}, same initial model and batches (seed {cfg.seed})")
    train, val = make_splits(cfg.seed, cfg.n_train, cfg.n_val, cfg.task, cfg.size)
    train, val = train.to(device), val.to(device)
    fg = float((_ids(val.targets, val.task) > 0).double().mean())
    torch.manual_seed(cfg.seed)
    first = TinyUNet(3, train.num_classes, cfg.width, cfg.depth).to(device)
    if cfg.threads == "auto" and device.type == "cpu":  # timed once, with the first spec, for all of them
        threads_note = auto_threads(first, criteria[0], train, cfg.batch_size)
    log(f"threads: {torch.get_num_threads()} ({threads_note})")
    untrained = evaluate(first, val)
    x0, y0 = batches(train, cfg.batch_size, torch.Generator().manual_seed(cfg.seed), device)(0)

    rows: list[CompareRow] = []
    for spec, criterion in zip(cfg.specs, criteria):
        model, times, losses, train_s = _train_one(spec, criterion, train, cfg, device, log)
        metrics = evaluate(model, val)
        warm = times[min(3, len(times) - 1):]
        rows.append(CompareRow(
            spec=spec, normalised=criterion.spec, dice=metrics["dice"], iou=metrics["iou"],
            boundary_f1=metrics["boundary_f1"], step_ms=1e3 * _median(warm),
            loss_ms=_loss_ms(criterion, model, x0, y0, cfg.loss_timing_steps, device),
            final_loss=sum(losses[-10:]) / len(losses[-10:]), train_s=train_s, model=model,
        ))
        log(f"  {criterion.spec}: held-out Dice {metrics['dice']:.4f}, boundary F1 {metrics['boundary_f1']:.4f}, "
            f"{rows[-1].step_ms:.1f} ms per step ({train_s:.1f} s)")

    text = format_table(rows, markdown=False)
    log("")
    log(text)
    log(f"(held-out: {cfg.n_val} images, {100 * fg:.1f} % foreground pixels; untrained model: Dice "
        f"{untrained['dice']:.4f}, boundary F1 {untrained['boundary_f1']:.4f})")
    summary: dict[str, Any] = {
        "task": cfg.task,
        "mode": mode,
        "rows": [r.to_dict() for r in rows],
        "untrained": {k: untrained[k] for k in ("dice", "iou", "boundary_f1")},
        "heldout_foreground_fraction": fg,
        "definition": "hard predictions (logit > 0 or argmax) on the held-out split; Dice 2I/(P+T) and IoU "
                      "I/(P+T-I) from pixel counts; boundary F1: 2PR/(P+R) of the boundary pixels matched within "
                      f"{BOUNDARY_TOLERANCE} pixel; ms / training step: median wall time after 3 warm-up steps; "
                      "ms / loss fwd+bwd: median of the loss alone on the trained model's logits of one batch",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "machine": {**machine_info(device), "torch_threads_chosen_by": threads_note},
        "torch": torch.__version__,
    }
    files: dict[str, str] = {}
    if cfg.out is not None:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(format_table(rows) + "\n")
        files["table"] = str(out / "compare.md")
        if cfg.plots:
            picture = _picture(out / "compare.png", rows, val, cfg, log)
            if picture:
                files["picture"] = picture
        summary["files"] = {**files, "summary": str(out / "compare.json")}
        summary["time_total_s"] = time.perf_counter() - t_start
        (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
        files["summary"] = str(out / "compare.json")
        log(f"wrote {out}/: " + ", ".join(Path(p).name for p in files.values()))
    summary["time_total_s"] = time.perf_counter() - t_start
    log(f"done in {summary['time_total_s']:.1f} s")
    return CompareResult(rows, untrained, summary, val, files)


def _progress(cfg: CompareConfig, steps: int, spec: str) -> Any:
    if not cfg.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=steps, desc=spec, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                leave=False)


# binary tasks: true negative, true positive, false positive (false alarm), false negative (missed)
_ERRORS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.95, 0.25, 0.2), (0.2, 0.5, 1.0))


def _picture(path: Path, rows: Sequence[CompareRow], val: SegData, cfg: CompareConfig,
             log: Callable[[str], None]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        log(f"no picture: {PLOT_HINT}")
        return None
    n = min(6, len(val))
    images = val.images[:n]
    truth = _ids(val.targets[:n], val.task).cpu()
    preds = []
    with torch.no_grad():
        for r in rows:
            r.model.eval()
            preds.append(predict(r.model(images), val.task).cpu())
            r.model.train()
    binary = val.task != "multiclass"
    classes = torch.tensor(_COLOURS)
    errors = torch.tensor(_ERRORS)

    def paint(pred: Tensor) -> Tensor:
        if not binary:
            return classes[pred]
        code = torch.where(pred == truth, pred, 2 + truth)  # 0 TN, 1 TP, 2 FP, 3 FN
        return errors[code]

    n_rows = 2 + len(rows)
    fig, axes = plt.subplots(n_rows, n, figsize=(1.5 * n + 1.6, 1.5 * n_rows + 0.6), squeeze=False)
    panels = [("image", images.cpu().permute(0, 2, 3, 1)), ("target", classes[truth] if not binary else errors[truth])]
    panels += [(f"{r.normalised}\nDice {r.dice:.3f}\nBF1 {r.boundary_f1:.3f}", paint(p)) for r, p in zip(rows, preds)]
    for i, (label, stack) in enumerate(panels):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(stack[j].numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if binary:
        handles = [Rectangle((0, 0), 1, 1, facecolor=errors[k].tolist(), edgecolor="black", lw=0.5)
                   for k in (1, 2, 3)]
        fig.legend(handles, ("found", "false alarm", "missed"), loc="lower center", ncol=3, frameon=False)
    else:
        handles = [Rectangle((0, 0), 1, 1, color=_COLOURS[k + 1]) for k in range(len(CLASSES) - 1)]
        fig.legend(handles, CLASSES[1:], loc="lower center", ncol=len(CLASSES) - 1, frameon=False)
    fig.suptitle(f"{cfg.task} task, {cfg.steps} steps each, same model and batches: held-out images", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return str(path)
