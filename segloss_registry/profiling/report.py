"""An offline HTML report of ``profile_steps`` summaries: inline SVG bar charts, no scripts.

The page references nothing outside itself (no scripts, stylesheets, fonts or images to
fetch), so it opens from disk on an air-gapped machine. Every label is escaped. Each number
is a table cell carrying the summary's raw value (``data-field``/``data-value``, microseconds
summed over the active steps, or bytes) and showing it per step in milliseconds (or MiB), so
the page can be read by people and checked by programs.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

import torch

from .._errors import SeglossError
from ._steps import ProfileSummary

__all__ = ["render_report", "write_report"]

# colour-blind-safe pairs (Okabe-Ito): forward, backward, rest; bars of single values use the first
_COLOURS = ("#0072B2", "#E69F00", "#999999", "#009E73", "#CC79A7", "#56B4E9")
_CHART_W = 760
_LABEL_W = 280
_VALUE_W = 110
_ROW_H = 22
_MAX_LABEL = 44

_CSS = (
    'body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1000px;'
    "color:#222;padding:0 16px}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}"
    "h3{font-size:15px;margin-top:20px}"
    "table{border-collapse:collapse;margin:8px 0 16px}"
    "th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    "code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}"
    ".meta{color:#555}.note{color:#555;font-size:13px}.legend span{display:inline-block;margin-right:14px}"
    ".sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}"
    "svg text{font:12px system-ui,sans-serif;fill:#222}"
    "svg .mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11.5px}"
)


def _ms(us: float | None, steps: int) -> str:
    """Microseconds summed over ``steps`` steps, shown as milliseconds per step."""
    return "" if us is None else f"{us / steps / 1e3:.3f}"


def _mib(nbytes: int | None) -> str:
    return "" if nbytes is None else f"{nbytes / 2**20:.3f}"


def _short(text: str, n: int = _MAX_LABEL) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _cell(field: str, value: float | int | None, shown: str, **keys: str) -> str:
    """A numeric cell with the raw summary value in ``data-value`` and its display text."""
    attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in keys.items())
    raw = "" if value is None else repr(value)
    return f'<td class="num" data-field="{escape(field)}" data-value="{escape(raw)}"{attrs}>{escape(shown)}</td>'


def _legend(names: Sequence[str]) -> str:
    items = "".join(f'<span><i class="sw" style="background:{_COLOURS[i % len(_COLOURS)]}"></i>{escape(n)}</span>'
                    for i, n in enumerate(names))
    return f'<div class="legend">{items}</div>'


def _bar_chart(title: str, rows: Sequence[tuple[str, Sequence[float]]], unit: str,
               segments: Sequence[str] = (), mono: bool = False) -> str:
    """A horizontal (stacked) bar chart as inline SVG; ``rows`` are (label, segment values)."""
    if not rows:
        return ""
    longest = max(sum(v) for _, v in rows) or 1.0
    bar_w = _CHART_W - _LABEL_W - _VALUE_W
    h = _ROW_H * len(rows) + 8
    parts = [f'<svg width="{_CHART_W}" height="{h}" viewBox="0 0 {_CHART_W} {h}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i, (label, values) in enumerate(rows):
        y = 4 + i * _ROW_H
        cls = ' class="mono"' if mono else ""
        parts.append(f'<text x="{_LABEL_W - 8}" y="{y + 14}" text-anchor="end"{cls}>'
                     f"<title>{escape(label)}</title>{escape(_short(label))}</text>")
        x = float(_LABEL_W)
        for j, v in enumerate(values):
            w = bar_w * v / longest
            if w > 0:
                name = segments[j] if j < len(segments) else ""
                tip = f"{label}: {name + ' ' if name else ''}{v:.3f} {unit}"
                parts.append(f'<rect x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{_ROW_H - 6}" '
                             f'fill="{_COLOURS[j % len(_COLOURS)]}"><title>{escape(tip)}</title></rect>')
            x += w
        parts.append(f'<text x="{x + 6:.2f}" y="{y + 14}">{sum(values):.3f} {escape(unit)}</text>')
    parts.append("</svg>")
    legend = _legend(segments) if len(segments) > 1 else ""
    return f"<h3>{escape(title)}</h3>{legend}" + "".join(parts)


def _split_section(runs: Sequence[ProfileSummary]) -> str:
    """Forward/backward/rest per run: one stacked bar each, and the table of the numbers."""
    rows: list[tuple[str, Sequence[float]]] = []
    table = ['<table><tr><th>run</th><th class="num">step ms</th><th class="num">forward ms</th>'
             '<th class="num">backward ms</th><th class="num">rest ms</th><th class="num">wall ms</th>'
             '<th class="num">peak MiB</th></tr>']
    for s in runs:
        n = s.steps
        fwd, bwd, rest = s.forward_us or 0.0, s.backward_us or 0.0, s.other_us or 0.0
        if s.step_us is not None:
            rows.append((s.worker, [fwd / n / 1e3, bwd / n / 1e3, rest / n / 1e3]))
        table.append(
            f"<tr><td>{escape(s.worker)}</td>"
            + _cell("step_us", s.step_us, _ms(s.step_us, n), run=s.worker)
            + _cell("forward_us", s.forward_us, _ms(s.forward_us, n), run=s.worker)
            + _cell("backward_us", s.backward_us, _ms(s.backward_us, n), run=s.worker)
            + _cell("other_us", s.other_us, _ms(s.other_us, n), run=s.worker)
            + _cell("step_ms", s.step_ms, "" if s.step_ms is None else f"{s.step_ms:.3f}", run=s.worker)
            + _cell("peak_bytes", s.peak_bytes, _mib(s.peak_bytes), run=s.worker)
            + "</tr>")
    table.append("</table>")
    chart = _bar_chart("time per step: forward, backward, rest (CPU time, ms)", rows, "ms",
                       ("forward (the loss)", "backward (autograd)", "rest of the step"))
    note = ('<p class="note">Per step, the mean of the active steps. <i>step</i> is the '
            "<code>segloss/step</code> range; <i>forward</i> the composite's <code>segloss/eager[...]</code> or "
            "<code>segloss/compiled[...]</code> range; <i>backward</i> the autograd engine's "
            "<code>evaluate_function</code> ranges; <i>rest</i> what is left (input checks, Python, optimizer); "
            "<i>wall</i> the clock time of a step under the profiler. CPU times; on CUDA the kernels' "
            "time is in the device columns below.</p>")
    device = ""
    if any(s.forward_device_us or s.backward_device_us for s in runs):
        head = '<tr><th>run</th><th class="num">forward device ms</th><th class="num">backward device ms</th></tr>'
        cells = "".join(
            f"<tr><td>{escape(s.worker)}</td>"
            + _cell("forward_device_us", s.forward_device_us, _ms(s.forward_device_us, s.steps), run=s.worker)
            + _cell("backward_device_us", s.backward_device_us, _ms(s.backward_device_us, s.steps), run=s.worker)
            + "</tr>" for s in runs)
        device = f"<table>{head}{cells}</table>"
    return chart + "".join(table) + device + note


def _memory_section(runs: Sequence[ProfileSummary]) -> str:
    rows = [(s.worker, [s.peak_bytes / 2**20]) for s in runs if s.peak_bytes is not None]
    if not rows:
        return '<p class="note">No peak memory: the profiler recorded no allocation events (profile_memory=False).</p>'
    methods = sorted({s.peak_method for s in runs if s.peak_method})
    return (_bar_chart("peak memory of a step (MiB)", rows, "MiB")
            + "".join(f'<p class="note">Measured with {escape(m)}.</p>' for m in methods))


def _compare_section(runs: Sequence[ProfileSummary]) -> str:
    """Eager against compiled (or any runs): the same numbers side by side, and the ratio for two runs."""
    if len(runs) < 2:
        return ""
    a, b = runs[0], runs[1]
    head = "".join(f'<th class="num">{escape(s.worker)}</th>' for s in runs)
    ratio_head = f'<th class="num">{escape(b.worker)} / {escape(a.worker)}</th>' if len(runs) == 2 else ""
    lines = [f"<h2>{escape(' vs '.join(s.worker for s in runs))}</h2>",
             f"<table><tr><th>per step</th>{head}{ratio_head}</tr>"]

    def row(label: str, values: Sequence[float | None], shown: Sequence[str]) -> str:
        cells = "".join(f'<td class="num">{escape(t)}</td>' for t in shown)
        ratio = ""
        if len(runs) == 2:
            x, y = values
            ratio = f'<td class="num">{y / x:.2f}\u00d7</td>' if x and y is not None else '<td class="num"></td>'
        return f"<tr><td>{escape(label)}</td>{cells}{ratio}</tr>"

    per_step = [(s.step_us / s.steps if s.step_us is not None else None) for s in runs]
    lines.append(row("step (ms, profiler)", per_step, [_ms(s.step_us, s.steps) for s in runs]))
    lines.append(row("forward (ms)", [(s.forward_us / s.steps if s.forward_us is not None else None) for s in runs],
                     [_ms(s.forward_us, s.steps) for s in runs]))
    lines.append(row("backward (ms)", [(s.backward_us / s.steps if s.backward_us is not None else None) for s in runs],
                     [_ms(s.backward_us, s.steps) for s in runs]))
    lines.append(row("wall (ms)", [s.step_ms for s in runs],
                     ["" if s.step_ms is None else f"{s.step_ms:.3f}" for s in runs]))
    lines.append(row("peak memory (MiB)", [float(s.peak_bytes) if s.peak_bytes is not None else None for s in runs],
                     [_mib(s.peak_bytes) for s in runs]))
    lines.append("</table>")
    lines.append('<p class="note">A ratio below 1 means the second run is cheaper. A few steps of a small input '
                 "measure overheads more than kernels; for timings use <code>segloss bench</code>.</p>")
    return "".join(lines)


def _terms_section(s: ProfileSummary) -> str:
    n = s.steps
    if not s.terms:
        if s.forward_us is not None and any(r.name.startswith("segloss/compiled[") for r in s.labels):
            return ('<p class="note">Compiled: the terms are one fused graph, so there is no time per term '
                    "(the eager run has it).</p>")
        return '<p class="note">No per-term ranges in this run (no eager segloss composite was called).</p>'
    rows: list[tuple[str, Sequence[float]]] = [(t.name, [t.forward_us / n / 1e3, t.backward_us / n / 1e3])
                                               for t in s.terms]
    shared_f, shared_b = s.shared_forward_us, s.shared_backward_us
    rows.append(("(shared: outside the terms)", [(shared_f or 0.0) / n / 1e3, (shared_b or 0.0) / n / 1e3]))
    device = any(t.forward_device_us or t.backward_device_us for t in s.terms)
    table = ['<table><tr><th>term</th><th class="num">forward ms</th><th class="num">backward ms</th>'
             '<th class="num">calls</th>'
             + ('<th class="num">forward device ms</th><th class="num">backward device ms</th>' if device else "")
             + "</tr>"]
    for t in s.terms:
        table.append(f'<tr><td class="mono">{escape(t.name)}</td>'
                     + _cell("forward_us", t.forward_us, _ms(t.forward_us, n), run=s.worker, term=t.name)
                     + _cell("backward_us", t.backward_us, _ms(t.backward_us, n), run=s.worker, term=t.name)
                     + _cell("calls", t.calls, str(t.calls), run=s.worker, term=t.name)
                     + ((_cell("forward_device_us", t.forward_device_us, _ms(t.forward_device_us, n),
                                run=s.worker, term=t.name)
                         + _cell("backward_device_us", t.backward_device_us, _ms(t.backward_device_us, n),
                                 run=s.worker, term=t.name)) if device else "")
                     + "</tr>")
    table.append("<tr><td>(shared: outside the terms)</td>"
                 + _cell("shared_forward_us", shared_f, _ms(shared_f, n), run=s.worker)
                 + _cell("shared_backward_us", shared_b, _ms(shared_b, n), run=s.worker)
                 + "<td></td></tr></table>")
    note = ('<p class="note">A term\'s forward is its <code>segloss/&lt;term&gt;</code> range; its backward is the '
            "autograd nodes created inside that range (matched by the profiler's sequence numbers). Work shared "
            "by the terms, the weighted sum and the gradient accumulation are <i>shared</i>. TensorBoard's "
            "operator view does not show these labels.</p>")
    chart = _bar_chart(f"{s.worker}: time per term and step (CPU time, ms)", rows, "ms", ("forward", "backward"),
                       mono=True)
    return chart + "".join(table) + note


def _ops_section(s: ProfileSummary, top: int) -> str:
    ops = s.top_ops[:top]
    if not ops:
        return ""
    n = s.steps
    device = any(r.self_device_us for r in ops)
    key = "self_device_us" if device else "self_us"
    rows: list[tuple[str, Sequence[float]]] = [(r.name, [getattr(r, key) / n / 1e3]) for r in ops]
    kind = "device" if device else "CPU"
    table = [f'<table><tr><th>operator</th><th class="num">self ms</th><th class="num">total ms</th>'
             f'<th class="num">calls</th>{"<th class=num>self device ms</th>" if device else ""}</tr>']
    for r in ops:
        table.append(f'<tr><td class="mono">{escape(r.name)}</td>'
                     + _cell("self_us", r.self_us, _ms(r.self_us, n), run=s.worker, op=r.name)
                     + _cell("total_us", r.total_us, _ms(r.total_us, n), run=s.worker, op=r.name)
                     + _cell("calls", r.calls, str(r.calls), run=s.worker, op=r.name)
                     + (_cell("self_device_us", r.self_device_us, _ms(r.self_device_us, n), run=s.worker, op=r.name)
                        if device else "")
                     + "</tr>")
    table.append("</table>")
    return (_bar_chart(f"{s.worker}: top {len(ops)} operators by self {kind} time (ms per step)", rows, "ms",
                       mono=True) + "".join(table)
            + f'<p class="note">calls: over the {n} active steps.</p>')


def _labels_section(s: ProfileSummary) -> str:
    if not s.labels:
        return ""
    n = s.steps
    body = "".join(f'<tr><td class="mono">{escape(r.name)}</td>'
                   + _cell("total_us", r.total_us, _ms(r.total_us, n), run=s.worker, label=r.name)
                   + _cell("calls", r.calls, str(r.calls), run=s.worker, label=r.name) + "</tr>"
                   for r in s.labels)
    return ("<h3>segloss ranges (record_function)</h3>"
            '<table><tr><th>range</th><th class="num">total ms per step</th><th class="num">calls</th></tr>'
            f"{body}</table>")


def _run_section(s: ProfileSummary, top: int) -> str:
    files = "".join(f"<li><code>{escape(p.name)}</code></li>" for p in s.trace_files)
    return (f'<section id="run-{escape(s.worker)}"><h2>{escape(s.worker)}</h2>'
            f'<p class="meta">{s.steps} active steps on {escape(s.device)}; '
            f"trace in <code>{escape(str(s.out_dir))}</code>:</p>"
            f"<ul>{files}</ul>"
            + _terms_section(s) + _ops_section(s, top) + _labels_section(s) + "</section>")


def render_report(runs: Sequence[ProfileSummary], *, title: str = "", context: Mapping[str, str] | None = None,
                  top: int = 12) -> str:
    """The HTML page (a string) for one or more summaries (e.g. eager and compiled runs of one loss).

    ``context`` adds lines to the header (spec, mode, shape, ...); ``top`` operators are
    shown per run. The page has no script, no external reference and escaped labels.
    """
    if not runs:
        raise SeglossError("render_report: no summaries to report (pass the ProfileSummary of at least one run)")
    if top < 1:
        raise SeglossError(f"render_report: top must be >= 1 (got {top})")
    name = title or " / ".join(s.worker for s in runs)
    meta = {**(context or {}), "torch": torch.__version__,
            "written": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
    meta_html = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in meta.items())
    body = [
        f"<h1>segloss profile: {escape(name)}</h1>",
        f'<table class="meta">{meta_html}</table>',
        '<p class="note">A self-contained page: it loads nothing (no scripts, fonts or images from elsewhere), '
        "so it opens from disk without a network. The full traces (the .pt.trace.json files) open in "
        "TensorBoard's PyTorch Profiler tab, Perfetto or chrome://tracing.</p>",
        "<h2>Forward, backward and memory</h2>",
        _split_section(runs),
        _memory_section(runs),
        _compare_section(runs),
        *(_run_section(s, top) for s in runs),
    ]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>segloss profile: {escape(name)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_report(path: str | os.PathLike[str], runs: Sequence[ProfileSummary], *, title: str = "",
                 context: Mapping[str, str] | None = None, top: int = 12) -> Path:
    """Write ``render_report(runs, ...)`` to ``path`` (UTF-8; folders created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(runs, title=title, context=context, top=top), encoding="utf-8")
    return out
