"""The docstring examples of every module of ``segloss_registry`` and of the built-in plugins run.

Each module is one test: its doctests (``doctest.DocTestFinder``, as ``python -m doctest``)
must all pass; a module without examples is skipped. Every built-in loss documents its plain
function with an example (the formula function's docstring, which the ``Loss`` declaration
forwards to the plain function), so the examples are checked against their printed values.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import segloss_registry

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"


def _modules() -> list[str]:
    names = ["segloss_registry"]
    names += [m.name for m in pkgutil.walk_packages(segloss_registry.__path__, "segloss_registry.")]
    for package in sorted(p for p in PLUGINS.iterdir() if (p / "__init__.py").exists()):
        names.append(package.name)
        names += [m.name for m in pkgutil.walk_packages([str(package)], f"{package.name}.")]
    # a __main__ module runs its program on import
    return [n for n in names if n.rsplit(".", 1)[-1] != "__main__"]


MODULES = _modules()


def _doctests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, module_name) if t.examples]


@pytest.mark.parametrize("module_name", MODULES)
def test_module_doctests_pass(module_name: str) -> None:
    tests = _doctests(module_name)
    if not tests:
        pytest.skip(f"{module_name} has no docstring examples")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module_name} failed:\n" + "".join(
        report
    )


def test_the_modules_are_found() -> None:
    assert {"segloss_registry", "segloss_registry._declare", "segloss_registry.ops", "segloss_dice"} <= set(MODULES)
    assert not [n for n in MODULES if n.endswith("__main__")]


def test_a_failing_example_fails_the_check() -> None:
    """The runner used above reports a wrong printed value (the check is not vacuous)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong.py", 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1


# The loss functions converted to the declarative API, with their examples (the formula function's docstring).
DOCUMENTED = {
    "active_contour": "segloss_active_contour",
    "bce": "segloss_bce",
    "boundary": "segloss_boundary",
    "ce": "segloss_ce",
    "cldice": "segloss_cldice",
    "combo": "segloss_combo",
    "dice": "segloss_dice",
    "exp_log": "segloss_exp_log",
    "focal": "segloss_focal",
    "focal_tversky": "segloss_focal_tversky",
    "generalized_dice": "segloss_generalized_dice",
    "hausdorff_dt": "segloss_hausdorff_dt",
}


@pytest.mark.parametrize("loss", sorted(DOCUMENTED))
def test_each_plain_function_documents_formula_shapes_parameters_and_an_example(loss: str) -> None:
    from segloss_registry import Loss

    module = importlib.import_module(DOCUMENTED[loss])
    plain = getattr(module, f"{loss}_loss")
    assert isinstance(plain, Loss) and plain.name == loss
    doc = inspect.getdoc(plain) or ""
    assert doc == inspect.getdoc(plain.fn), "the plain function's doc is the formula function's"
    for section in ("Shapes", "Parameters", "Example:", ">>> "):
        assert section in doc, f"{loss}: its docstring has no {section!r}"
    assert f"{loss}_loss(" in doc.split("Example:", 1)[1], f"{loss}: the example calls the plain function"
    assert [t for t in doctest.DocTestFinder().find(plain.fn, loss, globs=vars(module)) if t.examples]
