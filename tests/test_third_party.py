"""Third-party plugins: a real wheel, installed into a directory, found in a fresh process.

``examples/segloss-example-plugin`` (the tutorial's plugin) and a second distribution written
here (``segloss-rival``, which registers the same loss name with another formula) are built
into wheels with ``pip wheel --no-index --no-build-isolation`` (no network: setuptools comes
from this environment) and installed with ``pip install --no-deps --target``. Each check then
runs in a fresh ``python`` with ``PYTHONPATH`` set to that directory, so the loss can only be
found through the installed entry-point metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from segloss_registry import Registry, SeglossError
from segloss_registry.cli import main
from segloss_registry.cli.plugins_cmd import format_table, plugin_rows

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "segloss-example-plugin"
OLD_API = ROOT / "tests" / "plugin_fixtures" / "old_api_plugin"  # the example as written before Loss/losses_hook
SKIP_COPY = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

RIVAL_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "segloss-rival"
version = "2.3.0"
dependencies = []

[project.entry-points.segloss_registry]
segloss_rival = "segloss_rival"

[tool.setuptools]
packages = ["segloss_rival"]
"""

RIVAL_MODULE = '''\
"""Another author's loss under the same name: mean |p - t| over the valid elements."""
from segloss_registry import NoParams, hookimpl


def mean_abs(inp, params):
    return inp.pixel_mean((inp.prob - inp.target).abs())


@hookimpl
def register_losses(register):
    register("sensitivity_specificity", mean_abs, params=NoParams, summary="mean |p - t|")
'''


def _pip(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"],
                          capture_output=True, text=True, timeout=180, cwd=cwd)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def _setuptools_ok() -> None:
    try:
        import setuptools
    except ImportError:  # pragma: no cover
        pytest.fail("building the example wheel needs setuptools >= 77 here: pip install -e '.[dev]'")
    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, f"setuptools {setuptools.__version__} is too old for the example; pip install -e '.[dev]'"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example's and the rival's wheels, built from copies (the source tree stays clean)."""
    _setuptools_ok()
    tmp = tmp_path_factory.mktemp("third_party")
    shutil.copytree(EXAMPLE, tmp / "example", ignore=SKIP_COPY)
    rival = tmp / "rival"
    (rival / "segloss_rival").mkdir(parents=True)
    (rival / "pyproject.toml").write_text(RIVAL_PYPROJECT)
    (rival / "segloss_rival" / "__init__.py").write_text(RIVAL_MODULE)
    out = tmp / "wheels"
    _pip("wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(out),
         str(tmp / "example"), str(rival))
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"segloss_example_plugin", "segloss_rival"}, sorted(found)
    return {"example": found["segloss_example_plugin"], "rival": found["segloss_rival"], "src": tmp / "example"}


@pytest.fixture(scope="module")
def site_one(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the example plugin only."""
    site = tmp_path_factory.mktemp("site_one")
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheels["example"]))
    return site


