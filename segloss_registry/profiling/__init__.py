"""Profiler traces of a few training steps, in the layout TensorBoard's profiler plugin reads,
and an offline HTML report of them.

``profile_steps(step_fn, out_dir, steps=3)`` runs ``step_fn`` under ``torch.profiler`` with
a wait/warm-up/active schedule and writes the trace with
``torch.profiler.tensorboard_trace_handler(out_dir)``: one ``<worker>.<ts>.pt.trace.json``
per worker in ``out_dir``, which ``tensorboard --logdir <parent>`` (with torch-tb-profiler)
lists as a run, and which Perfetto (https://ui.perfetto.dev) or chrome://tracing open as is.
The composite loss labels its call ``segloss/eager[spec]`` or ``segloss/compiled[spec]`` and,
in eager mode, each term ``segloss/<term>``; ``profile_steps`` labels each step
``segloss/step``.

``write_report(path, summaries)`` writes one self-contained HTML page (inline SVG bar
charts, no scripts, no network requests) with the per-term time, the forward/backward
split, the top operators, the peak memory and, given several summaries, eager against
compiled: it opens from disk on a machine without internet, where TensorBoard's profiler
page (which loads Google's chart library) does not.
"""

from __future__ import annotations

from ._steps import OpRow, ProfileSummary, TermTime, open_command, profile_steps, safe_run_name
from .report import render_report, write_report

__all__ = [
    "OpRow",
    "ProfileSummary",
    "TermTime",
    "open_command",
    "profile_steps",
    "render_report",
    "safe_run_name",
    "write_report",
]
