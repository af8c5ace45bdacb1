"""The core knows no plugin by name: every built-in loss reaches the core through the same public
road as a third-party one (the hooks, the declarations, the params metadata).

The scan reads every module of ``segloss_registry/`` (the demo application excepted: like a user's
training script it picks loss specs by name) and fails on any string literal that names a loss or an
alias registered by the built-in plugins, outside docstrings and the help texts of the CLI.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from segloss_registry import get_registry

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "segloss_registry"
APPLICATIONS = {"demo"}  # sub-packages that use the library as a user would
HELP_KEYWORDS = {"help", "description", "epilog", "metavar"}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _builtin_names() -> set[str]:
    names: set[str] = set()
    for info in get_registry().list("*"):
        if info.distribution == "segloss-registry":
            names |= {info.name, *info.aliases}
    return names


def _documentation(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants and of the CLI help texts."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in HELP_KEYWORDS:
                    skip.update(id(n) for n in ast.walk(kw.value))
    return skip


def _core_modules() -> list[Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if not APPLICATIONS & set(p.relative_to(CORE).parts)]


def test_the_builtin_names_are_found() -> None:
    names = _builtin_names()
    assert {"dice", "bce", "ce", "focal", "surface", "jaccard"} <= names  # the scan below is not vacuous
    assert len(_core_modules()) > 20


def test_no_core_module_names_a_builtin_loss() -> None:
    names = _builtin_names()
    found: list[str] = []
    for path in _core_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _documentation(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                hits = sorted(set(_WORD.findall(node.value)) & names)
                if hits:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(hits)} in {node.value[:70]!r}")
    assert not found, "the core names built-in losses (move the knowledge into the plugins):\n" + "\n".join(found)


def test_the_scan_catches_a_name(tmp_path: Path) -> None:
    """The detector itself: a module that special-cases a loss by name is caught."""
    tree = ast.parse('"""Docstring naming dice is fine."""\nif name == "dice":\n    pass\n')
    docs = _documentation(tree)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert [s for s in strings if "Docstring" not in s] == ["dice"]
    assert len([n for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs]) == 1


@pytest.mark.parametrize("part", ["_registry", "_options", "_inputs", "_composite", "_compile", "ops", "bench",
                                  "demo", "cli"])
def test_the_layout_shows_the_architecture(part: str) -> None:
    assert (CORE / f"{part}.py").exists() or (CORE / part).is_dir(), part
