"""``segloss new-plugin NAME [DIR]``: write a ready-to-install plugin distribution for loss NAME.

The skeleton (``segloss_registry/templates/plugin``) holds a pyproject.toml with the entry
point, a README, the package ``segloss_NAME`` (params model, loss function, plain function,
hook) and tests that run the conformance kit; it passes them as written.
"""

from __future__ import annotations

import argparse
import re
import warnings
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from .._errors import SeglossError

__all__ = ["write_plugin", "names_for"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SUFFIX = ".tmpl"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("new-plugin", help="write a plugin package skeleton for a new loss (passes the conformance kit)")
    p.add_argument("name", help="the loss name, e.g. 'my_loss' (lower-case letters, digits, '_')")
    p.add_argument("dir", nargs="?", default=None, help="where to write it (default: ./segloss-NAME)")
    p.add_argument("--force", action="store_true", help="write into DIR even if it is not empty (overwrites)")
    p.set_defaults(func=run)


def names_for(name: str) -> dict[str, str]:
    """The placeholders of the template for loss ``name``; raises ``SeglossError`` for a bad name."""
    raw = name
    name = name.strip().lower().replace("-", "_")
    if name.startswith("segloss_"):
        name = name[len("segloss_"):]
    if not _NAME.match(name) or name.endswith("_"):
        raise SeglossError(
            f"new-plugin: {raw!r} is not a loss name; use lower-case letters, digits and '_', starting with "
            f"a letter, e.g. 'my_loss'"
        )
    from .. import __version__

    package = f"segloss_{name}"
    return {
        "__LOSS__": name,
        "__PACKAGE__": package,
        "__PLUGIN__": package,
        "__DIST__": package.replace("_", "-"),
        "__PARAMS__": "".join(part.capitalize() for part in name.split("_")) + "Params",
        "__CORE_VERSION__": __version__,
    }


def _fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace(key, value)
    return text


def _walk(node: Traversable, rel: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    out: list[tuple[tuple[str, ...], Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            out.extend(_walk(child, (*rel, child.name)))
        elif child.name.endswith(_SUFFIX):
            out.append(((*rel, child.name), child))
    return out


def write_plugin(name: str, directory: str | Path | None = None, force: bool = False) -> tuple[Path, list[Path]]:
    """Write the plugin skeleton for loss ``name`` into ``directory`` (default ``./segloss-NAME``).

    Returns (the directory, the files written). Raises ``SeglossError`` for a bad name or a
    directory that is not empty (unless ``force``).
    """
    names = names_for(name)
    root = Path(directory) if directory is not None else Path.cwd() / names["__DIST__"]
    if root.exists() and not root.is_dir():
        raise SeglossError(f"new-plugin: {root} exists and is not a directory; pick another DIR")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise SeglossError(f"new-plugin: {root} is not empty; pick another DIR or pass --force to overwrite")
    template = resources.files("segloss_registry") / "templates" / "plugin"
    files = _walk(template)
    if not files:
        raise SeglossError("new-plugin: the plugin template is missing from this installation of segloss-registry")
    written: list[Path] = []
    for rel, src in files:
        parts = [_fill(p, names) for p in rel]
        parts[-1] = parts[-1][: -len(_SUFFIX)]
        dest = root.joinpath(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_fill(src.read_text(encoding="utf-8"), names), encoding="utf-8")
        written.append(dest)
    return root, written


def _taken_by(loss: str) -> list[str]:
    """Plugins that already register ``loss`` (its short name becomes ambiguous)."""
    from .._registry import get_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = get_registry().all_losses()
    return sorted({info.plugin for info in losses if loss == info.name or loss in info.aliases})


def run(args: argparse.Namespace) -> int:
    root, written = write_plugin(args.name, args.dir, force=args.force)
    names = names_for(args.name)
    loss, plugin = names["__LOSS__"], names["__PLUGIN__"]
    print(f"wrote {names['__DIST__']} (plugin '{plugin}', loss '{loss}') to {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    owners = _taken_by(loss)
    if owners:
        print(
            f"note: '{loss}' is also registered by {', '.join(owners)}; once installed, the short name is "
            f"ambiguous and users write '{plugin}:{loss}'"
        )
    print("next:")
    print(f"  cd {root}")
    print('  pip install -e ".[test]"      # registers the entry point')
    print("  python -m pytest -q           # conformance kit + formula tests")
    print(f"  segloss plugins               # lists {plugin}")
    print(f"then edit src/{names['__PACKAGE__']}/__init__.py: your formula, your parameters, your tests")
    return 0
