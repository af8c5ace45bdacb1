"""The ``segloss`` command line. Each subcommand lives in its own module with ``add_parser``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._errors import SeglossError
from . import bench, check, demo, describe, list_cmd, profile
from . import new_plugin, plugins_cmd

__all__ = ["main", "build_parser"]

# each module: add_parser(subparsers) -> sets func=run(args) -> int
COMMANDS = [list_cmd, describe, check, demo, bench, profile, plugins_cmd, new_plugin]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segloss", description="Segmentation losses as plugins: list, describe, check.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SeglossError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
