"""Broken plugins never break the others: real plugin modules, real entry-point metadata.

Each test writes plugin modules (from ``tests/plugin_fixtures/``) and a ``*.dist-info``
directory (METADATA + entry_points.txt) into ``tmp_path``, puts it on ``sys.path`` and builds
a fresh ``Registry()``: ``importlib.metadata`` discovers them next to the built-in plugins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from segloss_registry import (
    AmbiguousLossError,
    NoParams,
    PluginError,
    PluginWarning,
    Registry,
    UnknownLossError,
    build_loss,
    hookimpl,
)

FIXTURES = Path(__file__).parent / "plugin_fixtures"
BUILTIN = {"bce", "ce", "dice", "iou", "focal", "active_contour", "boundary"}


def install(root: Path, dist: str, plugins: dict[str, str], version: str = "1.0") -> None:
    """Write a distribution ``dist`` whose entry points map plugin name -> fixture module."""
    for module in plugins.values():
        (root / f"{module}.py").write_text((FIXTURES / f"{module}.py").read_text())
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "".join(f"{name} = {module}\n" for name, module in plugins.items())
    (info / "entry_points.txt").write_text(f"[segloss_registry]\n{eps}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for fake installed distributions; fixture modules are unloaded after."""
    monkeypatch.delenv("SEGLOSS_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("SEGLOSS_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("SEGLOSS_FX_MARKER", str(tmp_path / "marker_imported"))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("segloss_fx_")]:
        del sys.modules[name]


