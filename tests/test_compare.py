"""``segloss compare``: the same model trained with each spec; a table and one picture, at a tiny size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from segloss_registry import SeglossError, UnknownLossError
from segloss_registry.cli import main
from segloss_registry.demo.compare import CompareConfig, run_compare
from segloss_registry.demo.data import make_splits

HAS_MPL = importlib.util.find_spec("matplotlib") is not None

# 32x32 thin-structure images, a 2-level U-Net of width 4, 6 steps: a second or two per spec
TINY = dict(task="thin", size=32, width=4, depth=2, steps=6, batch_size=4, n_train=16, n_val=4, seed=0,
            threads=1, loss_timing_steps=2, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, list[str]]:
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("compare")
    lines: list[str] = []
    try:
        result = run_compare(CompareConfig(specs=("bce", "bce+dice", "bce"), out=str(out), **TINY), log=lines.append)
    finally:
        torch.set_num_threads(threads)
    return result, out, lines


def _dice_and_iou(pred: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Foreground Dice 2|P&T|/(|P|+|T|) and IoU |P&T|/|P|T| over all pixels, written out here."""
    inter = (pred & truth).sum().item()
    total = pred.sum().item() + truth.sum().item()
    union = (pred | truth).sum().item()
    return (2 * inter / total if total else 1.0), (inter / union if union else 1.0)


def test_the_table_holds_each_spec_with_metrics_from_its_own_model(tiny_run: tuple[Any, Path, list[str]]) -> None:
    result, _, _ = tiny_run
    assert [r.normalised for r in result.rows] == ["bce", "bce + dice", "bce"]
    # the held-out split made again here, and each trained model's predictions scored independently
    _, val = make_splits(seed=0, n_train=TINY["n_train"], n_val=TINY["n_val"], task="thin", size=TINY["size"])
    truth = val.targets[:, 0] > 0.5
    for row in result.rows:
        with torch.no_grad():
            pred = row.model.eval()(val.images)[:, 0] > 0
        dice, iou = _dice_and_iou(pred, truth)
        assert row.dice == pytest.approx(dice, abs=1e-9) and row.iou == pytest.approx(iou, abs=1e-9)
        assert 0.0 <= row.boundary_f1 <= 1.0 and row.step_ms > 0 and row.loss_ms > 0
    # the same model, batches and order for every spec: the same spec twice gives the same run
    a, b = result.rows[0], result.rows[2]
    assert (a.dice, a.boundary_f1, a.final_loss) == (b.dice, b.boundary_f1, b.final_loss)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in
                   zip(a.model.state_dict().values(), result.rows[1].model.state_dict().values()))


def test_it_writes_the_table_the_json_and_one_picture(tiny_run: tuple[Any, Path, list[str]]) -> None:
    result, out, lines = tiny_run
    table = (out / "compare.md").read_text().splitlines()
    assert table[0] == ("| spec | held-out Dice | IoU | boundary F1 (1 px) | ms / training step | ms / loss fwd+bwd "
                        "| final loss |")
    assert len(table) == 2 + 3 and table[3].startswith("| `bce + dice` | ")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    row = result.rows[0]
    assert cells[1:4] == [f"{row.dice:.4f}", f"{row.iou:.4f}", f"{row.boundary_f1:.4f}"]
    summary = json.loads((out / "compare.json").read_text())
    assert [r["normalised"] for r in summary["rows"]] == ["bce", "bce + dice", "bce"]
    assert summary["rows"][1]["dice"] == result.rows[1].dice and summary["task"] == "thin"
    assert summary["settings"]["steps"] == TINY["steps"] and "machine" in summary
    assert 0.0 < summary["heldout_foreground_fraction"] < 0.15
    assert any(line.startswith("spec ") and "boundary F1" in line for line in lines)  # the table is printed
    if HAS_MPL:
        data = (out / "compare.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 400_000
        assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png"]
    else:
        assert any('pip install "segloss-registry[plot]"' in line for line in lines)


def test_cli_compare_two_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        code = main(["compare", "bce", "dice", "--size", "32", "--steps", "3", "--n-train", "8", "--n-val", "2",
                     "--batch-size", "4", "--width", "4", "--threads", "1", "--no-progress", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    out = capsys.readouterr().out
    assert "segloss compare: 2 losses on the thin task, 3 steps" in out
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["normalised"] for r in rows] == ["bce", "dice"]
    assert (tmp_path / "compare.md").is_file()


def test_bad_specs_fail_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownLossError, match="dcie"):
        run_compare(CompareConfig(specs=("bce", "dcie"), out=str(tmp_path / "a"), **TINY), log=lambda _: None)
    assert not (tmp_path / "a").exists()
    with pytest.raises(SeglossError, match="give one or more specs"):
        run_compare(CompareConfig(specs=(), out=None))
    with pytest.raises(SeglossError, match="task must be one of binary, multiclass, thin"):
        run_compare(CompareConfig(task="thick", out=None))
    assert main(["compare", "ce", "--out", str(tmp_path / "b"), "--threads", "1"]) == 1  # ce is multiclass only
    assert "ce" in capsys.readouterr().err and not (tmp_path / "b").exists()
