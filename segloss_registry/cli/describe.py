"""``segloss describe NAME [--json]``: one loss's parameters, or its JSON schema."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("describe", help="a loss's parameters: type, default and rule")
    p.add_argument("name", help="loss name, alias or plugin:name")
    p.add_argument("--json", action="store_true", help="print the parameters' JSON schema")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import describe_loss

    d = describe_loss(args.name)
    if args.json:
        print(json.dumps(d["schema"] if d["schema"] is not None else {"recipe": d["recipe"]}, indent=2))
        return 0
    where = f"{d['distribution'] or 'registered in code'} {d['version'] or ''}".rstrip()
    print(f"{d['name']}  ({d['qualified_name']}, {where})")
    if d["aliases"]:
        print(f"  aliases: {', '.join(d['aliases'])}")
    print(f"  modes:   {', '.join(d['modes'])};  spatial dims: {', '.join(f'{x}D' for x in d['dims'])}")
    if d["summary"]:
        print(f"  {d['summary']}")
    if "recipe" in d:
        print(f"  recipe:  {d['recipe']}")
        return 0
    if not d["parameters"]:
        print("  no parameters")
    for name, p in d["parameters"].items():
        rules = ", ".join(f"{k} {v}" for k, v in p["rules"].items())
        print(f"  {name}: {p['type']} = {p['default']!r}" + (f"  [{rules}]" if rules else ""))
        if p["description"]:
            print(f"      {p['description']}")
    return 0
