"""``segloss new-plugin``: the skeleton it writes installs, registers, and passes its own tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from segloss_registry import SeglossError, __version__
from segloss_registry.cli import main
from segloss_registry.cli.new_plugin import names_for, write_plugin

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = ("__LOSS__", "__PACKAGE__", "__PLUGIN__", "__DIST__", "__PARAMS__", "__CORE_VERSION__")


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLOSS_")}
    env["PYTHONPATH"] = str(site)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_writes_the_skeleton_with_every_name_filled_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "brier_demo", str(tmp_path / "pkg")]) == 0
    out = capsys.readouterr().out
    assert "wrote segloss-brier-demo (plugin 'segloss_brier_demo', loss 'brier_demo')" in out
    files = sorted(p.relative_to(tmp_path / "pkg").as_posix() for p in (tmp_path / "pkg").rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/segloss_brier_demo/__init__.py", "tests/test_brier_demo.py"]
    for f in (tmp_path / "pkg").rglob("*"):
        if f.is_file():
            text = f.read_text()
            assert not [p for p in PLACEHOLDERS if p in text], f
            if f.suffix == ".py":
                compile(text, str(f), "exec")
    meta = tomllib.loads((tmp_path / "pkg" / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "segloss-brier-demo"
    assert meta["project"]["entry-points"]["segloss_registry"] == {"segloss_brier_demo": "segloss_brier_demo"}
    assert meta["project"]["dependencies"] == [f"segloss-registry>={__version__}"]
    code = (tmp_path / "pkg" / "src" / "segloss_brier_demo" / "__init__.py").read_text()
    assert "class BrierDemoParams(LossParams)" in code and "def brier_demo(inp: Inputs" in code
    assert "brier_demo_loss = Loss(" in code and "register_losses = losses_hook(brier_demo_loss)" in code


def test_default_directory_and_name_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root, _ = write_plugin("edge_loss")
    assert root == tmp_path / "segloss-edge-loss"
    assert (root / "src" / "segloss_edge_loss" / "__init__.py").exists()
    assert names_for("edge2")["__PARAMS__"] == "Edge2Params"
    for bad in ("9lives", "my loss", "", "a.b", "trailing_"):
        with pytest.raises(SeglossError, match="is not a loss name"):
            names_for(bad)


@pytest.mark.parametrize(("given", "suggested"), [
    ("Bad-Name", "bad_name"), ("Segloss-Edge-Loss", "edge_loss"), ("segloss_edge", "edge"), ("my loss", "my_loss"),
])
def test_a_name_that_is_not_valid_is_refused_never_renamed(
    given: str, suggested: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SeglossError, match=f"did you mean '{suggested}'") as info:
        names_for(given)
    assert f"{given!r} is not a loss name" in str(info.value)
    assert main(["new-plugin", given, str(tmp_path / "pkg")]) == 1
    assert f"did you mean '{suggested}'?" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()  # nothing written under any name


@pytest.mark.parametrize(("name", "why"), [
    ("dice", "'dice' is a loss already registered by segloss_dice"),
    ("dice", "the module 'segloss_dice' is already importable"),
    ("jaccard", "'jaccard' is a loss already registered by segloss_iou"),  # an alias
    ("iou", "'segloss_iou' is already a segloss plugin"),
])
def test_a_name_that_collides_with_an_installed_loss_or_module_is_refused(
    name: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-plugin", name, str(tmp_path / "pkg")]) == 1
    err = capsys.readouterr().err
    assert f"SeglossError: new-plugin: cannot use the name '{name}': " in err and why in err
    assert f"e.g. '{name}_v2'" in err
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(SeglossError, match="cannot use the name"):
        write_plugin(name, tmp_path / "pkg2")


def test_an_importable_module_of_the_package_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "segloss_zz_taken.py").write_text("VALUE = 1\n")  # no loss, no plugin: only the module name
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SeglossError) as info:
        write_plugin("zz_taken", tmp_path / "pkg")
    text = str(info.value)
    assert "the module 'segloss_zz_taken' is already importable" in text and "segloss_zz_taken.py" in text
    assert "would shadow" in text
    assert write_plugin("zz_free", tmp_path / "pkg3")[0] == tmp_path / "pkg3"


def test_the_skeleton_says_its_formula_is_a_placeholder(tmp_path: Path) -> None:
    root, _ = write_plugin("weighted_bce", tmp_path / "pkg")
    readme = (root / "README.md").read_text()
    section = readme.split("## The loss", 1)[1].split("## Develop", 1)[0]
    assert "**Placeholder formula.**" in section and "it is *not* a weighted_bce loss yet" in section
    assert section.index("Placeholder") < section.index("|p - t|^q")  # the warning comes before the formula
    code = (root / "src" / "segloss_weighted_bce" / "__init__.py").read_text()
    assert "PLACEHOLDER" in code.split("\n", 1)[0]
    assert 'summary="PLACEHOLDER formula of a new plugin' in code


def test_refuses_a_non_empty_directory_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new-plugin", "edge", str(tmp_path)]) == 1
    assert "is not empty; pick another DIR or pass --force" in capsys.readouterr().err
    assert main(["new-plugin", "edge", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "pyproject.toml").exists()
    assert main(["new-plugin", "no good", str(tmp_path / "x")]) == 1
    assert "SeglossError: new-plugin: 'no good' is not a loss name" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.compile
def test_generated_plugin_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    assert main(["new-plugin", "brier_demo", str(tmp_path / "pkg")]) == 0
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-index",
           "--no-build-isolation", "--target", str(site), str(tmp_path / "pkg")]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
                          cwd=tmp_path / "pkg", capture_output=True, text=True, timeout=300, env=_env(site))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary
    script = Path(sys.executable).parent / "segloss"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "segloss_registry.cli"]
    proc = subprocess.run([*cmd, "plugins", "--json"], capture_output=True, text=True, timeout=120, env=_env(site))
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["segloss_brier_demo"] == {
        "name": "segloss_brier_demo", "distribution": "segloss-brier-demo", "version": "0.1.0",
        "status": "loaded", "losses": ["brier_demo"], "problems": [],
    }


@pytest.mark.slow
def test_the_project_wheel_ships_the_template(tmp_path: Path) -> None:
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("segloss_registry", "plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("segloss-registry\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                           "--no-index", "--no-build-isolation", "-w", str(tmp_path / "w"), str(src)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "w").glob("segloss_registry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    template = ROOT / "segloss_registry" / "templates" / "plugin"
    expected = {"segloss_registry/templates/plugin/" + p.relative_to(template).as_posix()
                for p in template.rglob("*.tmpl")}
    assert len(expected) == 4 and expected <= names
