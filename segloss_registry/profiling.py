"""Profiler traces of a few training steps, in the layout TensorBoard's profiler plugin reads.

``profile_steps(step_fn, out_dir, steps=3)`` runs ``step_fn`` under ``torch.profiler`` with
a wait/warm-up/active schedule and writes the trace with
``torch.profiler.tensorboard_trace_handler(out_dir)``: one ``<worker>.<ts>.pt.trace.json``
per worker in ``out_dir``, which ``tensorboard --logdir <parent>`` (with torch-tb-profiler)
lists as a run, and which Perfetto (https://ui.perfetto.dev) or chrome://tracing open as is.
The composite loss labels its call ``segloss/eager[spec]`` or ``segloss/compiled[spec]`` and,
in eager mode, each term ``segloss/<term>``; ``profile_steps`` labels each step
``segloss/step``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

from .bench import profiler_peak_bytes

__all__ = ["OpRow", "ProfileSummary", "profile_steps", "open_command", "safe_run_name"]


@dataclass(frozen=True)
class OpRow:
    """One operator of the summary: self and total time over the active steps, and calls."""

    name: str
    self_us: float
    total_us: float
    calls: int
    self_device_us: float = 0.0


@dataclass
class ProfileSummary:
    """What ``profile_steps`` recorded: where the trace is and what took the time."""

    out_dir: Path
    trace_files: list[Path]
    worker: str
    steps: int
    top_ops: list[OpRow] = field(default_factory=list)
    labels: list[OpRow] = field(default_factory=list)
    peak_bytes: int | None = None
    peak_method: str = ""
    step_ms: float | None = None

    def format(self, top: int = 10) -> str:
        """A plain-text report: top operators by self time, the segloss labels, peak memory."""
        lines = [f"trace ({self.worker}, {self.steps} active steps): "
                 + ", ".join(str(p) for p in self.trace_files)]
        if self.step_ms is not None:
            lines.append(f"  wall time per step under the profiler: {self.step_ms:.2f} ms")
        if self.peak_bytes is not None:
            lines.append(f"  peak memory in a step: {self.peak_bytes / 2**20:.2f} MiB ({self.peak_method})")
        device = any(r.self_device_us for r in self.top_ops)
        width = max([len("operator")] + [len(r.name[:60]) for r in self.top_ops[:top] + self.labels])
        head = f"  {'operator'.ljust(width)}  {'self ms':>9}  {'total ms':>9}  {'calls':>6}"
        lines.append(head + (f"  {'device ms':>9}" if device else ""))
        for r in self.top_ops[:top]:
            line = f"  {r.name[:60].ljust(width)}  {r.self_us / 1e3:9.3f}  {r.total_us / 1e3:9.3f}  {r.calls:6d}"
            lines.append(line + (f"  {r.self_device_us / 1e3:9.3f}" if device else ""))
        if self.labels:
            lines.append("  segloss labels (total time, per term in eager mode):")
            for r in self.labels:
                lines.append(f"  {r.name[:60].ljust(width)}  {'':>9}  {r.total_us / 1e3:9.3f}  {r.calls:6d}")
        return "\n".join(lines)


def safe_run_name(text: str) -> str:
    """A directory/worker name from a spec or scenario name (letters, digits, ``_.-``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("+", "_plus_").replace("*", "x")).strip("_.")
    return name[:80] or "run"


def open_command(out_dir: Path) -> str:
    """How to look at a trace directory: TensorBoard on its parent, or Perfetto on a file."""
    return (f"tensorboard --logdir {out_dir.parent}   (PyTorch Profiler tab; needs torch-tb-profiler)\n"
            f"or open the .pt.trace.json in https://ui.perfetto.dev or chrome://tracing")


def profile_steps(
    step_fn: Callable[[], Any],
    out_dir: str | os.PathLike[str],
    *,
    steps: int = 3,
    wait: int = 1,
    warmup: int = 1,
    worker: str | None = None,
    device: str | torch.device = "cpu",
    record_shapes: bool = True,
    profile_memory: bool = True,
    with_stack: bool = False,
) -> ProfileSummary:
    """Record ``steps`` calls of ``step_fn`` with torch.profiler into ``out_dir``; summarise them.

    ``step_fn()`` runs one training step (e.g. ``loss = criterion(logits, target);
    loss.backward()``); it is called ``wait + warmup + steps`` times, each inside
    ``record_function("segloss/step")``, and the profiler records the last ``steps`` (the
    ``wait`` and ``warmup`` steps absorb one-off work such as compilation and allocator
    warm-up). The trace goes through ``torch.profiler.tensorboard_trace_handler(out_dir,
    worker_name=worker)``: ``out_dir/<worker>.<timestamp>.pt.trace.json``, the layout that
    torch-tb-profiler reads (``tensorboard --logdir <parent of out_dir>``) and that Perfetto
    opens. CUDA activity is recorded when ``device`` is a CUDA device.

    Returns a ``ProfileSummary``: the trace files written, the operators sorted by self time
    (CPU, or device time on CUDA), the ``segloss/...`` labels with their total time and
    calls, and the peak memory of one step (CUDA: ``max_memory_allocated`` above what was
    allocated before; CPU: the profiler's allocation events).
    """
    if steps < 1 or wait < 0 or warmup < 0:
        raise ValueError(f"profile_steps: steps must be >= 1, wait and warmup >= 0 (got {steps}, {wait}, {warmup})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    worker = worker or f"{os.uname().nodename if hasattr(os, 'uname') else 'host'}_{os.getpid()}"
    before = set(out.glob("*.pt.trace.json*"))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    import time

    times: list[float] = []
    with profile(
        activities=activities,
        schedule=schedule(wait=wait, warmup=warmup, active=steps, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(out), worker_name=worker),
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=with_stack,
    ) as prof:
        for i in range(wait + warmup + steps):
            if cuda and i == wait + warmup:
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            t0 = time.perf_counter()
            with record_function("segloss/step"):
                step_fn()
            if cuda:
                torch.cuda.synchronize(dev)
            if i >= wait + warmup:
                times.append(time.perf_counter() - t0)
            prof.step()
    files = sorted(set(out.glob("*.pt.trace.json*")) - before)
    averages = prof.key_averages()
    rows: list[OpRow] = []
    labels: list[OpRow] = []
    for e in averages:
        self_dev = float(getattr(e, "self_device_time_total", 0.0) or 0.0)
        row = OpRow(e.key, float(e.self_cpu_time_total), float(e.cpu_time_total), int(e.count), self_dev)
        if e.key.startswith("segloss/"):
            labels.append(row)
        elif not e.key.startswith(("ProfilerStep", "[memory]")):
            rows.append(row)
    rows.sort(key=lambda r: (r.self_device_us if cuda else r.self_us), reverse=True)
    labels.sort(key=lambda r: r.total_us, reverse=True)
    if cuda:
        peak: int | None = torch.cuda.max_memory_allocated(dev) - base
        method = "torch.cuda.max_memory_allocated above the memory allocated before the active steps"
    else:
        peak = profiler_peak_bytes(prof, "cpu") if profile_memory else None
        method = "torch.profiler CPU allocation events, running sum over the active steps"
    return ProfileSummary(
        out_dir=out,
        trace_files=files,
        worker=worker,
        steps=steps,
        top_ops=rows,
        labels=labels,
        peak_bytes=peak,
        peak_method=method,
        step_ms=1e3 * sum(times) / len(times) if times else None,
    )
