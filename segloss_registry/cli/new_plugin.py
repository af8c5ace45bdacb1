"""``segloss new-plugin NAME [DIR]``: write a ready-to-install plugin distribution for loss NAME.

The skeleton (``segloss_registry/templates/plugin``) holds a pyproject.toml with the entry
point, a README, the package ``segloss_NAME`` (params model, loss function with a doctested
example, and one ``Loss`` declaration: the plain function and the hook) and tests that run the
conformance kit; it passes them as written.
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

__all__ = ["write_plugin", "names_for", "suggest_name", "collisions"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SUFFIX = ".tmpl"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("new-plugin", help="write a plugin package skeleton for a new loss (passes the conformance kit)")
    p.add_argument("name", help="the loss name, e.g. 'my_loss' (lower-case letters, digits, '_')")
    p.add_argument("dir", nargs="?", default=None, help="where to write it (default: ./segloss-NAME)")
    p.add_argument("--force", action="store_true", help="write into DIR even if it is not empty (overwrites)")
    p.set_defaults(func=run)


def suggest_name(name: str) -> str | None:
    """The valid loss name closest to ``name`` (lower case, '-' and spaces as '_', no 'segloss_' prefix), or None."""
    text = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
    text = re.sub(r"_+", "_", text)
    text = text.removeprefix("segloss_")
    return text if _NAME.match(text) and not text.endswith("_") else None


def names_for(name: str) -> dict[str, str]:
    """The placeholders of the template for loss ``name``; raises ``SeglossError`` for a bad name.

    The name is used exactly as given, never rewritten: a name that is not valid is an error
    that suggests the closest valid one.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith("_") or name.startswith("segloss_"):
        hint = suggest_name(name) if isinstance(name, str) else None
        why = (
            "the package is named segloss_NAME for you, so leave the prefix out"
            if isinstance(name, str) and name.strip().lower().startswith("segloss")
            else "use lower-case letters, digits and '_', starting with a letter and not ending with '_'"
        )
        raise SeglossError(
            f"new-plugin: {name!r} is not a loss name; {why}"
            + (f": did you mean {hint!r}?" if hint and hint != name else ", e.g. 'my_loss'")
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


def collisions(name: str) -> list[str]:
    """Why loss ``name`` (package ``segloss_NAME``) would collide with what is installed; [] if free.

    A loss name or alias already registered (the short name would become ambiguous, or worse:
    for ``dice`` the package ``segloss_dice`` would shadow the built-in), a plugin (entry point)
    of that name, or an importable module ``segloss_NAME``.
    """
    import importlib.util

    from .._registry import get_registry

    package = f"segloss_{name}"
    found: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = get_registry()
        owners = sorted({i.plugin for i in registry.all_losses() if name == i.name or name in i.aliases})
        plugins = {p.name: p for p in registry.plugins()}
    if owners:
        found.append(f"'{name}' is a loss already registered by {', '.join(owners)}")
    if package in plugins:
        dist = plugins[package].distribution
        found.append(f"'{package}' is already a segloss plugin" + (f" (from {dist})" if dist else ""))
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        where = spec.origin or (list(spec.submodule_search_locations or []) or ["?"])[0]
        found.append(f"the module '{package}' is already importable ({where})")
    return found


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
    taken = collisions(names["__LOSS__"])
    if taken:
        candidates = (f"{names['__LOSS__']}{suffix}" for suffix in ("_v2", "_2", "_3", "_4", "_new"))
        free = next((c for c in candidates if not collisions(c)), "my_" + names["__LOSS__"])
        package = names["__PACKAGE__"]
        shadows = any(package in why for why in taken)
        consequence = (
            f"once installed, the package {package} would shadow the one installed (or be shadowed by it)"
            if shadows else f"once installed, the short name '{names['__LOSS__']}' would be ambiguous"
        )
        raise SeglossError(
            f"new-plugin: cannot use the name {names['__LOSS__']!r}: " + "; ".join(taken)
            + f"; {consequence}. Pick a distinctive name, e.g. {free!r}"
        )
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


def run(args: argparse.Namespace) -> int:
    root, written = write_plugin(args.name, args.dir, force=args.force)
    names = names_for(args.name)
    loss, plugin = names["__LOSS__"], names["__PLUGIN__"]
    print(f"wrote {names['__DIST__']} (plugin '{plugin}', loss '{loss}') to {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print("next:")
    print(f"  cd {root}")
    print('  pip install -e ".[test]"      # registers the entry point')
    print("  python -m pytest -q           # conformance kit + formula tests")
    print(f"  segloss plugins               # lists {plugin}")
    print(f"then replace the placeholder formula (mean |p - t|^q, the same for every new plugin) in "
          f"src/{names['__PACKAGE__']}/__init__.py with yours, and its reference in tests/test_{loss}.py")
    return 0