def load(reg: Registry) -> list[warnings.WarningMessage]:
    """Load ``reg`` and return the PluginWarnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.plugins()
    # only this test's plugins: a problem of another installed plugin is not this test's business
    return [w for w in caught if issubclass(w.category, PluginWarning) and ("fx_" in str(w.message)
                                                                            or "no_such_plugin" in str(w.message))]


def by_name(reg: Registry) -> dict[str, object]:
    return {p.name: p for p in reg.plugins()}


def assert_others_load(reg: Registry) -> None:
    names = {loss.name for loss in reg.all_losses()}
    assert names >= BUILTIN
    x, t = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    assert torch.isfinite(build_loss("bce+dice", registry=reg)(x, t))


def test_import_failure_is_reported_once_and_the_rest_loads(site: Path) -> None:
    install(site, "segloss-fx-broken", {"fx_broken": "segloss_fx_broken_import"}, "0.3")
    install(site, "segloss-fx-good", {"fx_good": "segloss_fx_good"})
    reg = Registry()
    caught = load(reg)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "fx_broken" in text and "segloss-fx-broken 0.3" in text
    assert "ModuleNotFoundError" in text and "segloss_fx_dependency_that_is_not_installed" in text
    info = by_name(reg)["fx_broken"]
    assert info.status == "failed" and info.losses == [] and len(info.problems) == 1
    assert info.distribution == "segloss-fx-broken" and info.version == "0.3"
    # the working plugin loads, and its loss computes mean |sigmoid(x) - t|
    good = by_name(reg)["fx_good"]
    assert good.status == "loaded" and good.losses == ["fx_good"] and good.problems == []
    x, t = torch.randn(2, 1, 5, 5), (torch.rand(2, 1, 5, 5) > 0.5).float()
    expected = (torch.sigmoid(x) - t).abs().mean()
    torch.testing.assert_close(build_loss("fx_good", registry=reg)(x, t), expected)
    assert_others_load(reg)
    # using the registry again reports nothing new
    assert load(reg) == [] and len(by_name(reg)["fx_broken"].problems) == 1
    with pytest.raises(UnknownLossError, match=r"failed to load \(see `segloss plugins`\): fx_broken"):
        reg.resolve("fx_missing")


def test_plugin_that_exits_on_import_does_not_exit_the_process(site: Path) -> None:
    install(site, "segloss-fx-exit", {"fx_exit": "segloss_fx_exit"})
    reg = Registry()
    caught = load(reg)
    assert len(caught) == 1 and "SystemExit: segloss_fx_exit refuses to load" in str(caught[0].message)
    assert by_name(reg)["fx_exit"].status == "failed"
    assert_others_load(reg)


def test_hook_that_raises(site: Path) -> None:
    install(site, "segloss-fx-hook", {"fx_hook": "segloss_fx_hook_raises"})
    reg = Registry()
    caught = load(reg)
    assert len(caught) == 1
    assert "register_losses hook raised RuntimeError: fx_hook_raises: boom" in str(caught[0].message)
    info = by_name(reg)["fx_hook"]
    # a half-run hook registers nothing: the loss it added before raising is dropped
    assert info.status == "failed" and info.losses == []
    assert "fx_half_registered" not in {loss.name for loss in reg.all_losses()}
    assert_others_load(reg)


def test_invalid_registrations_each_reported_once(site: Path) -> None:
    install(site, "segloss-fx-invalid", {"fx_invalid": "segloss_fx_invalid"})
    reg = Registry()
    caught = load(reg)
    info = by_name(reg)["fx_invalid"]
    assert info.status == "loaded" and info.losses == ["fx_valid_too"]
    expected = {
        "'fx_no_params'": "params must be a subclass of segloss_registry.LossParams",
        "'Bad-Name'": "a loss name must be lower-case letters, digits and '_'",
        "'fx_not_callable'": "fn must be callable fn(inputs, params) or a spec string (got int)",
        "'fx_one_arg'": "fn must accept two arguments fn(inputs, params)",
        "'fx_params_not_model'": "params must be a subclass of segloss_registry.LossParams",
        "'fx_bad_recipe'": "its recipe does not parse: cannot parse loss spec",
        "'fx_bad_mode'": "modes must be a non-empty subset of ('binary', 'multiclass', 'multilabel')",
    }
    assert len(info.problems) == len(expected) == len(caught)
    for name, why in expected.items():
        hits = [p for p in info.problems if p.startswith(f"loss {name} was not registered")]
        assert len(hits) == 1 and why in hits[0], (name, info.problems)
        assert sum(name in str(w.message) for w in caught) == 1
    assert {loss.name for loss in reg.all_losses() if loss.plugin == "fx_invalid"} == {"fx_valid_too"}
    assert_others_load(reg)


def test_module_without_hook(site: Path) -> None:
    install(site, "segloss-fx-nohook", {"fx_nohook": "segloss_fx_no_hook"})
    reg = Registry()
    caught = load(reg)
    assert len(caught) == 1 and "has no register_losses hook" in str(caught[0].message)
    assert by_name(reg)["fx_nohook"].status == "failed"
    assert_others_load(reg)


def test_two_plugins_one_name_is_ambiguous_never_overwritten(site: Path) -> None:
    install(site, "segloss-fx-a", {"fx_dup_a": "segloss_fx_dup_a"})
    install(site, "segloss-fx-b", {"fx_dup_b": "segloss_fx_dup_b"})
    reg = Registry()
    caught = load(reg)
    # one problem, one warning naming both plugins and both qualified names
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "fx_dup_a" in text and "fx_dup_b" in text and "'fx_dup_a:fx_same' or 'fx_dup_b:fx_same'" in text
    for name in ("fx_dup_a", "fx_dup_b"):
        info = by_name(reg)[name]
        assert info.status == "loaded" and info.losses == ["fx_same"] and len(info.problems) == 1
    with pytest.raises(AmbiguousLossError) as err:
        build_loss("fx_same", registry=reg)
    msg = str(err.value)
    assert "registered by 2 plugins (fx_dup_a, fx_dup_b)" in msg
    assert "write 'fx_dup_a:fx_same' or 'fx_dup_b:fx_same'" in msg
    # the qualified names pick each plugin's own formula
    x, t = torch.randn(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    p = torch.sigmoid(x)
    torch.testing.assert_close(build_loss("fx_dup_a:fx_same", registry=reg)(x, t), p.mean())
    torch.testing.assert_close(build_loss("fx_dup_b:fx_same", registry=reg)(x, t), (1 - p).mean())
    assert_others_load(reg)


def test_plugin_shadowing_a_builtin_name_is_ambiguous(site: Path) -> None:
    class Shadow:
        @hookimpl
        def register_losses(self, register):
            register("dice", lambda inp, params: inp.prob.mean(), params=NoParams)

    reg = Registry()
    load(reg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with reg.plugin(Shadow(), "shadow"):
            with pytest.raises(AmbiguousLossError, match=r"write 'segloss_dice:dice' or 'shadow:dice'"):
                reg.resolve("dice")
            assert reg.resolve("segloss_dice:dice").plugin == "segloss_dice"
    assert sum(issubclass(w.category, PluginWarning) and "shadow" in str(w.message) for w in caught) == 1


def test_second_entry_point_with_the_same_name_is_skipped(site: Path) -> None:
    install(site, "segloss-fx-one", {"fx_twin": "segloss_fx_dup_a"})
    install(site, "segloss-fx-two", {"fx_twin": "segloss_fx_dup_b"})
    reg = Registry()
    caught = load(reg)
    assert len(caught) == 1 and "a second entry point named 'fx_twin'" in str(caught[0].message)
    info = by_name(reg)["fx_twin"]
    assert info.status == "loaded" and len(info.problems) == 1
    assert [loss.plugin for loss in reg.all_losses() if loss.name == "fx_same"] == ["fx_twin"]


def test_all_problems_together_one_warning_each(site: Path) -> None:
    install(site, "segloss-fx-all", {
        "fx_broken": "segloss_fx_broken_import",
        "fx_hook": "segloss_fx_hook_raises",
        "fx_invalid": "segloss_fx_invalid",
        "fx_dup_a": "segloss_fx_dup_a",
        "fx_dup_b": "segloss_fx_dup_b",
        "fx_good": "segloss_fx_good",
    })
    reg = Registry()
    caught = load(reg)
    problems = [m for p in reg.plugins() if p.name.startswith("fx_") for m in p.problems]
    texts = [str(w.message) for w in caught]
    assert len(texts) == len(set(texts)) == 1 + 1 + 7 + 1  # import, hook, 7 invalid, 1 ambiguity
    assert len(problems) == 1 + 1 + 7 + 2  # the ambiguity is a problem of both plugins
    assert {"fx_good", "fx_valid_too", "fx_same"} <= {loss.name for loss in reg.all_losses()}
    assert_others_load(reg)
    assert load(reg) == []


# -- SEGLOSS_STRICT_PLUGINS ---------------------------------------------------------------------
def test_strict_mode_turns_problems_into_plugin_error(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "segloss-fx-all", {
        "fx_broken": "segloss_fx_broken_import",
        "fx_hook": "segloss_fx_hook_raises",
        "fx_dup_a": "segloss_fx_dup_a",
        "fx_dup_b": "segloss_fx_dup_b",
    })
    monkeypatch.setenv("SEGLOSS_STRICT_PLUGINS", "1")
    reg = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # strict: errors, not warnings
        with pytest.raises(PluginError) as err:
            reg.all_losses()
    msg = str(err.value)
    assert "SEGLOSS_STRICT_PLUGINS is set" in msg and "SEGLOSS_DISABLE_PLUGINS" in msg
    assert "fx_broken" in msg and "ModuleNotFoundError" in msg
    assert "fx_hook" in msg and "RuntimeError" in msg
    assert "'fx_dup_a:fx_same' or 'fx_dup_b:fx_same'" in msg
    # every later use fails the same way; nothing runs on a half-loaded registry
    with pytest.raises(PluginError):
        build_loss("dice", registry=reg)
    with pytest.raises(PluginError):
        reg.resolve("dice")
    # the listing behind `segloss plugins` still shows what went wrong
    status = {p.name: p.status for p in reg.plugins()}
    assert status["fx_broken"] == "failed" and status["fx_hook"] == "failed" and status["segloss_dice"] == "loaded"


@pytest.mark.parametrize("module", ["segloss_fx_invalid", "segloss_fx_no_hook"])
def test_strict_mode_each_kind(site: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    install(site, "segloss-fx-x", {"fx_x": module})
    monkeypatch.setenv("SEGLOSS_STRICT_PLUGINS", "true")
    with pytest.raises(PluginError, match="fx_x"):
        Registry().resolve("dice")


def test_strict_mode_with_healthy_plugins_loads(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "segloss-fx-good", {"fx_good": "segloss_fx_good"})
    monkeypatch.setenv("SEGLOSS_STRICT_PLUGINS", "1")
    reg = Registry()
    assert load(reg) == []
    assert "fx_good" in {loss.name for loss in reg.all_losses()}
    assert_others_load(reg)


def test_strict_mode_register_plugin_with_problems(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Half:
        @hookimpl
        def register_losses(self, register):
            register("fx_ok", lambda inp, params: inp.prob.mean(), params=NoParams)
            register("fx_bad", 3, params=NoParams)

    monkeypatch.setenv("SEGLOSS_STRICT_PLUGINS", "1")
    reg = Registry()
    with pytest.raises(PluginError, match="fx_bad"):
        reg.register_plugin(Half(), "half")
    assert "half" not in {p.name for p in reg.plugins()}


# -- SEGLOSS_DISABLE_PLUGINS ----------------------------------------------------------------------
def test_disabled_plugins_are_never_imported(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "segloss-fx-marker", {"fx_marker": "segloss_fx_marker"})
    install(site, "segloss-fx-broken", {"fx_broken": "segloss_fx_broken_import"})
    install(site, "segloss-fx-good", {"fx_good": "segloss_fx_good"})
    monkeypatch.setenv("SEGLOSS_DISABLE_PLUGINS", " fx_marker , fx_broken")
    reg = Registry()
    assert load(reg) == []
    plugins = by_name(reg)
    assert plugins["fx_marker"].status == "blocked" and plugins["fx_broken"].status == "blocked"
    assert plugins["fx_marker"].problems == [] and plugins["fx_broken"].problems == []
    assert not (site / "marker_imported").exists() and "segloss_fx_marker" not in sys.modules
    assert plugins["fx_good"].status == "loaded"
    with pytest.raises(UnknownLossError, match="blocked by SEGLOSS_DISABLE_PLUGINS: fx_broken, fx_marker"):
        reg.resolve("fx_marker")
    assert_others_load(reg)


def test_enabled_marker_plugin_is_imported(site: Path) -> None:
    # the control for the test above: without the variable the marker plugin is imported
    install(site, "segloss-fx-marker", {"fx_marker": "segloss_fx_marker"})
    reg = Registry()
    assert load(reg) == []
    assert (site / "marker_imported").exists() and by_name(reg)["fx_marker"].status == "loaded"


def test_disable_by_distribution_name_and_builtin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "segloss-fx-both", {"fx_dup_a": "segloss_fx_dup_a", "fx_dup_b": "segloss_fx_dup_b"})
    monkeypatch.setenv("SEGLOSS_DISABLE_PLUGINS", "segloss-fx-both,segloss_focal")
    reg = Registry()
    assert load(reg) == []  # no ambiguity: both duplicates are blocked
    statuses = {p.name: p.status for p in reg.plugins()}
    assert statuses["fx_dup_a"] == statuses["fx_dup_b"] == statuses["segloss_focal"] == "blocked"
    names = {loss.name for loss in reg.all_losses()}
    assert "focal" not in names and "fx_same" not in names and "dice" in names


def test_disable_unknown_name_warns(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOSS_DISABLE_PLUGINS", "no_such_plugin")
    caught = load(Registry())
    assert len(caught) == 1 and "no_such_plugin, which match no installed plugin" in str(caught[0].message)


# -- the global registry, as `segloss plugins` sees it, in a fresh interpreter --------------------
_SCRIPT = """
import json, warnings
warnings.simplefilter("default")
import segloss_registry as s
s.list_losses(); s.list_losses("*dice*"); s.build_loss("dice")
print(json.dumps([p.__dict__ for p in s.list_plugins()]))
"""


def _run(site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **env}
    full.pop("SEGLOSS_STRICT_PLUGINS", None) if "SEGLOSS_STRICT_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=full, timeout=120)


def test_global_registry_in_subprocess(site: Path) -> None:
    install(site, "segloss-fx-broken", {"fx_broken": "segloss_fx_broken_import"})
    install(site, "segloss-fx-good", {"fx_good": "segloss_fx_good"})
    out = _run(site)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["fx_broken"]["status"] == "failed" and len(plugins["fx_broken"]["problems"]) == 1
    assert plugins["fx_good"]["status"] == "loaded" and plugins["segloss_dice"]["status"] == "loaded"
    assert out.stderr.count("PluginWarning") == 1 and "fx_broken" in out.stderr

    strict = _run(site, SEGLOSS_STRICT_PLUGINS="1")
    assert strict.returncode != 0
    assert "segloss_registry._errors.PluginError" in strict.stderr and "fx_broken" in strict.stderr

    # `segloss plugins` shows the problem once, and --check fails on it, also in strict mode
    for env in ({}, {"SEGLOSS_STRICT_PLUGINS": "1"}):
        cli = subprocess.run([sys.executable, "-m", "segloss_registry.cli", "plugins", "--check"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(site), **env})
        assert cli.returncode == 1, cli.stderr
        assert cli.stdout.count("segloss_fx_dependency_that_is_not_installed") == 1
        assert "fx_good" in cli.stdout

    blocked = _run(site, SEGLOSS_DISABLE_PLUGINS="fx_broken")
    assert blocked.returncode == 0 and "PluginWarning" not in blocked.stderr
    assert {p["name"]: p for p in json.loads(blocked.stdout)}["fx_broken"]["status"] == "blocked"
