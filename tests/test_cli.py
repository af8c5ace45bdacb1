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
    assert "gamma: float = 2.0  [minimum 0]" in out and "alpha: float | None = 0.25" in out
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
    proc = subprocess.run([sys.executable, "-m", "segloss_registry.cli", "check", "dcie"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "UnknownLossError: unknown loss 'dcie' (did you mean 'dice'?)" in proc.stderr
