"""The benchmark engine measures what it says, on peers that compute the same quantity.

No timing is asserted here (speed is shown by ``segloss bench`` itself); these tests check
that the peers are the same losses (their values agree with ours), that the memory probe
measures known allocations, and that the report holds every number.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from segloss_registry import SeglossError, build_loss
from segloss_registry.bench import BenchConfig, make_inputs, monai_peer, profiler_peak_bytes, run_benchmark, seed_peer
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
