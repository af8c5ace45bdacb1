"""The core commands: segloss list / describe / check."""

from __future__ import annotations

import json
import subprocess
import sys

from segloss_registry.cli import main


def test_list_shows_name_aliases_plugin_version_summary(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("iou "))
    assert "jaccard" in line and "segloss_iou" in line and "0.1.0" in line and "1 - (I + s) / (U + s)" in line


def test_list_pattern_and_json(capsys):
    assert main(["list", "dice*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "dice" and rows[0]["plugin"] == "segloss_dice"
    assert main(["list", "zzz*"]) == 1


def test_describe_and_schema(capsys):
    assert main(["describe", "focal"]) == 0
    out = capsys.readouterr().out
    assert "gamma: float = 2.0  [minimum 0, maximum 100]" in out
    alpha = next(line for line in out.splitlines() if line.strip().startswith("alpha:"))
    assert alpha.strip().startswith("alpha: float") and "None" in alpha and "= 0.25" in alpha
    assert main(["describe", "boundary", "--json"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) == {"theta0", "theta"} and schema["additionalProperties"] is False


def test_check_prints_the_normalised_config_or_the_error(capsys):
    assert main(["check", "0.5*focal(gamma=2) + dice"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "0.5*focal + dice"
    cfg = json.loads(out.split("\n", 1)[1])
    assert [t["loss"] for t in cfg["terms"]] == ["focal", "dice"] and cfg["terms"][0]["weight"] == 0.5
    assert main(["check", "focal(gamma=-1)"]) == 1
    assert capsys.readouterr().err.strip() == "LossConfigError: focal: gamma must be >= 0 (got -1)"


def test_console_script_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "segloss_registry.cli", "check", "dcie"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "UnknownLossError: unknown loss 'dcie' (did you mean 'dice'?)" in proc.stderr


# -- issue 12: --version, broken pipes -----------------------------------------------------------
def test_version_prints_the_package_version(capsys):
    import pytest

    from segloss_registry import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"segloss-registry {__version__} (torch ") and "Python " in out


def test_a_closed_pipe_ends_quietly_without_a_traceback():
    # the reader is gone before the command writes a byte (`segloss plugins --json | head` once head exits)
    proc = subprocess.Popen([sys.executable, "-m", "segloss_registry.cli", "plugins", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141  # as a shell reports a process ended by SIGPIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


# -- issue 17: `segloss plugins --check` prints the conformance kit's report -----------------------
def _case_count(name: str) -> int:
    """Cases of the kit without the compiled check, counted from the module docstring's rules: builds,
    unknown_param and schema once; finite per mode and dimensionality; ignore_index and half per mode."""
    from segloss_registry import describe_loss

    d = describe_loss(name)
    return 3 + len(d["modes"]) * len(d["dims"]) + 2 * len(d["modes"])


def test_plugins_check_runs_the_kit_and_prints_its_report(capsys):
    from segloss_registry.testing import check_loss

    assert main(["plugins", "--check", "--plugin", "segloss_bce", "--no-compile"]) == 0
    out = capsys.readouterr().out
    n = _case_count("bce")
    assert f"segloss_bce:bce: {n} of {n} conformance checks passed in " in out
    assert "not run: compile=False" in out
    # one thing: the lines printed are the report that check_loss returns (timings aside)
    report = check_loss("segloss_bce:bce", compile=False)
    assert report.passed and len(report.results) == n
    for line in report.format().splitlines()[1:]:
        assert line in out.splitlines(), line


def test_plugins_check_fails_for_a_third_party_loss_that_breaks_the_contract(capsys):
    from segloss_registry import NoParams, hookimpl
    from segloss_registry.testing import registered_plugin

    class Leaky:
        @hookimpl
        def register_losses(self, register):
            def unmasked(inp, params):
                return ((inp.prob - inp.target) ** 2).mean()  # ignored pixels are averaged in
            register("cli_leaky", unmasked, params=NoParams, modes=("binary",), dims=(2,), summary="test")

    with registered_plugin(Leaky(), "cli_leaky_plugin"):
        n = _case_count("cli_leaky")  # 6: builds, unknown_param, schema, finite, ignore_index, half
        code = main(["plugins", "--check", "--no-compile"])  # in-code plugins are not built-in: checked by default
    out = capsys.readouterr().out
    assert code == 1 and n == 6
    assert f"cli_leaky_plugin:cli_leaky: 1 of {n} conformance checks FAILED" in out
    assert "FAIL ignore_index  binary 2D" in out and "changing the logits at ignored pixels changed the loss" in out
    assert "  ok   finite        binary 2D" in out
    assert "segloss_bce:bce" not in out  # built-in plugins only with --all or --plugin


def test_plugins_check_names_an_unknown_plugin(capsys):
    assert main(["plugins", "--check", "--plugin", "segloss_dcie"]) == 1
    assert "no plugin named 'segloss_dcie' (did you mean 'segloss_dice'?)" in capsys.readouterr().err


# -- issue 17: no profiler noise in the output ------------------------------------------------------
def test_profile_output_has_no_usdt_lines(tmp_path, capfd, monkeypatch):
    argv = ["profile", "bce+dice", "--shape", "2x1x8x8", "--steps", "1", "--variant", "eager", "--out", str(tmp_path)]
    # the filter off: torch prints the lines (the test means something)
    monkeypatch.setenv("SEGLOSS_PROFILER_NOISE", "1")
    assert main(argv) == 0
    noisy = capfd.readouterr()
    assert "profiler_start" in noisy.err and "profiler_stop" in noisy.err
    monkeypatch.delenv("SEGLOSS_PROFILER_NOISE")
    assert main(argv) == 0
    quiet = capfd.readouterr()
    assert "USDT" not in quiet.err + quiet.out and "profiler_start" not in quiet.err
    assert "[eager] bce + dice" in quiet.out and "open it with:" in quiet.out


def test_the_stderr_filter_drops_only_the_profiler_lines():
    from segloss_registry.cli._quiet import StreamFilter

    text = (b"epoch 1\nUSDT:2026-12-01 22:40:48 5021:5021 SyncActivityProfilerHandler.cpp:52] profiler_start\n"
            b"train:  50%|#####     | 5/10\rtrain: 100%|##########| 10/10\n"
            b"[W1201 22:48:39.98 CPUAllocator.cpp:245] Memory block of unknown size was allocated before the "
            b"profiling started, profiler results will not include the deallocation event\n"
            b"[W1201 other.cpp:1] a real warning\nUSDT: something else\nERROR: kept\n"
            b"USDT:2026-12-01 22:40:49 5021:5021 SyncActivityProfilerHandler.cpp:59] profiler_stop\nend")
    expected = (b"epoch 1\ntrain:  50%|#####     | 5/10\rtrain: 100%|##########| 10/10\n"
                b"[W1201 other.cpp:1] a real warning\nUSDT: something else\nERROR: kept\nend")
    for size in (1, 3, 7, len(text)):  # however the bytes arrive
        f = StreamFilter()
        out = b"".join(f.feed(text[i:i + size]) for i in range(0, len(text), size)) + f.close()
        assert out == expected, size
    f = StreamFilter()
    assert f.feed(b"progress 10%\r") == b"progress 10%\r"  # a progress bar's update passes at once
