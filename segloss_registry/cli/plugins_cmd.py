"""``segloss plugins [--json] [--check]``: every plugin, where it comes from, and how it loaded."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from collections.abc import Sequence
from typing import Any

from .._registry import PluginInfo


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plugins",
        help="list the loss plugins: distribution, version, losses, status (loaded, failed with the reason, blocked)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--check", action="store_true", help="exit 1 when a plugin failed to load or reported a problem")
    p.set_defaults(func=run)


def plugin_rows(plugins: Sequence[PluginInfo]) -> list[dict[str, Any]]:
    """One JSON-able dict per plugin: name, distribution, version, status, losses, problems."""
    return [dataclasses.asdict(p) for p in plugins]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The plugins as an aligned table; each problem on its own indented line below its plugin."""
    if not rows:
        return "no segloss plugins found (entry-point group 'segloss_registry')"
    headers = ("plugin", "distribution", "version", "status", "losses")
    table = [
        (
            r["name"],
            r["distribution"] or "(registered in code)",
            r["version"] or "-",
            r["status"],
            ", ".join(r["losses"]) or "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  " + headers[-1]]
    for r, t in zip(rows, table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(t, widths)) + "  " + t[-1])
        for problem in r["problems"]:
            lines.append(f"    ! {problem}")
    blocked = [r["name"] for r in rows if r["status"] == "blocked"]
    if blocked:
        lines.append(f"blocked by SEGLOSS_DISABLE_PLUGINS: {', '.join(blocked)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .. import list_plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table shows every problem the warnings would repeat
        rows = plugin_rows(list_plugins())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    if args.check and any(r["status"] == "failed" or r["problems"] for r in rows):
        return 1
    return 0
