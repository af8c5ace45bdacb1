"""``segloss list [PATTERN]``: the registered losses."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._registry import RecipeInfo, get_registry


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list the registered losses (wildcards allowed)")
    p.add_argument("pattern", nargs="?", default="*", help="e.g. 'dice*' (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    losses = get_registry().list(args.pattern)
    rows: list[dict[str, Any]] = [
        {
            "name": loss.name,
            "aliases": list(loss.aliases),
            "plugin": loss.plugin,
            "distribution": loss.distribution,
            "version": loss.version,
            "modes": list(loss.modes),
            "summary": f"= {loss.spec}: {loss.summary}" if isinstance(loss, RecipeInfo) else loss.summary,
        }
        for loss in losses
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no loss matches '{args.pattern}'")
        return 1
    headers = ("name", "aliases", "plugin", "version", "summary")
    table: list[tuple[str, ...]] = [
        (r["name"], ", ".join(r["aliases"]), r["plugin"], r["version"] or "-", r["summary"]) for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers[:-1])]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  summary")
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0
