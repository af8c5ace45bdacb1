"""The ``segloss`` command line. Each subcommand lives in its own module with ``add_parser``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._errors import SeglossError
from . import bench, check, compare, demo, describe, list_cmd, new_plugin, plugins_cmd, profile
from ._quiet import without_profiler_noise

__all__ = ["main", "build_parser", "version_text"]

# each module: add_parser(subparsers) -> sets func=run(args) -> int
COMMANDS = [list_cmd, describe, check, demo, compare, bench, profile, plugins_cmd, new_plugin]
# commands that run torch.profiler, whose kineto start/stop lines are filtered from stderr
PROFILING = frozenset({"demo", "compare", "bench", "profile"})
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)


def version_text() -> str:
    """``segloss-registry 0.1.0 (torch 2.13.0+cpu, Python 3.11.7)``; torch's version only if it is imported."""
    import platform

    from .. import __version__

    torch = sys.modules.get("torch")
    extra = f"torch {torch.__version__}, " if torch is not None else ""
    return f"segloss-registry {__version__} ({extra}Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segloss",
                                     description="Segmentation losses as plugins: list, describe, check.")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            if args.command in PROFILING:
                with without_profiler_noise():
                    return int(args.func(args) or 0)
            return int(args.func(args) or 0)
        except SeglossError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    except BrokenPipeError:
        # the reader went away (`segloss plugins --json | head`): stop quietly. Point stdout at
        # devnull so that the interpreter's final flush does not raise (and print) again.
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
