"""The demo's training loop: a composite loss trains a small U-Net on synthetic shapes.

``run_demo(DemoConfig(...))`` builds the loss with ``build_loss``, trains with Adam (one-cycle
learning rate), shows the per-term losses (``criterion.last_terms``) in a progress bar,
evaluates Dice and IoU on the held-out split (hard predictions, computed from counts, not from
any loss), and writes to ``out``: ``summary.json``, TensorBoard scalars, a profiler trace, and
the PNGs ``grid.png`` and ``curves.png``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import build_loss
from .._composite import CompositeLoss
from .._errors import SeglossError
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
    "machine_info",
    "resolve_device",
    "PLOT_HINT",
]

PLOT_HINT = 'pictures need matplotlib: pip install "segloss-registry[plot]"'
TENSORBOARD_HINT = 'TensorBoard scalars need tensorboard: pip install "segloss-registry[profile]"'


def default_spec(task: str) -> str:
    """``bce+dice`` for binary, ``ce+dice`` for multiclass (bce is a sigmoid loss)."""
    return "bce+dice" if task == "binary" else "ce+dice"


def default_steps(task: str) -> int:
    """200 steps for binary (Dice > 0.99), 600 for multiclass (telling the shapes apart takes longer)."""
    return 200 if task == "binary" else 600


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
    compile: bool | str = "auto"
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
    """Class ids (N,H,W): ``logits > 0`` for binary (N,1,H,W), ``argmax`` over C for multiclass."""
    return (logits[:, 0] > 0).long() if task == "binary" else logits.argmax(1)


def _ids(target: Tensor, task: str) -> Tensor:
    return (target[:, 0] > 0.5).long() if task == "binary" else target


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


@torch.no_grad()
def evaluate(model: nn.Module, data: SegData, batch_size: int = 64) -> dict[str, Any]:
    """Held-out Dice and IoU over the whole split (pixel counts summed over all images).

    Binary: the foreground class. Multiclass: the mean over the foreground classes (disc,
    rectangle, triangle), with each class's figures in ``per_class``.
    """
    was_training = model.training
    model.eval()
    C = 2 if data.task == "binary" else len(CLASSES)
    counts = torch.zeros(C, 3, dtype=torch.int64, device=data.images.device)
    for start in range(0, len(data), batch_size):
        logits = model(data.images[start:start + batch_size])
        counts += class_counts(predict(logits, data.task), _ids(data.targets[start:start + batch_size], data.task), C)
    model.train(was_training)
    dice, iou = dice_iou(counts.cpu())
    names = ("foreground",) if data.task == "binary" else CLASSES[1:]
    return {
        "dice": float(dice[1:].mean()),
        "iou": float(iou[1:].mean()),
        "per_class": {n: {"dice": float(d), "iou": float(j)} for n, d, j in zip(names, dice[1:], iou[1:])},
    }


# -- timing -------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step_times(spec: str, mode: str, model: nn.Module, images: Tensor, target: Tensor,
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


# -- machine ------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the figures come from: CPU, threads, load, accelerator, versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(device)
    return info


def choose_threads() -> tuple[int, str]:
    """Threads for ``--threads auto``: torch's default (one per core), fewer when other processes
    already keep cores busy (1-minute load average). On an oversubscribed CPU, torch's threads wait
    on each other at every operator: on a 2-core machine under load 2-3, the default binary demo
    took 133 s with 2 threads and 23 s with 1."""
    default = torch.get_num_threads()
    if not hasattr(os, "getloadavg"):
        return default, "torch's default"
    load = os.getloadavg()[0]
    free = (os.cpu_count() or default) - load
    if free >= default - 0.5:
        return default, f"torch's default; load {load:.2f}"
    n = max(1, int(free + 0.5))
    return n, f"{n} of {default}: the 1-minute load {load:.2f} leaves {max(free, 0):.1f} of {os.cpu_count()} cores free"


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
def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Train, evaluate, measure, and write the outputs; see the module docstring."""
    _check_config(cfg)
    cfg = replace(cfg, steps=cfg.steps or default_steps(cfg.task), spec=cfg.spec or default_spec(cfg.task))
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    threads_note = "as set by the caller"
    if cfg.threads == "auto":
        n, threads_note = choose_threads()
        torch.set_num_threads(n)
    elif cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
        threads_note = "--threads"
    mode = "binary" if cfg.task == "binary" else "multiclass"
    spec = cfg.spec
    criterion = build_loss(spec, mode=mode, compile=cfg.compile)  # fails here, before any work, on a bad spec
    out = Path(cfg.out) if cfg.out is not None else None
    machine = machine_info(device)
    machine["torch_threads_chosen_by"] = threads_note
    uses_compile = criterion.uses_compile(device)
    log(f"segloss demo: {criterion.spec} ({cfg.task}), {cfg.steps} steps of {cfg.batch_size} "
        f"{cfg.size}x{cfg.size} images on {device}, criterion {'compiled' if uses_compile else 'eager'}; "
        f"{machine['torch_threads']} torch thread(s) ({threads_note})")

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train, val = make_splits(cfg.seed, cfg.n_train, cfg.n_val, cfg.task, cfg.size)
    train, val = train.to(device), val.to(device)
    data_s = time.perf_counter() - t0

    model = TinyUNet(3, train.num_classes, cfg.width, cfg.depth).to(device)
    untrained = evaluate(model, val)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(cfg.seed)

    writer = _writer(out, cfg, log) if out is not None else None
    if writer is not None:
        _scalars(writer, "heldout", untrained, 0)

    per_epoch = max(1, cfg.n_train // cfg.batch_size)
    order = torch.randperm(cfg.n_train, generator=gen)

    def batch(step: int) -> tuple[Tensor, Tensor]:
        """Batch ``step``: a fresh shuffle every epoch, then random flips."""
        nonlocal order
        k = step % per_epoch
        if k == 0 and step > 0:
            order = torch.randperm(cfg.n_train, generator=gen)
        idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size].to(device)
        x, y = train.images[idx], train.targets[idx]
        # random flips: the classes (disc, rectangle, triangle) are unchanged by them
        dims = [d for d, flip in zip((-1, -2), torch.rand(2, generator=gen) < 0.5) if flip]
        return (x.flip(dims), y.flip(dims)) if dims else (x, y)

    eval_every = cfg.eval_every or max(1, cfg.steps // 5)
    history: list[dict[str, float]] = []
    evals: list[dict[str, Any]] = [{"step": 0, **untrained}]
    bar = _progress(cfg)
    pending: list[tuple[int, Tensor, float]] = []
    every = max(1, cfg.steps // 10)
    model.train()
    t_train = time.perf_counter()
    step_times: list[float] = []
    for step in range(cfg.steps):
        t_step = time.perf_counter()
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        pending.append((step + 1, torch.stack([loss.detach(), *criterion.last_terms.values()]), sched.get_last_lr()[0]))
        last = step + 1 == cfg.steps
        print_now = bar is None and ((step + 1) % every == 0 or last)
        if len(pending) >= 10 or last or print_now:  # one device sync per ten steps
            for s, values, lr in pending:
                row = {"step": s, "lr": lr, **dict(zip(("total", *criterion.keys), values.tolist()))}
                history.append(row)
                if writer is not None:
                    for k in ("total", *criterion.keys):
                        writer.add_scalar(f"loss/{k}", row[k], s)
                    writer.add_scalar("lr", lr, s)
            pending = []
        _sync(device)
        step_times.append(time.perf_counter() - t_step)
        if (step + 1) % eval_every == 0 or last:
            metrics = evaluate(model, val)
            evals.append({"step": step + 1, **metrics})
            if writer is not None:
                _scalars(writer, "heldout", metrics, step + 1)
        terms = history[-1] if history else {}
        text = " ".join(f"{k}={terms[k]:.3f}" for k in ("total", *criterion.keys) if k in terms)
        if evals[-1]["step"] > 0:
            text += f" | held-out dice={evals[-1]['dice']:.3f}"
        if bar is not None:
            bar.set_postfix_str(text, refresh=False)
            bar.update(1)
        elif print_now:
            log(f"  step {step + 1:>5}/{cfg.steps}  {text}")
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - t_train
    final = evals[-1]
    log(f"held-out ({cfg.n_val} images): Dice {final['dice']:.4f}  IoU {final['iou']:.4f}  "
        f"(untrained model: Dice {untrained['dice']:.4f})  trained in {train_s:.1f} s")
    if cfg.task == "multiclass":
        log("  per class: " + ", ".join(f"{n} {m['dice']:.3f}" for n, m in final["per_class"].items()))

    files: dict[str, str] = {}
    timing: dict[str, Any] | None = None
    x, y = batch(0)
    if cfg.timing_steps:
        log(f"timing {cfg.timing_steps} steps with the criterion eager and compiled (the compile takes a while) ...")
        timing = measure_step_times(spec, mode, model, x, y, cfg.timing_steps, lr=cfg.lr)
        log(f"  loss forward+backward: eager {timing['eager']['loss_ms']:.2f} ms, compiled "
            f"{timing['compiled']['loss_ms']:.2f} ms (first call {timing['compiled']['first_call_s']:.1f} s); "
            f"training step: eager {timing['eager']['train_step_ms']:.1f} ms, compiled "
            f"{timing['compiled']['train_step_ms']:.1f} ms")
    profile = None
    if out is not None and cfg.profile_steps:
        profile = _profile(model, criterion, x, y, out / "profile", cfg.profile_steps, cfg.lr, device)
        files["profile"] = profile["dir"]
        labels = profile["labels_total_ms"]
        log(f"profiled {cfg.profile_steps} training steps: {profile['step_ms']:.1f} ms each under the profiler; "
            + ", ".join(f"{k} {v / cfg.profile_steps:.1f} ms" for k, v in labels.items()))

    warm = step_times[min(5, len(step_times) - 1):]
    summary: dict[str, Any] = {
        "spec": criterion.spec,
        "task": cfg.task,
        "mode": mode,
        "loss_config": criterion.config(),
        "metrics": {
            "heldout_images": cfg.n_val,
            "dice": final["dice"],
            "iou": final["iou"],
            "per_class": final["per_class"],
            "untrained": {"dice": untrained["dice"], "iou": untrained["iou"]},
            "definition": "hard predictions (logit > 0 or argmax); Dice 2I/(P+T) and IoU I/(P+T-I) from pixel "
                          "counts summed over the held-out split; multiclass: mean over the foreground classes",
        },
        "evaluations": evals,
        "final_losses": {k: history[-1][k] for k in ("total", *criterion.keys)},
        "final_losses_mean_last_10": {
            k: sum(r[k] for r in history[-10:]) / len(history[-10:]) for k in ("total", *criterion.keys)
        },
        "time": {
            "total_s": None,  # filled in below
            "data_s": data_s,
            "train_s": train_s,
            "train_step_ms_mean": 1e3 * sum(warm) / len(warm),
            "criterion": "compiled" if criterion.uses_compile(device) else "eager",
        },
        "step_times": timing,
        "profile": profile,
        "settings": {k: v for k, v in asdict(cfg).items()},
        "machine": machine,
        "torch": torch.__version__,
    }
    if out is not None:
        files.update(_pictures(out, model, val, history, evals, criterion.keys, cfg, log) if cfg.plots else {})
        if writer is not None:
            writer.close()
            files["scalars"] = str(out / "scalars")
    summary["time"]["total_s"] = time.perf_counter() - t_start
    summary["machine"]["load_average_at_end"] = machine_info(device).get("load_average_1_5_15")
    if out is not None:
        files["summary"] = str(out / "summary.json")
        summary["files"] = files
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log(f"wrote {out}/: " + ", ".join(Path(p).name for p in files.values())
            + (f"\n  view: tensorboard --logdir {out}   (scalars; the trace in the PyTorch Profiler tab, "
               "with torch-tb-profiler)" if "scalars" in files or "profile" in files else ""))
    log(f"done in {summary['time']['total_s']:.1f} s")
    return DemoResult(model, criterion, summary, history, train, val, files)


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
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log(f"no TensorBoard scalars: {TENSORBOARD_HINT}")
        return None
    folder = out / "scalars"
    if folder.is_dir():  # one run per output folder: old event files would mix with the new curves
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
    return SummaryWriter(log_dir=str(folder))


def _scalars(writer: Any, prefix: str, metrics: dict[str, Any], step: int) -> None:
    writer.add_scalar(f"{prefix}/dice", metrics["dice"], step)
    writer.add_scalar(f"{prefix}/iou", metrics["iou"], step)
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
    s = profile_steps(step, folder, steps=steps, device=device, worker=safe_run_name(f"demo_{criterion.spec}"))
    return {
        "dir": str(folder),
        "files": [str(f) for f in s.trace_files],
        "steps": s.steps,
        "step_ms": s.step_ms,
        "peak_bytes": s.peak_bytes,
        "top_ops_self_ms": {r.name: r.self_us / 1e3 for r in s.top_ops[:8]},
        "labels_total_ms": {r.name: r.total_us / 1e3 for r in s.labels + s.top_ops if r.name.startswith(("segloss/", "demo/"))},
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
    names = ("foreground",) if val.task == "binary" else CLASSES[1:]
    handles = [plt.Rectangle((0, 0), 1, 1, color=_COLOURS[k + 1]) for k in range(len(names))]
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    what = "Dice" if val.task == "binary" else "mean Dice over the shapes"
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
    left.set_yscale("log")
    left.legend()
    left.set_title("training losses")
    for key in ("dice", "iou"):
        right.plot([e["step"] for e in evals], [e[key] for e in evals], marker="o", label=f"held-out {key}")
    right.set_ylim(0, 1)
    right.set_xlabel("step")
    right.legend(loc="lower right")
    right.set_title("held-out metrics" + ("" if val.task == "binary" else " (mean over the shapes)"))
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
