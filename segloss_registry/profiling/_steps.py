"""``profile_steps``: record a few training steps with torch.profiler and summarise them."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import DeviceType, ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

from .._errors import SeglossError
from ..bench import profiler_peak_bytes

STEP_LABEL = "segloss/step"
COMPOSITE_PREFIXES = ("segloss/eager[", "segloss/compiled[")
BACKWARD_PREFIX = "autograd::engine::evaluate_function:"


@dataclass(frozen=True)
class OpRow:
    """One operator of the summary: self and total time over the active steps, and calls.

    Times are microseconds summed over the active steps; ``self_device_us`` and
    ``device_us`` (kernels launched inside, children included) are 0 on the CPU.
    """

    name: str
    self_us: float
    total_us: float
    calls: int
    self_device_us: float = 0.0
    device_us: float = 0.0


@dataclass(frozen=True)
class TermTime:
    """One term of an eager composite: its forward (the ``segloss/<term>`` range) and backward.

    The backward is the autograd engine's time in the nodes whose forward op ran inside the
    term's range (matched by the profiler's sequence numbers). Microseconds summed over the
    active steps; the ``*_device_us`` fields are the kernels' time on CUDA, 0 on the CPU.
    """

    name: str
    calls: int
    forward_us: float
    backward_us: float
    forward_device_us: float = 0.0
    backward_device_us: float = 0.0


@dataclass
class ProfileSummary:
    """What ``profile_steps`` recorded: where the trace is and what took the time.

    All times are microseconds summed over the ``steps`` active steps (divide by ``steps``
    for one step), except ``step_ms`` (wall-clock milliseconds per step, mean). The split:
    ``step_us`` (the ``segloss/step`` ranges) = ``forward_us`` (the composites'
    ``segloss/eager[...]``/``segloss/compiled[...]`` ranges) + ``backward_us`` (the autograd
    engine's ``evaluate_function`` ranges) + the rest (input checks, optimizer, Python).
    ``terms`` splits the forward and backward per term (eager composites only: a compiled
    composite is one graph).
    """

    out_dir: Path
    trace_files: list[Path]
    worker: str
    steps: int
    top_ops: list[OpRow] = field(default_factory=list)
    labels: list[OpRow] = field(default_factory=list)
    peak_bytes: int | None = None
    peak_method: str = ""
    step_ms: float | None = None
    device: str = "cpu"
    step_us: float | None = None
    forward_us: float | None = None
    backward_us: float | None = None
    forward_device_us: float = 0.0
    backward_device_us: float = 0.0
    terms: list[TermTime] = field(default_factory=list)

    @property
    def other_us(self) -> float | None:
        """Step time outside the loss's forward and the backward (checks, optimizer, Python)."""
        if self.step_us is None:
            return None
        return max(0.0, self.step_us - (self.forward_us or 0.0) - (self.backward_us or 0.0))

    @property
    def shared_forward_us(self) -> float | None:
        """Forward time inside the composite but outside every term (input normalisation, the weighted sum)."""
        if self.forward_us is None or not self.terms:
            return None
        return max(0.0, self.forward_us - sum(t.forward_us for t in self.terms))

    @property
    def shared_backward_us(self) -> float | None:
        """Backward time not traced to a term (the shared work's nodes, the weighted sum, gradient accumulation)."""
        if self.backward_us is None or not self.terms:
            return None
        return max(0.0, self.backward_us - sum(t.backward_us for t in self.terms))

    def format(self, top: int = 10) -> str:
        """A plain-text report: top operators by self time, the segloss labels, peak memory."""
        lines = [f"trace ({self.worker}, {self.steps} active steps): "
                 + ", ".join(str(p) for p in self.trace_files)]
        if self.step_ms is not None:
            lines.append(f"  wall time per step under the profiler: {self.step_ms:.2f} ms")
        if self.step_us is not None:
            n = self.steps
            fwd, bwd, rest = ((v or 0.0) / n / 1e3 for v in (self.forward_us, self.backward_us, self.other_us))
            lines.append(f"  per step: forward {fwd:.3f} ms, backward {bwd:.3f} ms, rest {rest:.3f} ms "
                         f"(of {self.step_us / n / 1e3:.3f} ms in segloss/step, CPU time)")
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


def is_term_label(name: str) -> bool:
    """A ``segloss/<term>`` range (not the step's, not a composite's)."""
    return name.startswith("segloss/") and name != STEP_LABEL and not name.startswith(COMPOSITE_PREFIXES)


@dataclass
class _Split:
    forward: float = 0.0
    backward: float = 0.0
    forward_dev: float = 0.0
    backward_dev: float = 0.0
    any_forward: bool = False
    terms: dict[str, list[float]] = field(default_factory=dict)  # name -> [calls, fwd, bwd, fwd_dev, bwd_dev]


def _split(events: Iterable[Any]) -> _Split:
    """Forward, backward and per-term time from the profiler's event tree (one pass, then the autograd links).

    A term's backward: the ``evaluate_function`` nodes whose sequence number and forward
    thread are those of a forward op inside the term's range. Several forward ops can carry
    one sequence number (an op that creates no autograd node sees the next number); the last
    one to start is the one that created the node, so later ops overwrite earlier ones.
    """
    out = _Split()
    owner: dict[tuple[int, int], str | None] = {}
    backward_nodes: list[Any] = []
    cpu = [e for e in events if not e.is_async and e.device_type == DeviceType.CPU
           and e.name != "[memory]"]
    cpu.sort(key=lambda e: e.time_range.start)
    for e in cpu:
        term: str | None = None
        in_composite = in_backward = False
        p = e.cpu_parent
        while p is not None:
            if term is None and is_term_label(p.name):
                term = p.name[len("segloss/"):]
            in_composite = in_composite or p.name.startswith(COMPOSITE_PREFIXES)
            in_backward = in_backward or p.name.startswith(BACKWARD_PREFIX)
            p = p.cpu_parent
        name = e.name
        if name.startswith(COMPOSITE_PREFIXES) and not in_composite:
            out.any_forward = True
            out.forward += e.time_range.elapsed_us()
            out.forward_dev += float(e.device_time_total)
        elif name.startswith(BACKWARD_PREFIX) and not in_backward:
            backward_nodes.append(e)
        elif is_term_label(name) and term is None:  # outermost range of a term
            row = out.terms.setdefault(name[len("segloss/"):], [0.0, 0.0, 0.0, 0.0, 0.0])
            row[0] += 1
            row[1] += e.time_range.elapsed_us()
            row[3] += float(e.device_time_total)
        if not in_backward and not name.startswith(BACKWARD_PREFIX) and e.sequence_nr >= 0:
            owner[(e.thread, e.sequence_nr)] = term
    for e in backward_nodes:
        dur, dev = e.time_range.elapsed_us(), float(e.device_time_total)
        out.backward += dur
        out.backward_dev += dev
        key = owner.get((e.fwd_thread, e.sequence_nr))
        if key is not None and key in out.terms:
            out.terms[key][2] += dur
            out.terms[key][4] += dev
    return out


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
    calls, the forward/backward split with each term's share, and the peak memory of one step
    (CUDA: ``max_memory_allocated`` above what was allocated before; CPU: the profiler's
    allocation events). ``segloss_registry.profiling.write_report`` turns summaries into an
    HTML page that opens offline.
    """
    if steps < 1 or wait < 0 or warmup < 0:
        raise SeglossError(f"profile_steps: steps must be >= 1, wait and warmup >= 0 (got {steps}, {wait}, {warmup})")
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
            with record_function(STEP_LABEL):
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
    cpu_type = DeviceType.CPU
    for e in averages:
        self_dev = float(getattr(e, "self_device_time_total", 0.0) or 0.0)
        total_dev = float(getattr(e, "device_time_total", 0.0) or 0.0)
        row = OpRow(e.key, float(e.self_cpu_time_total), float(e.cpu_time_total), int(e.count), self_dev, total_dev)
        if e.key.startswith("segloss/"):
            if e.device_type == cpu_type:  # CUDA's copy of a range (gpu_user_annotation) is not a second label
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
    split = _split(prof.events())
    step_row = next((r for r in labels if r.name == STEP_LABEL), None)
    terms = [TermTime(name, int(v[0]), v[1], v[2], v[3], v[4]) for name, v in split.terms.items()]
    terms.sort(key=lambda t: t.forward_us + t.backward_us, reverse=True)
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
        device=str(dev),
        step_us=step_row.total_us if step_row else None,
        forward_us=split.forward if split.any_forward else None,
        backward_us=split.backward,
        forward_device_us=split.forward_dev,
        backward_device_us=split.backward_dev,
        terms=terms,
    )
