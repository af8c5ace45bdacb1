"""The benchmark engine measures what it says, on peers that compute the same quantity.

No timing is asserted here (speed is shown by ``segloss bench`` itself); these tests check
that the peers are the same losses (their values agree with ours), that the memory probe
measures known allocations, and that the report holds every number.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from segloss_registry import SeglossError, build_loss
from segloss_registry.bench import BenchConfig, make_inputs, monai_peer, profiler_peak_bytes, run_benchmark, seed_peer
from segloss_registry.bench.suites import Scaling, per_term, run_suite, write_suite
from segloss_registry.cli import main


def test_profiler_peak_bytes_measures_known_allocations() -> None:
    n = 1 << 18  # 1 MiB of float32
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.ones(n)
        b = torch.ones(2 * n)
        del a, b
        c = torch.ones(n)  # after the frees: the peak stays 3 MiB
        del c
    assert profiler_peak_bytes(prof, "cpu") == 3 * 4 * n


@pytest.mark.parametrize("spec, mode", [("bce+dice", "binary"), ("ce+dice", "multiclass"), ("dice", "multilabel")])
def test_monai_peer_computes_the_same_loss(spec: str, mode: str) -> None:
    pytest.importorskip("monai")
    C = 1 if mode == "binary" else 3
    x, t = make_inputs(mode, (2, C, 16, 16), seed=3)
    ours = build_loss(spec, mode=mode, compile=False)
    peer = monai_peer(ours)
    assert not isinstance(peer, str), peer
    name, module, _ = peer
    assert "MONAI" in name
    torch.testing.assert_close(module(x, t), ours(x, t), rtol=1e-5, atol=1e-6)


def test_seed_peer_is_the_seeds_dice_bce() -> None:
    x, t = make_inputs("binary", (2, 1, 16, 16), seed=4)
    ours = build_loss("bce+dice", compile=False)
    peer = seed_peer(ours)
    assert not isinstance(peer, str)
    name, module = peer
    assert name == "seed DiceBCELoss"
    # the seed's sigmoid-then-BCE equals the logits form for moderate logits
    torch.testing.assert_close(module(x, t), ours(x, t), rtol=1e-5, atol=1e-6)
    assert isinstance(seed_peer(build_loss("ce+dice", mode="multiclass")), str)  # binary only


def test_report_holds_every_candidate_with_its_numbers() -> None:
    cfg = BenchConfig("bce+dice", shape=(2, 1, 32, 32), steps=3, warmup=1, compiled=False, also=(), progress=False)
    report = run_benchmark(cfg)
    names = [m.name for m in report.results]
    assert names[0] == "segloss eager bce + dice"
    assert any(n.startswith("seed DiceBCELoss") for n in names)
    data = json.loads(json.dumps(report.to_dict()))
    ref = data["results"][0]
    assert ref["reference"] and ref["ratio_to_reference"] == 1.0
    assert all(len(r["times_ms"]) == 3 for r in data["results"] if r["error"] is None)
    x_bytes = 2 * 32 * 32 * 4
    assert data["bytes_moved"] == 3 * x_bytes  # logits and target read, gradient written
    for r in data["results"]:
        if r["error"] is None:
            assert r["peak_bytes"] >= x_bytes  # at least the gradient
    assert data["machine"]["threads"] == torch.get_num_threads() and data["machine"]["torch"] == torch.__version__
    text = report.format_text()
    assert "torch " + torch.__version__ in text and "threads" in text
    assert report.format_markdown().count("\n|") >= len(report.results) + 1


def test_bench_cli_json_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "dice", "--shape", "2x1x16x16", "--steps", "2", "--warmup", "0", "--no-compiled",
               "--no-peers", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["shape"] == [2, 1, 16, 16] and len(out["results"]) == 1
    assert main(["bench", "dice", "--dtype", "float8", "--steps", "1"]) == 1
    assert "dtype must be one of" in capsys.readouterr().err
    with pytest.raises(SeglossError, match="shape"):
        make_inputs("binary", (2, 1, 0, 4))


def test_compiled_peers_are_candidates_and_a_compile_failure_is_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_compile(fn: object, **kw: object) -> object:
        def run(*a: object) -> object:
            raise RuntimeError("inductor: no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    cfg = BenchConfig("bce+dice", shape=(2, 1, 16, 16), steps=2, warmup=0, compiled=False, progress=False,
                      libraries=("plain", "seed"))
    rows = {m.name: m for m in run_benchmark(cfg).results}
    assert rows["plain bce + dice (eager)"].times_ms and rows["seed DiceBCELoss (eager)"].times_ms
    failed = rows["plain bce + dice (torch.compile)"]
    assert failed.error == "compile failed: RuntimeError: inductor: no C++ compiler found" and not failed.times_ms
    assert "MONAI" not in " ".join(rows)  # --library filters the peers
    assert "| plain bce + dice (torch.compile) | - |" in run_benchmark(cfg).format_markdown()


def test_per_term_gives_one_row_per_term_with_the_composite_without_it() -> None:
    cfg = BenchConfig("bce+0.5*dice+focal(gamma=1)", shape=(2, 1, 16, 16), steps=3, warmup=0, compiled=False,
                      progress=False)
    pt = per_term(cfg)
    assert [r["term"] for r in pt.rows] == ["bce", "0.5*dice", "focal(gamma=1.0)"]
    assert [r["without"] for r in pt.rows] == ["0.5*dice + focal(gamma=1.0)", "bce + focal(gamma=1.0)",
                                               "bce + 0.5*dice"]
    assert set(pt.full_ms) == {"eager"} and pt.full_ms["eager"] > 0
    for r in pt.rows:
        assert math.isfinite(r["added_ms"]["eager"])
        assert r["share"]["eager"] == pytest.approx(r["added_ms"]["eager"] / pt.full_ms["eager"])
    assert pt.format_markdown().count("\n|") == 1 + 1 + 3  # rule, whole composite, three terms
    with pytest.raises(SeglossError, match="one term"):
        per_term(BenchConfig("dice", shape=(2, 1, 8, 8), compiled=False))


def test_scaling_growth_is_time_ratio_over_size_ratio() -> None:
    shapes = [(2, 2, 8, 8), (2, 4, 8, 8), (2, 16, 8, 8)]
    s = Scaling("classes", BenchConfig("x"), shapes, {"a": [1.0, 2.0, 16.0], "b": [1.0, 1.0, None]})
    assert s.growth("a") == [1.0, 2.0]  # 2x data, 2x time; then 4x data, 8x time
    assert s.growth("b") == [0.5, None]
    assert s.exponent("a") == pytest.approx(math.log(16) / math.log(8))
    md = s.format_markdown()
    assert "16.00 (2.00 faster than data)" in md and "time ~ size^k" in md


def test_gpu_suite_runs_on_the_cpu_small_and_writes_json_and_markdown(tmp_path: Path) -> None:
    res = run_suite("gpu", device="cpu", shrink=64, steps=1, warmup=0, compiled=False, peers=False)
    j, m = write_suite(res, tmp_path)
    data = json.loads(j.read_text())
    names = [r["name"] for r in data["rows"]]
    assert len(names) == 7 and "binary 3-term bfloat16" in names and not data["skipped"]
    assert {r["config"]["device"] for r in data["rows"]} == {"cpu"}
    assert data["rows"][0]["config"]["shape"] == [2, 1, 8, 8]
    assert all(r["results"][0]["times_ms"] for r in data["rows"])
    assert "## binary 3-term float32" in m.read_text()
    assert subprocess.run(["bash", "-n", "profiles/gpu_suite.sh"], cwd=Path(__file__).parents[1]).returncode == 0
    with pytest.raises(SeglossError, match=r"unknown suite 'gpux'.*did you mean 'gpu'"):
        run_suite("gpux")


def test_unchecked_candidate_builds_without_value_checks() -> None:
    """--unchecked adds ours compiled with check_inputs='never' beside the checked one."""
    from segloss_registry.bench.candidates import UNCHECKED, our_candidates
    from segloss_registry.bench.config import BenchConfig

    cfg = BenchConfig(spec="bce+dice", shape=(1, 1, 4, 4), also=("bce",), unchecked=True, eager=False)
    cands, _ = our_candidates(cfg, torch.zeros(1, 1, 4, 4))
    names = [c.name for c in cands]
    assert names == ["segloss compiled bce + dice", f"segloss compiled bce + dice ({UNCHECKED})",
                     "segloss compiled bce", f"segloss compiled bce ({UNCHECKED})"]
    assert [c.fn.check_inputs for c in cands] == ["auto", "never", "auto", "never"]
