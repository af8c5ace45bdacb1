"""``segloss profile`` writes traces that TensorBoard's profiler plugin parses, with the labels."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from segloss_registry import SeglossError, build_loss
from segloss_registry.cli import main
from segloss_registry.profiling import profile_steps
from segloss_registry.scenarios import load_scenario


def _names(trace: Path) -> list[str]:
    """The event names of a Chrome trace, read with json (independent of the profiler)."""
    return [e.get("name", "") for e in json.loads(trace.read_text())["traceEvents"]]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One ``segloss profile`` run (eager and compiled workers) shared by the tests below."""
    out = tmp_path_factory.mktemp("traces")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["profile", "bce+dice", "--shape", "2x1x32x32", "--steps", "2", "--out", str(out), "--name", "run"])
    assert rc == 0
    return out, buf.getvalue()


def test_profile_writes_one_trace_per_variant_with_labels(profiled: tuple[Path, str]) -> None:
    out, text = profiled
    eager = sorted((out / "run").glob("eager.*.pt.trace.json"))
    compiled = sorted((out / "run").glob("compiled.*.pt.trace.json"))
    assert len(eager) == 1 and len(compiled) == 1
    names = _names(eager[0])
    # the composite's eager label, one label per term, one per step (2 active steps)
    assert names.count("segloss/eager[bce + dice]") == 2
    assert names.count("segloss/bce") == 2 and names.count("segloss/dice") == 2
    assert names.count("segloss/step") == 2
    cnames = _names(compiled[0])
    assert cnames.count("segloss/compiled[bce + dice]") == 2
    assert "segloss/bce" not in cnames  # the compiled region is one graph, labelled with the spec
    # the printed summary: top operators, peak memory, how to open the trace
    assert "self ms" in text and "peak memory in a step" in text
    assert f"tensorboard --logdir {out}" in text and "perfetto" in text.lower()


def test_torch_tb_profiler_parses_the_traces(profiled: tuple[Path, str]) -> None:
    pytest.importorskip("torch_tb_profiler")
    from torch_tb_profiler import io as tb_io
    from torch_tb_profiler.profiler.loader import RunLoader

    out, _ = profiled
    cache = tb_io.Cache(tempfile.mkdtemp())
    run = RunLoader("run", str(out / "run"), cache).load()
    # the loader logs and swallows parse errors, so count what it parsed
    assert sorted(run.workers) == ["compiled", "eager"]
    profiles = list(run.get_profiles())
    assert len(profiles) == 2
    for p in profiles:
        assert {"overall", "operator", "trace"} <= {v.name for v in p.views}
        ops = {row["name"]: row for row in p.operation_table_by_name["data"]}
        assert ops, p.worker
    eager = next(p for p in profiles if p.worker == "eager")
    ops = {row["name"]: row for row in eager.operation_table_by_name["data"]}
    assert ops["aten::mul"]["calls"] >= 2  # ops from the loss, 2 active steps


def test_profile_steps_summary_counts_calls_and_peak_memory(tmp_path: Path) -> None:
    """The function other tools call: counts and memory checked against the inputs' sizes."""
    x = torch.randn(4, 1, 64, 64, requires_grad=True)
    t = (torch.rand(4, 1, 64, 64) > 0.5).float()
    crit = build_loss("bce+dice", compile=False)

    def step() -> None:
        x.grad = None
        crit(x, t).backward()

    summary = profile_steps(step, tmp_path / "r", steps=3, wait=0, warmup=1, worker="w")
    assert [p.name for p in summary.trace_files] and summary.trace_files[0].name.startswith("w.")
    labels = {r.name: r for r in summary.labels}
    assert labels["segloss/step"].calls == 3
    assert labels["segloss/bce"].calls == 3 and labels["segloss/dice"].calls == 3
    ops = [r.name for r in summary.top_ops]
    assert "aten::mul" in ops
    self_times = [r.self_us for r in summary.top_ops]
    assert self_times == sorted(self_times, reverse=True)
    # a step holds at least the gradient (N*C*H*W float32) and, eager, the sigmoid's p
    assert summary.peak_bytes is not None and summary.peak_bytes >= 2 * x.numel() * 4
    assert summary.peak_bytes < 64 * x.numel() * 4


def test_profile_reads_a_scenario_file(tmp_path: Path, capsys: Any) -> None:
    sc = tmp_path / "tiny.toml"
    sc.write_text('spec = "focal+dice"\nmode = "binary"\nshape = [2, 1, 4, 8, 8]\n[profile]\nwait = 0\nwarmup = 1\nactive = 1\n')
    assert load_scenario(sc).shape == (2, 1, 4, 8, 8)
    rc = main(["profile", str(sc), "--variant", "eager", "--out", str(tmp_path / "traces")])
    assert rc == 0
    trace = next((tmp_path / "traces" / "tiny").glob("eager.*.pt.trace.json"))
    assert _names(trace).count("segloss/focal") == 1
    assert "focal + dice" in capsys.readouterr().out


def test_a_bad_scenario_key_is_named(tmp_path: Path) -> None:
    sc = tmp_path / "bad.toml"
    sc.write_text('spec = "dice"\nshpae = [1, 1, 4, 4]\n')
    with pytest.raises(SeglossError, match=r"unknown key 'shpae' \(did you mean 'shape'\?\)"):
        load_scenario(sc)


def test_the_committed_scenarios_load() -> None:
    root = Path(__file__).resolve().parents[1] / "profiles"
    names = {p.stem: load_scenario(p) for p in root.glob("*.toml")}
    assert {"binary_bce_dice_2d", "multiclass_ce_dice_2d", "focal_dice_3d", "large_2d"} <= names.keys()
    for sc in names.values():
        build_loss(sc.spec, mode=sc.mode, **sc.loss_kwargs)  # every spec builds