@pytest.fixture(scope="module")
def site_two(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the example plugin and the rival (both register 'sensitivity_specificity')."""
    site = tmp_path_factory.mktemp("site_two")
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheels["example"]), str(wheels["rival"]))
    return site


# The independent formula, written out in the fresh process: Brosch et al. 2015 for one class.
_REFERENCE = """
def brosch(p, t, r=0.05):
    err = (t - p) ** 2
    return r * float((err * t).sum() / t.sum()) + (1 - r) * float((err * (1 - t)).sum() / (1 - t).sum())
"""


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOSS_")}
    env["PYTHONPATH"] = str(site)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _python(site: Path, code: str, **extra: str) -> dict:
    """Run ``code`` (after ``_REFERENCE``) in a fresh interpreter with ``site`` on the path; it prints JSON last."""
    proc = subprocess.run([sys.executable, "-c", _REFERENCE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=_env(site, **extra))
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _segloss(site: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "segloss"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "segloss_registry.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=_env(site, **extra))





@pytest.mark.slow
def test_the_wheel_declares_the_entry_point(wheels: dict[str, Path]) -> None:
    import zipfile

    with zipfile.ZipFile(wheels["example"]) as whl:
        names = whl.namelist()
        text = whl.read("segloss_example_plugin-0.1.0.dist-info/entry_points.txt").decode()
    assert "segloss_example/__init__.py" in names
    assert "[segloss_registry]" in text and "segloss_example = segloss_example" in text


@pytest.mark.slow
def test_build_loss_finds_the_installed_plugin_through_its_entry_point(site_one: Path) -> None:
    out = _python(site_one, """
    import json, sys, torch
    from segloss_registry import build_loss, describe_loss
    before = "segloss_example" in sys.modules
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    t = (torch.rand(2, 1, 16, 16) < 0.2).float()
    crit = build_loss("sensitivity_specificity + dice")
    total, terms = crit(x, t, return_terms=True)
    p = torch.sigmoid(x)
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    import segloss_example
    print(json.dumps({
        "imported_before": before, "file": segloss_example.__file__, "describe": describe_loss("sens_spec"),
        "total": total.item(), "ss": terms["sensitivity_specificity"].item(), "dice": terms["dice"].item(),
        "ss_ref": brosch(p, t), "dice_ref": float(dice), "spec": crit.spec,
    }, default=str))
    """)
    assert out["imported_before"] is False  # found lazily, through the entry point
    assert Path(out["file"]).is_relative_to(site_one)  # the installed copy, not examples/
    d = out["describe"]
    assert (d["qualified_name"], d["distribution"], d["version"]) == (
        "segloss_example:sensitivity_specificity", "segloss-example-plugin", "0.1.0")
    assert out["spec"] == "sensitivity_specificity + dice"
    assert out["ss"] == pytest.approx(out["ss_ref"], rel=1e-5)
    assert out["dice"] == pytest.approx(out["dice_ref"], rel=1e-5)
    assert out["total"] == pytest.approx(out["ss_ref"] + out["dice_ref"], rel=1e-5)


@pytest.mark.slow
def test_segloss_plugins_lists_it_with_its_version(site_one: Path) -> None:
    proc = _segloss(site_one, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["segloss_example"] == {
        "name": "segloss_example", "distribution": "segloss-example-plugin", "version": "0.1.0",
        "status": "loaded", "losses": ["sensitivity_specificity"], "problems": [],
    }
    assert rows["segloss_dice"]["distribution"] == "segloss-registry"
    text = _segloss(site_one, "plugins").stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("segloss_example "))
    assert line.split() == ["segloss_example", "segloss-example-plugin", "0.1.0", "loaded", "sensitivity_specificity"]


@pytest.mark.slow
def test_two_distributions_one_name_ambiguous_and_qualified(site_two: Path) -> None:
    out = _python(site_two, """
    import json, warnings, torch
    from segloss_registry import AmbiguousLossError, build_loss
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            build_loss("sensitivity_specificity + dice")
            error = None
        except AmbiguousLossError as exc:
            error = str(exc)
    torch.manual_seed(1)
    x = torch.randn(2, 1, 8, 8)
    t = (torch.rand(2, 1, 8, 8) < 0.3).float()
    p = torch.sigmoid(x)
    ours = build_loss("segloss_example:sensitivity_specificity")(x, t).item()
    theirs = build_loss("segloss_rival:sensitivity_specificity")(x, t).item()
    both = build_loss("segloss_example:sensitivity_specificity + 2*segloss_rival:sensitivity_specificity")
    total, terms = both(x, t, return_terms=True)
    alias = build_loss("sens_spec")(x, t).item()  # the alias is the example's only
    print(json.dumps({
        "error": error, "warnings": [str(w.message) for w in caught], "ours": ours, "theirs": theirs,
        "ours_ref": brosch(p, t), "theirs_ref": float((p - t).abs().mean()), "alias": alias,
        "total": total.item(), "keys": list(terms),
    }))
    """)
    assert out["error"] is not None
    assert "registered by 2 plugins (segloss_example, segloss_rival)" in out["error"]
    assert "'segloss_example:sensitivity_specificity' or 'segloss_rival:sensitivity_specificity'" in out["error"]
    ambiguity = [w for w in out["warnings"] if "ambiguous" in w]
    assert len(ambiguity) == 1 and "'segloss_rival:sensitivity_specificity'" in ambiguity[0]
    assert out["ours"] == pytest.approx(out["ours_ref"], rel=1e-5)
    assert out["theirs"] == pytest.approx(out["theirs_ref"], rel=1e-5)
    assert out["alias"] == pytest.approx(out["ours_ref"], rel=1e-5)
    assert out["keys"] == ["sensitivity_specificity", "sensitivity_specificity_2"]
    assert out["total"] == pytest.approx(out["ours_ref"] + 2 * out["theirs_ref"], rel=1e-5)

    rows = {r["name"]: r for r in json.loads(_segloss(site_two, "plugins", "--json").stdout)}
    assert rows["segloss_rival"]["version"] == "2.3.0" and rows["segloss_rival"]["status"] == "loaded"
    assert any("segloss_rival:sensitivity_specificity" in p for p in rows["segloss_rival"]["problems"])
    assert any("segloss_example:sensitivity_specificity" in p for p in rows["segloss_example"]["problems"])
    assert _segloss(site_two, "plugins", "--check").returncode == 1


@pytest.mark.slow
def test_a_blocked_plugin_is_listed_and_leaves_the_name_to_the_other(site_two: Path) -> None:
    proc = _segloss(site_two, "plugins", "--json", SEGLOSS_DISABLE_PLUGINS="segloss_rival")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["segloss_rival"]["status"] == "blocked" and rows["segloss_rival"]["losses"] == []
    assert rows["segloss_example"]["problems"] == []
    text = _segloss(site_two, "plugins", SEGLOSS_DISABLE_PLUGINS="segloss_rival").stdout
    assert "blocked by SEGLOSS_DISABLE_PLUGINS: segloss_rival" in text
    out = _python(site_two, """
    import json
    from segloss_registry import build_loss
    print(json.dumps({"plugin": build_loss("sensitivity_specificity").terms[0].info.plugin}))
    """, SEGLOSS_DISABLE_PLUGINS="segloss_rival")
    assert out["plugin"] == "segloss_example"


@pytest.mark.slow
@pytest.mark.compile
def test_the_examples_own_tests_pass_against_the_installed_wheel(site_one: Path, wheels: dict[str, Path]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
                          cwd=wheels["src"], capture_output=True, text=True, timeout=300, env=_env(site_one))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# -- a plugin written against the first API (register(...) in a @hookimpl, functional_loss) -------------
def _both_examples(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """The old-API copy and today's declarative example, imported from their source trees."""
    import importlib

    monkeypatch.syspath_prepend(str(OLD_API / "src"))
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    for name in ("segloss_example", "segloss_example_old"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    old, new = importlib.import_module("segloss_example_old"), importlib.import_module("segloss_example")
    monkeypatch.setitem(sys.modules, "segloss_example_old", old)  # removed again after the test
    monkeypatch.setitem(sys.modules, "segloss_example", new)
    return old, new


def test_the_old_api_fixture_is_the_first_api() -> None:
    """The fixture really is written the old way; the example the new way (so the test below compares the two)."""
    old = (OLD_API / "src" / "segloss_example_old" / "__init__.py").read_text()
    new = (EXAMPLE / "src" / "segloss_example" / "__init__.py").read_text()
    assert "@hookimpl\ndef register_losses(register: Any) -> None:\n    register(" in old
    assert "return functional_loss(" in old and "Loss(" not in old
    assert "register_losses = losses_hook(sensitivity_specificity_loss)" in new and "hookimpl" not in new


def test_a_plugin_written_against_the_old_api_loads_and_equals_the_declarative_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from segloss_registry import Loss, PluginWarning, build_loss
    from segloss_registry.testing import check_loss

    old, new = _both_examples(monkeypatch)
    assert isinstance(new.sensitivity_specificity_loss, Loss) and not isinstance(old.sensitivity_specificity_loss, Loss)
    registry = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # both register 'sensitivity_specificity': ambiguous short name
        assert registry.register_plugin(old, "segloss_example_old").status == "loaded"
        assert registry.register_plugin(new, "segloss_example").status == "loaded"
    a = registry.resolve("segloss_example_old:sensitivity_specificity")
    b = registry.resolve("segloss_example:sensitivity_specificity")
    assert (a.aliases, a.modes, a.dims, a.summary) == (b.aliases, b.modes, b.dims, b.summary)
    assert a.params.model_json_schema() == b.params.model_json_schema()
    check_loss("segloss_example_old:sensitivity_specificity", registry=registry, compile=False)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 7, generator=g)
    ids = torch.randint(0, 3, (2, 6, 7), generator=g)
    ids[0, :2] = -1  # ignored pixels
    xb, tb = torch.randn(2, 1, 9, generator=g), (torch.rand(2, 1, 9, generator=g) < 0.3).float()
    cases = [
        (xb, tb, {"mode": "binary"}, {}),
        (xb, tb, {"mode": "binary"}, {"r": 0.5, "per_image": True}),
        (x, ids, {"mode": "multiclass", "ignore_index": -1}, {"class_weights": [1.0, 2.0, 0.5]}),
        (x, ids.clamp_min(0), {"mode": "multiclass"}, {"include_background": False, "r": 0.2}),
        (x, (torch.rand(2, 3, 6, 7, generator=g) < 0.5).float(), {"mode": "multilabel"}, {}),
    ]
    for logits, target, options, params in cases:
        values = [
            build_loss(f"{plugin}:sensitivity_specificity", registry=registry, compile=False, **options, **params)(
                logits, target)
            for plugin in ("segloss_example_old", "segloss_example")
        ]
        plain_old = old.sensitivity_specificity_loss(logits, target, **options, **params)
        plain_new = new.sensitivity_specificity_loss(logits, target, **options, **params)
        for v in (*values, plain_old):
            torch.testing.assert_close(v, plain_new, rtol=0, atol=0)
    # the old wrapper's errors are the new declaration's
    for bad in ({"r": 2.0}, {"mode": "multiclass", "class_weights": [1.0]}):
        errors = []
        for fn in (old.sensitivity_specificity_loss, new.sensitivity_specificity_loss):
            with pytest.raises(SeglossError) as info:
                fn(x if bad.get("mode") else xb, ids if bad.get("mode") else tb, **bad)
            errors.append(str(info.value))
        assert errors[0] == errors[1]


@pytest.fixture(scope="module")
def site_old_and_new(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The old-API plugin's wheel and the declarative example's, installed into one directory."""
    tmp = tmp_path_factory.mktemp("old_api")
    shutil.copytree(OLD_API, tmp / "old", ignore=SKIP_COPY)
    _pip("wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(tmp / "w"), str(tmp / "old"))
    (old_wheel,) = (tmp / "w").glob("segloss_example_old_api-*.whl")
    site = tmp / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(old_wheel), str(wheels["example"]))
    return site


@pytest.mark.slow
def test_an_installed_old_api_plugin_loads_next_to_the_new_one(site_old_and_new: Path) -> None:
    out = _python(site_old_and_new, """
    import json, warnings, torch
    from segloss_registry import build_loss, list_plugins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = {p.name: (p.status, p.distribution, list(p.losses)) for p in list_plugins()}
    torch.manual_seed(2)
    x = torch.randn(2, 1, 8, 8)
    t = (torch.rand(2, 1, 8, 8) < 0.3).float()
    old = build_loss("segloss_example_old:sensitivity_specificity + dice")(x, t).item()
    new = build_loss("segloss_example:sensitivity_specificity + dice")(x, t).item()
    import segloss_example_old
    plain = segloss_example_old.sensitivity_specificity_loss(x, t).item()
    p = torch.sigmoid(x)
    dice = float(1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    print(json.dumps({"rows": rows, "old": old, "new": new, "plain": plain, "ref": brosch(p, t) + dice,
                      "plain_ref": brosch(p, t)}))
    """)
    assert out["rows"]["segloss_example_old"] == ["loaded", "segloss-example-old-api", ["sensitivity_specificity"]]
    assert out["rows"]["segloss_example"] == ["loaded", "segloss-example-plugin", ["sensitivity_specificity"]]
    assert out["old"] == out["new"]
    assert out["old"] == pytest.approx(out["ref"], rel=1e-5)
    assert out["plain"] == pytest.approx(out["plain_ref"], rel=1e-5)


# -- `segloss plugins` in this process: failed, blocked, table and JSON ----------------------------------
_BROKEN = """
from segloss_registry import hookimpl


@hookimpl
def register_losses(register):
    raise RuntimeError("needs a GPU to register")
"""


def test_plugins_table_shows_a_failed_plugin_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "segloss_tp_broken.py").write_text(_BROKEN)
    info = tmp_path / "segloss_tp_broken-0.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segloss-tp-broken\nVersion: 0.4\n")
    (info / "entry_points.txt").write_text("[segloss_registry]\ntp_broken = segloss_tp_broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SEGLOSS_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("SEGLOSS_DISABLE_PLUGINS", raising=False)
    try:
        with pytest.warns(UserWarning, match="needs a GPU"):
            rows = {r["name"]: r for r in plugin_rows(Registry().plugins())}
    finally:
        sys.modules.pop("segloss_tp_broken", None)
    assert rows["tp_broken"] == {
        "name": "tp_broken", "distribution": "segloss-tp-broken", "version": "0.4", "status": "failed",
        "losses": [], "problems": ["its register_losses hook raised RuntimeError: needs a GPU to register"],
    }
    table = format_table(list(rows.values())).splitlines()
    at = next(i for i, line in enumerate(table) if line.startswith("tp_broken "))
    assert table[at].split() == ["tp_broken", "segloss-tp-broken", "0.4", "failed", "-"]
    assert table[at + 1] == "    ! its register_losses hook raised RuntimeError: needs a GPU to register"


def test_plugins_blocked_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOSS_DISABLE_PLUGINS", "segloss_focal")
    monkeypatch.delenv("SEGLOSS_STRICT_PLUGINS", raising=False)
    rows = {r["name"]: r for r in plugin_rows(Registry().plugins())}
    assert rows["segloss_focal"]["status"] == "blocked" and rows["segloss_focal"]["losses"] == []
    assert rows["segloss_dice"]["status"] == "loaded" and rows["segloss_dice"]["losses"] == ["dice"]


def test_plugins_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    from segloss_registry import __version__

    assert rows["segloss_ce"]["losses"] == ["ce"]
    assert rows["segloss_ce"]["version"] == __version__ and rows["segloss_ce"]["distribution"] == "segloss-registry"


def test_the_tutorial_writes_exactly_the_example() -> None:
    """CONTRIBUTING.md's file blocks, followed literally, are the files that the tests above build."""
    import re

    text = (ROOT / "CONTRIBUTING.md").read_text()
    blocks = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", text, flags=re.S))
    assert set(blocks) == {"pyproject.toml", "src/segloss_example/__init__.py", "tests/test_sensitivity_specificity.py"}
    for rel, body in blocks.items():
        assert body == (EXAMPLE / rel).read_text().rstrip(), f"CONTRIBUTING.md's {rel} differs from the example's"
    assert "pip install torch==2.13.0" in text and "python -m pytest -n 2 -q" in text
