"""Measuring candidates: interleaved timed steps, the first call (compile, caches), peak memory.

- **time**: wall time of one training step of the loss, ``loss = fn(logits, target);
  loss.backward()`` (CUDA: synchronised before and after). Candidates are *interleaved*: each
  round runs one step of every candidate, so a machine shared with other work slows them all
  alike; each candidate's ratio to the reference is the median of the per-round ratios.
- **first call**: the wall time of the first step of a compiled candidate, with the inductor
  and AOTAutograd cache hits/misses of that call.
- **peak memory**: bytes allocated during one step above what was alive before it (the
  inputs), the gradient included. CUDA: ``torch.cuda.max_memory_allocated``. CPU: the
  allocation events of ``torch.profiler`` (``profile_memory=True``), summed in time order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .candidates import Candidate, LossFn
from .report import Measurement

__all__ = ["measure", "peak_memory_of", "profiler_peak_bytes", "cache_counts"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(fn: LossFn, logits: Tensor, target: Tensor) -> Tensor:
    logits.grad = None
    loss = fn(logits, target)
    if loss.requires_grad:  # a part timed alone (the distance maps) has no backward
        loss.backward()
    return loss


def _timed_step(fn: LossFn, logits: Tensor, target: Tensor) -> float:
    _sync(logits.device)
    t0 = time.perf_counter()
    _step(fn, logits, target)
    _sync(logits.device)
    return (time.perf_counter() - t0) * 1e3


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
            events.append((e.start_ns(), e.nbytes()))  # type: ignore[union-attr]
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
    logits.grad = None
    if dev.type == "cuda":
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        _step(fn, logits, target)
        _sync(dev)
        return torch.cuda.max_memory_allocated(dev) - base, "torch.cuda.max_memory_allocated above the inputs"
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


def cache_counts(cache: dict[str, int]) -> tuple[int, int]:
    """(hits, misses) of the FX graph and AOTAutograd caches in a first call's counter deltas."""
    hits = sum(v for k, v in cache.items() if k.endswith(("fxgraph_cache_hit", "autograd_cache_hit")))
    misses = sum(v for k, v in cache.items() if k.endswith(("fxgraph_cache_miss", "autograd_cache_miss")))
    return hits, misses


def _first_call(c: Candidate, m: Measurement, logits: Tensor) -> bool:
    """Run the first step (checks, compilation); record its time, caches and value, or the failure."""
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
        return True
    except Exception as exc:  # noqa: BLE001 - a candidate that fails on these inputs is reported, not fatal
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        kind = "compile failed" if c.compiled and c.group != "segloss" else "failed"
        m.error = f"{kind}: {type(exc).__name__}: {text}"
        logits.grad = None
        return False


def measure(cands: Sequence[Candidate], logits: Tensor, steps: int, warmup: int, progress: bool = False,
            log: Callable[[str], None] | None = None) -> tuple[list[Measurement], str]:
    """First call, warm-up, ``steps`` interleaved timed rounds, then peak memory, of every candidate."""
    say = log or (lambda s: None)
    results = [Measurement(c.name, c.group, c.compiled, c.reference, c.note) for c in cands]
    live = []
    for i, (c, m) in enumerate(zip(cands, results)):
        say(f"first call: {c.name}")
        if _first_call(c, m, logits):
            live.append(i)
    bar = _progress(len(live) * (warmup + steps), progress)
    for _ in range(warmup):
        for i in live:
            _step(cands[i].fn, logits, cands[i].target)
            bar.update(1)
    ref = next((i for i in live if cands[i].reference), None)
    for _ in range(steps):
        round_ms = {}
        for i in live:
            round_ms[i] = _timed_step(cands[i].fn, logits, cands[i].target)
            results[i].times_ms.append(round_ms[i])
            bar.update(1)
        if ref is not None:
            for i in live:
                results[i].ratios.append(round_ms[i] / round_ms[ref])
    bar.close()
    method = ""
    for i in live:
        say(f"memory: {cands[i].name}")
        results[i].peak_bytes, method = peak_memory_of(cands[i].fn, logits, cands[i].target)
    logits.grad = None
    return results, method


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
