"""``sync="global"``: region statistics summed over DistributedDataParallel ranks (gloo, CPU).

Every case trains nothing: a tiny conv model wrapped in DDP runs one forward/backward on
its shard of a fixed global batch. The parent process computes, with independent formulas
written below (plain torch, no segloss code), the loss and the parameter gradients of one
process over the whole batch; each rank's loss value and its DDP-averaged gradients must
match them. The ranks are separate ``python`` processes running this file as a script (so
the launch does not depend on pytest's import mode); one launch per world size runs all
of that world size's cases.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

IGNORE = 255
H = W = 6
LAUNCH_TIMEOUT_S = 300  # compiling on a loaded 2-core machine is slow; a hang ends here


@dataclass(frozen=True)
class Case:
    """One DDP scenario. ``sizes``: images per rank. ``empty``/``ignored``: ranks whose
    target is all background / all ``IGNORE``. ``spec`` and ``kwargs`` go to ``build_loss``."""

    world: int
    sizes: tuple[int, ...]
    mode: str
    spec: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    compile: bool = False
    empty: tuple[int, ...] = ()
    ignored: tuple[int, ...] = ()
    seed: int = 0


CASES: dict[str, Case] = {
    "dice_binary_equal": Case(2, (2, 2), "binary", "dice", {"sync": "global"}, seed=1),
    "iou_multiclass_uneven_one_rank_ignored": Case(
        2, (3, 1), "multiclass", "iou", {"sync": "global", "ignore_index": IGNORE}, ignored=(1,), seed=2
    ),
    "bce_dice_equal": Case(2, (2, 2), "binary", "bce+dice", {"sync": "global"}, seed=3),
    "bce_dice_compiled_uneven": Case(2, (3, 1), "binary", "bce+dice", {"sync": "global"}, compile=True, seed=4),
    "dice_binary_uneven_one_rank_empty": Case(3, (2, 1, 3), "binary", "dice", {"sync": "global"}, empty=(1,), seed=5),
    "dice_multiclass_uneven_one_rank_ignored": Case(
        3, (1, 2, 1), "multiclass", "dice",
        {"sync": "global", "ignore_index": IGNORE, "include_background": False, "smooth": 0.0},
        ignored=(0,), seed=6,
    ),
    "bce_iou_dice_uneven": Case(3, (1, 3, 2), "multilabel", "bce+iou+dice", {"sync": "global"}, seed=7),
    "cldice_binary_uneven": Case(2, (3, 1), "binary", "cldice", {"sync": "global"}, seed=8),
}


# -- data and model, built the same way in the parent and in every rank ------------------------
def _channels(case: Case) -> int:
    return 1 if case.mode == "binary" else 3


def _offsets(case: Case) -> list[tuple[int, int]]:
    out, lo = [], 0
    for n in case.sizes:
        out.append((lo, lo + n))
        lo += n
    return out


def _data(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(case.seed)
    N, C = sum(case.sizes), _channels(case)
    x = torch.randn(N, 2, H, W, generator=g)
    if case.mode == "multiclass":
        t = torch.randint(0, C, (N, H, W), generator=g)
        t[torch.rand(N, H, W, generator=g) < 0.15] = IGNORE
    else:
        t = (torch.rand(N, C, H, W, generator=g) > 0.6).float()
    for r, (lo, hi) in enumerate(_offsets(case)):
        if r in case.empty:
            t[lo:hi] = 0
        if r in case.ignored:
            t[lo:hi] = IGNORE
    return x, t


def _model(case: Case) -> torch.nn.Module:
    torch.manual_seed(100 + case.seed)
    return torch.nn.Conv2d(2, _channels(case), 3, padding=1)


# -- the rank side ---------------------------------------------------------------------------
def _run_case(case: Case, rank: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from segloss_registry import CompileWarning, build_loss

    x, t = _data(case)
    lo, hi = _offsets(case)[rank]
    model = _model(case)
    ddp = DDP(model)
    crit = build_loss(case.spec, mode=case.mode, compile=case.compile, **case.kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileWarning)
        loss = crit(ddp(x[lo:hi]), t[lo:hi])
        loss.backward()
    local = {k: v for k, v in case.kwargs.items() if k != "sync"}
    with torch.no_grad():  # the per-rank loss without sync, to show what "global" changes
        local_value = build_loss(case.spec, mode=case.mode, compile=False, **local)(model(x[lo:hi]), t[lo:hi])
    return {
        "loss": loss.item(),
        "local_loss": local_value.item(),
        "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()},
        "compiled": crit.uses_compile(x.device),
        "graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "compile_warnings": [str(w.message) for w in caught if issubclass(w.category, CompileWarning)],
    }


def _rank_main(rank: int, world: int, port: int, out: str, names: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=180)
    )
    results: dict[str, Any] = {}
    try:
        for name in names:
            try:
                results[name] = _run_case(CASES[name], rank)
            except Exception:  # noqa: BLE001 - reported by the test of that case
                results[name] = {"error": traceback.format_exc()}
                break  # the ranks' collectives no longer pair up
    finally:
        torch.save(results, Path(out) / f"rank{rank}.pt")
        dist.destroy_process_group()


# -- the parent side: launch, then compare with one process over the whole batch -------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, compile: bool) -> list[dict[str, Any]]:
    """Run the cases of one world size and compile setting in ``world`` rank processes."""
    names = [n for n, c in CASES.items() if c.world == world and c.compile is compile]
    with tempfile.TemporaryDirectory(prefix=f"segloss_ddp{world}_") as out:
        return _run_ranks(world, names, out)


def _run_ranks(world: int, names: list[str], out: str) -> list[dict[str, Any]]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    start = time.perf_counter()
    logs = [Path(out) / f"rank{r}.log" for r in range(world)]
    procs = []
    for r in range(world):
        with open(logs[r], "w") as log:  # a file, not a pipe: a chatty rank cannot block on a full pipe
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--rank", str(r), "--world", str(world), "--port", str(port),
                 "--out", out, *names],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ))
    deadline = start + LAUNCH_TIMEOUT_S
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
                q.wait()
            pytest.fail(f"{world} ranks did not finish in {LAUNCH_TIMEOUT_S} s (a hang?)")
    for r, p in enumerate(procs):
        if p.returncode != 0:
            pytest.fail(f"rank {r} of {world} exited with {p.returncode}:\n{logs[r].read_text()[-4000:]}")
    return [torch.load(Path(out) / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def launched() -> Any:
    cache: dict[tuple[int, bool], list[dict[str, Any]]] = {}

    def get(world: int, compile: bool = False) -> list[dict[str, Any]]:
        if (world, compile) not in cache:
            cache[(world, compile)] = _launch(world, compile)
        return cache[(world, compile)]

    return get


# Independent reference formulas (DESIGN.md), float64.
def _prep(logits: torch.Tensor, t: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = logits.double()
    if mode == "multiclass":
        valid = (t != IGNORE).unsqueeze(1).double()
        onehot = F.one_hot(torch.where(t == IGNORE, 0, t), logits.shape[1]).movedim(-1, 1).double()
        return torch.softmax(logits, 1) * valid, onehot * valid, valid
    return torch.sigmoid(logits), t.double(), torch.ones_like(logits)


def _sums(logits: torch.Tensor, t: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p, tt, _ = _prep(logits, t, mode)
    dims = (0, 2, 3)
    return (p * tt).sum(dims), p.sum(dims), tt.sum(dims)


def ref_dice(logits, t, mode, smooth=1.0, include_background=True):
    i, ps, ts = _sums(logits, t, mode)
    per = 1 - (2 * i + smooth) / (ps + ts + smooth)
    return (per if include_background else per[1:]).mean()


def ref_iou(logits, t, mode, smooth=1.0):
    i, ps, ts = _sums(logits, t, mode)
    return (1 - (i + smooth) / (ps + ts - i + smooth)).mean()


def ref_bce(logits, t):
    return F.binary_cross_entropy_with_logits(logits.double(), t.double())


def _ref_term(name: str, logits, t, case: Case) -> torch.Tensor:
    kw = case.kwargs
    if name == "dice":
        return ref_dice(logits, t, case.mode, kw.get("smooth", 1.0), kw.get("include_background", True))
    if name == "iou":
        return ref_iou(logits, t, case.mode, kw.get("smooth", 1.0))
    if name == "cldice":  # DDP against one process: its formula is checked in tests/test_losses_topology.py
        from segloss_cldice import cldice_loss

        return cldice_loss(logits, t, mode=case.mode).double()
    assert name == "bce"
    return ref_bce(logits, t)


def _reference(case: Case) -> tuple[list[float], dict[str, torch.Tensor]]:
    """(each rank's expected loss value, the parameter gradients DDP must end with).

    Global terms (dice, iou with sync="global"): the loss of the whole batch on every rank.
    Local terms (bce): rank r's value is bce of its own shard, and DDP averages their
    gradients, so the objective they add is mean_r bce(shard r).
    """
    x, t = _data(case)
    model = _model(case).double()
    out = model(x.double())
    shards = _offsets(case)
    names = [n.strip() for n in case.spec.split("+")]
    global_part = sum(_ref_term(n, out, t, case) for n in names if n != "bce")
    local_parts = [
        sum((_ref_term(n, out[lo:hi], t[lo:hi], case) for n in names if n == "bce"), torch.zeros((), dtype=out.dtype))
        for lo, hi in shards
    ]
    objective = global_part + torch.stack(local_parts).mean()
    objective.backward()
    values = [float((global_part + lp).detach()) for lp in local_parts]
    return values, {n: p.grad.float() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.compile) if c.compile else n for n, c in CASES.items()]
)
def test_value_and_ddp_gradients_equal_one_process(name: str, launched: Any) -> None:
    case = CASES[name]
    ranks = launched(case.world, case.compile)
    for r, res in enumerate(ranks):
        assert name in res, f"rank {r} did not reach {name} (an earlier case failed)"
        assert "error" not in res[name], f"rank {r}:\n{res[name]['error']}"
    values, grads = _reference(case)
    for r, res in enumerate(ranks):
        got = res[name]
        assert got["loss"] == pytest.approx(values[r], rel=1e-5, abs=1e-6), f"rank {r} loss"
        for pname, g in grads.items():
            torch.testing.assert_close(got["grads"][pname], g, rtol=1e-4, atol=1e-6, msg=f"rank {r} grad {pname}")
        assert got["compiled"] is case.compile
        assert (got["graphs"] >= 1) is case.compile  # the compiled case really ran a dynamo graph
        assert got["compile_warnings"] == []


def test_global_sync_changes_the_value_for_uneven_shards(launched: Any) -> None:
    # what the feature fixes: with sync="local" the mean of the ranks' dice is not the global dice
    case = CASES["dice_binary_uneven_one_rank_empty"]
    ranks = launched(case.world)
    x, t = _data(case)
    with torch.no_grad():
        out = _model(case)(x)
        expected_local = [float(ref_dice(out[lo:hi], t[lo:hi], "binary")) for lo, hi in _offsets(case)]
        global_value = float(ref_dice(out, t, "binary"))
    got_local = [res["dice_binary_uneven_one_rank_empty"]["local_loss"] for res in ranks]
    assert got_local == pytest.approx(expected_local, rel=1e-5)
    assert sum(got_local) / len(got_local) != pytest.approx(global_value, rel=1e-2)
    assert expected_local[1] == pytest.approx(1.0, abs=0.1)  # the empty rank alone would score ~1


# -- no process group, one process -------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "compile"), [("dice", False), ("bce+iou", False), pytest.param("dice", True, marks=pytest.mark.compile)]
)
def test_global_without_process_group_is_a_clear_error(spec: str, compile: bool) -> None:
    from segloss_registry import InputError, build_loss

    assert not dist.is_initialized()
    crit = build_loss(spec, sync="global", compile=compile)
    x, t = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    with pytest.raises(InputError, match=r"binary: sync='global' needs .*init_process_group\(\.\.\.\).*sync='local'"):
        crit(x, t)
    assert crit.uses_compile(x.device) is compile  # not mistaken for a compiler failure


def test_plain_function_without_process_group_is_a_clear_error() -> None:
    from segloss_dice import dice_loss

    from segloss_registry import InputError

    x, t = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    with pytest.raises(InputError, match="initialised default process group"):
        dice_loss(x, t, sync="global")


def test_per_image_with_global_sync_is_rejected_at_build_time() -> None:
    from segloss_registry import LossConfigError, build_loss

    with pytest.raises(LossConfigError,
                       match=r"dice: per_image=True with sync='global' is not supported.*sync='local'"):
        build_loss("dice", sync="global", per_image=True)
    with pytest.raises(LossConfigError, match=r"iou: sync must be one of 'local' or 'global' \(got 'all'\)"):
        build_loss("iou", sync="all")


def test_sync_round_trips_through_config() -> None:
    from segloss_registry import build_loss

    crit = build_loss("bce+dice", sync="global")
    assert crit.config()["terms"][1]["params"]["sync"] == "global"
    assert "sync" not in crit.config()["terms"][0]["params"]  # bce has no statistics to sync
    assert build_loss(crit.config()).config() == crit.config()


def test_world_size_one_equals_local(tmp_path: Path) -> None:
    from segloss_registry import build_loss

    x = torch.randn(3, 3, 5, 5)
    t = torch.randint(0, 3, (3, 5, 5))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        xg = x.clone().requires_grad_(True)
        got = build_loss("dice+iou", mode="multiclass", sync="global", compile=False)(xg, t)
        (g_got,) = torch.autograd.grad(got, xg)
    finally:
        dist.destroy_process_group()
    xr = x.double().requires_grad_(True)
    ref = ref_dice(xr, t, "multiclass") + ref_iou(xr, t, "multiclass")
    (g_ref,) = torch.autograd.grad(ref, xr)
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(g_got, g_ref.float(), rtol=1e-4, atol=1e-7)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one rank of a test_distributed launch")
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="+")
    a = ap.parse_args()
    _rank_main(a.rank, a.world, a.port, a.out, a.names)
