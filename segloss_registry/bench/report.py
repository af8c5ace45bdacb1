"""The report of one run: ``Measurement`` per candidate, ``BenchReport`` with text, Markdown and JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .config import DTYPES, BenchConfig, numel

__all__ = ["Measurement", "BenchReport", "markdown_table", "text_table"]


def _cache_counts(cache: dict[str, int]) -> tuple[int, int]:
    from .measure import cache_counts

    return cache_counts(cache)


def text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, a rule under the header."""
    table = [head, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for i, r in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
    return lines


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
        out: dict[str, Any] = {"config": cfg, "machine": self.machine, "bytes_moved": self.bytes_moved,
               "memory_method": self.memory_method, "results": []}
        for m in self.results:
            s = m.summary()
            if m.times_ms:
                s["bandwidth_gb_s"] = self.bytes_moved / (m.median_ms * 1e-3) / 1e9
            out["results"].append(s)
        return out

    def _rows(self) -> list[list[str]]:
        logits_bytes = numel(self.config.shape) * DTYPES[self.config.dtype].itemsize
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

    _HEAD: ClassVar[list[str]] = ["candidate", "median ms", "IQR ms", "x ref", "GB/s", "peak MiB (x logits)",
                                  "first call s", "note"]

    def header_lines(self) -> list[str]:
        c, mach = self.config, self.machine
        shape = "x".join(map(str, c.shape))
        return [
            f"segloss bench: {c.spec!r}  mode={c.mode}  logits {shape} {c.dtype} on {c.device}",
            f"machine: {mach['machine']}; torch {mach['torch']}, {mach['threads']} threads, Python {mach['python']}; "
            f"allocator: {mach.get('allocator', 'not recorded')}",
            f"{c.steps} timed forward+backward steps per candidate after {c.warmup} warm-up, interleaved; "
            f"x ref = median of per-round time ratios to the reference",
            f"peak memory: {self.memory_method}; GB/s = {self.bytes_moved / 1e6:.1f} MB "
            f"(logits + target read, gradient written) / median time",
        ]

    def format_text(self) -> str:
        return "\n".join([*self.header_lines(), "", *text_table(self._HEAD, self._rows())])

    def format_markdown(self) -> str:
        lines = [f"<!-- {line} -->" for line in self.header_lines()]
        return "\n".join(lines + markdown_table(self._HEAD, self._rows()))

    def find(self, prefix: str) -> Measurement | None:
        """The first measured result whose name starts with ``prefix``."""
        return next((m for m in self.results if m.name.startswith(prefix) and m.times_ms), None)
