"""``segloss check SPEC``: validate a spec and print its normalised config."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="validate a spec; print its normalised config or the error (exit 1)")
    p.add_argument("spec", help="e.g. '0.5*focal(gamma=2) + dice'")
    p.add_argument("--mode", default="binary", help="binary, multiclass or multilabel (default binary)")
    p.add_argument("--ignore-index", type=int, default=None)
    p.add_argument("--probabilities", action="store_true", help="inputs are probabilities (from_logits=False)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import build_loss

    criterion = build_loss(
        args.spec, mode=args.mode, ignore_index=args.ignore_index, from_logits=not args.probabilities
    )
    print(criterion.spec)
    print(json.dumps(criterion.config(), indent=2))
    return 0
