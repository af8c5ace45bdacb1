"""``segloss plugins [--json] [--check]``: every plugin, where it comes from, and how it loaded.

``--check`` also runs the conformance kit (``segloss_registry.testing.check_loss``, the same
function and report a plugin's own tests use) over the losses of third-party plugins, or of
the plugins named with ``--plugin``, prints each report, and exits 1 on any problem.
"""

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
    p.add_argument("--check", action="store_true",
                   help="run the conformance kit (segloss_registry.testing.check_loss) over the losses of every "
                        "third-party plugin (or those named with --plugin) and print its report; exit 1 when a "
                        "plugin failed to load, reported a problem, or failed a check")
    p.add_argument("--plugin", action="append", default=[], metavar="NAME",
                   help="with --check: the plugins whose losses are checked (repeatable; built-in ones too, "
                        "e.g. --plugin segloss_dice); default: every plugin not shipped with segloss-registry")
    p.add_argument("--all", action="store_true", help="with --check: check the built-in plugins too (minutes)")
    p.add_argument("--no-compile", action="store_true",
                   help="with --check: leave out the compiled check (no C++ compiler; it costs seconds per loss)")
    p.set_defaults(func=run)


CORE_DISTRIBUTION = "segloss-registry"


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


def plugins_to_check(rows: Sequence[dict[str, Any]], names: Sequence[str], every: bool) -> list[str]:
    """The loaded plugins whose losses ``--check`` runs the kit on; raises ``SeglossError`` for an unknown name."""
    from .._errors import SeglossError, did_you_mean

    known = {r["name"]: r for r in rows}
    for name in names:
        if name not in known:
            raise SeglossError(f"plugins: no plugin named {name!r}{did_you_mean(name, known)}; "
                               f"see `segloss plugins` for the names")
    if names:
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [r["name"] for r in rows if every or r["distribution"] != CORE_DISTRIBUTION]
    return [n for n in chosen if known[n]["status"] == "loaded" and known[n]["losses"]]


def run(args: argparse.Namespace) -> int:
    from .. import list_plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table shows every problem the warnings would repeat
        rows = plugin_rows(list_plugins())
    if not args.check and (args.plugin or args.all or args.no_compile):
        from .._errors import SeglossError

        raise SeglossError("plugins: --plugin, --all and --no-compile go with --check")
    reports = []
    not_run: str | None = None
    if args.check:
        from .._errors import PluginError
        from ..testing import check_plugin

        try:
            for name in plugins_to_check(rows, args.plugin, args.all):
                reports.extend(check_plugin(name, compile=not args.no_compile))
        except PluginError as exc:  # strict mode: the registry refuses every use while a plugin is broken
            not_run = str(exc).splitlines()[0]
    if args.json:
        if args.check:
            by_plugin: dict[str, list[dict[str, Any]]] = {}
            for report in reports:
                by_plugin.setdefault(report.qualified_name.split(":")[0], []).append(report.to_dict())
            for r in rows:
                r["conformance"] = by_plugin.get(r["name"])
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        if args.check:
            print()
            if not_run is not None:
                print(f"conformance: not run ({not_run}); fix the plugin problems above first")
            elif reports:
                print("conformance (segloss_registry.testing.check_loss):")
                for report in reports:
                    print(report.format())
            else:
                print("conformance: no third-party plugin with losses is installed; name one with --plugin NAME "
                      "(or --all for the built-in ones too)")
    if args.check and (not_run is not None or any(r["status"] == "failed" or r["problems"] for r in rows)
                       or any(not report.passed for report in reports)):
        return 1
    return 0
