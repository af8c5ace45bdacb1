"""``segloss demo``: the synthetic data, the metrics, and a small run that must really learn."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from segloss_registry import SeglossError, UnknownLossError
from segloss_registry.cli import main
from segloss_registry.demo import (
    CLASSES,
    DemoConfig,
    TinyUNet,
    class_counts,
    dice_iou,
    make_samples,
    make_splits,
    run_demo,
)
from segloss_registry.demo import train as demo_train

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_TB = importlib.util.find_spec("tensorboard") is not None

# 32x32 images, a 2-level U-Net, 60 steps: about 2 s of CPU, Dice ~0.93 (untrained ~0.2)
SMALL = dict(size=32, width=8, depth=2, steps=60, batch_size=16, n_train=128, n_val=32, seed=0,
             timing_steps=0, profile_steps=2, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """One torch thread for this module: its tensors are too small to gain from two, and on a busy
    2-core machine two threads wait on each other at every operator (training runs ~10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Foreground Dice 2|P&T| / (|P|+|T|) from boolean masks, written out here independently."""
    inter = (pred & truth).sum().item()
    return 2 * inter / (pred.sum().item() + truth.sum().item())


# -- data ------------------------------------------------------------------------------------------
def test_data_is_deterministic_and_split_is_disjoint() -> None:
    a_train, a_val = make_splits(seed=3, n_train=24, n_val=8, task="binary", size=32)
    b_train, b_val = make_splits(seed=3, n_train=24, n_val=8, task="binary", size=32)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_val.targets, b_val.targets)
    c_train, _ = make_splits(seed=4, n_train=24, n_val=8, task="binary", size=32)
    assert not torch.equal(a_train.images, c_train.images)
    # a sample depends only on (seed, index), never on the batch it was made in
    images, labels = make_samples(3, [5, 25], size=32)
    assert torch.equal(images[0], a_train.images[5]) and torch.equal(images[1], a_val.images[1])
    assert torch.equal((labels[0] > 0).float(), a_train.targets[5, 0])
    # held-out images are none of the training images
    dist = torch.cdist(a_val.images.flatten(1), a_train.images.flatten(1))
    assert dist.min() > 1.0
    assert a_train.images.dtype == torch.float32 and a_train.images.shape == (24, 3, 32, 32)
    assert a_train.images.min() >= 0.0 and a_train.images.max() <= 1.0


def test_masks_match_images() -> None:
    train, _ = make_splits(seed=0, n_train=64, n_val=1, task="multiclass", size=64)
    assert train.targets.dtype == torch.int64 and train.targets.shape == (64, 64, 64)
    assert set(train.targets.unique().tolist()) == {0, 1, 2, 3}
    binary, _ = make_splits(seed=0, n_train=64, n_val=1, task="binary", size=64)
    assert torch.equal(binary.images, train.images)
    assert torch.equal(binary.targets[:, 0], (train.targets > 0).float())
    lum = train.images.mean(1)
    for i in range(len(train)):
        fg = train.targets[i] > 0
        assert 0 < fg.sum() < fg.numel()
        # shapes are painted brighter than the background they cover, on every image
        assert lum[i][fg].mean() - lum[i][~fg].mean() > 0.1
        # and the image changes at the mask's edge: pixels just outside differ from those just inside
        inner = fg & ~torch.nn.functional.max_pool2d((~fg).float()[None, None], 3, 1, 1)[0, 0].bool()
        outer = ~fg & torch.nn.functional.max_pool2d(fg.float()[None, None], 3, 1, 1)[0, 0].bool()
        if inner.any():
            assert lum[i][inner].mean() > lum[i][outer].mean()


def test_bad_settings_raise_clear_errors() -> None:
    with pytest.raises(SeglossError, match="task must be one of binary, multiclass"):
        run_demo(DemoConfig(task="multi", out=None))
    with pytest.raises(SeglossError, match="steps must be an int >= 1"):
        run_demo(DemoConfig(steps=0, out=None))
    with pytest.raises(SeglossError, match="divisible by 2\\*\\*depth = 8"):
        run_demo(DemoConfig(size=36, out=None))
    with pytest.raises(UnknownLossError, match="dcie"):
        run_demo(DemoConfig(spec="bce+dcie", out=None))
    with pytest.raises(SeglossError, match="unknown device"):
        run_demo(DemoConfig(device="gpu7", out=None))


# -- metrics -----------------------------------------------------------------------------------------
def test_metrics_hand_example() -> None:
    pred = torch.tensor([[1, 1, 0, 0, 2]])
    truth = torch.tensor([[1, 0, 1, 0, 2]])
    counts = class_counts(pred, truth, 4)
    assert counts.tolist() == [[1, 2, 2], [1, 2, 2], [1, 1, 1], [0, 0, 0]]
    dice, iou = dice_iou(counts)
    assert dice.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])  # class 3: absent from both -> 1
    assert iou.tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])


def test_metrics_match_monai() -> None:
    monai_metrics = pytest.importorskip("monai.metrics")
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (6, 16, 16), generator=g)
    truth = torch.where(torch.rand(6, 16, 16, generator=g) < 0.6, pred, torch.randint(0, 4, (6, 16, 16), generator=g))
    dice, iou = dice_iou(class_counts(pred, truth, 4))
    # the demo's figures pool the pixels of all images: MONAI on the images laid side by side as one
    one_hot = lambda x: torch.nn.functional.one_hot(x.reshape(1, -1), 4).permute(0, 2, 1).float()
    ref_dice = monai_metrics.compute_dice(one_hot(pred), one_hot(truth), include_background=True)[0]
    ref_iou = monai_metrics.compute_iou(one_hot(pred), one_hot(truth), include_background=True)[0]
    assert dice.tolist() == pytest.approx(ref_dice.double().tolist(), abs=1e-6)
    assert iou.tolist() == pytest.approx(ref_iou.double().tolist(), abs=1e-6)


# -- a small run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, list[str]]:
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    torch.manual_seed(123)  # run_demo seeds itself; this must not matter
    result = run_demo(DemoConfig(out=str(out), **SMALL), log=lines.append)
    return result, out, lines


def test_small_run_really_learns(small_run: tuple[Any, Path, list[str]]) -> None:
    result, _, _ = small_run
    # the same held-out data, made again here, and the same untrained model (run_demo seeds, then builds it)
    _, val = make_splits(seed=0, n_train=SMALL["n_train"], n_val=SMALL["n_val"], task="binary", size=SMALL["size"])
    truth = val.targets[:, 0] > 0.5
    torch.manual_seed(SMALL["seed"])
    untrained = TinyUNet(3, 1, SMALL["width"], SMALL["depth"]).eval()
    with torch.no_grad():
        untrained_dice = _dice(untrained(val.images)[:, 0] > 0, truth)
        trained_dice = _dice(result.model.eval()(val.images)[:, 0] > 0, truth)
    all_foreground = _dice(torch.ones_like(truth), truth)  # the best a constant guess does
    assert result.summary["metrics"]["dice"] == pytest.approx(trained_dice, abs=1e-9)
    assert result.summary["metrics"]["untrained"]["dice"] == pytest.approx(untrained_dice, abs=1e-9)
    assert trained_dice > max(untrained_dice, all_foreground) + 0.4
    assert trained_dice > 0.8
    # IoU follows from Dice for one class: IoU = D / (2 - D)
    d = trained_dice
    assert result.summary["metrics"]["iou"] == pytest.approx(d / (2 - d), abs=1e-9)
    # the losses fell: the last ten steps are below the first ten, term by term
    for key in ("total", "bce", "dice"):
        first = sum(r[key] for r in result.history[:10]) / 10
        last = sum(r[key] for r in result.history[-10:]) / 10
        assert last < 0.8 * first, key


def test_small_run_writes_its_outputs(small_run: tuple[Any, Path, list[str]]) -> None:
    result, out, lines = small_run
    summary = json.loads((out / "summary.json").read_text())
    for key in ("spec", "task", "metrics", "final_losses", "step_times", "time", "machine", "torch", "profile",
                "outputs"):
        assert key in summary, key
    assert summary["spec"] == "bce + dice" and summary["task"] == "binary"
    assert summary["torch"] == torch.__version__ and summary["machine"]["torch_threads"] >= 1
    assert set(summary["final_losses"]) == {"total", "bce", "dice"}
    last = result.history[-1]
    assert summary["final_losses"]["total"] == pytest.approx(last["bce"] + last["dice"], rel=1e-5)
    assert all(math.isfinite(v) for v in summary["final_losses"].values())
    assert 0.0 <= summary["metrics"]["dice"] <= 1.0 and summary["step_times"] is None  # timing_steps=0
    assert len(result.history) == SMALL["steps"]
    # the profiler trace: Chrome-trace JSON with the composite's labels
    traces = list((out / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    names = {e.get("name") for e in json.loads(traces[0].read_text())["traceEvents"]}
    assert "segloss/eager[bce + dice]" in names and "segloss/bce" in names and "demo/model_forward" in names
    if HAS_TB:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(out / "scalars"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"loss/total", "loss/bce", "loss/dice", "heldout/dice", "heldout/iou"} <= tags
        assert len(acc.Scalars("loss/bce")) == SMALL["steps"]
        assert acc.Scalars("heldout/dice")[-1].value == pytest.approx(summary["metrics"]["dice"], abs=1e-6)
        assert summary["outputs"]["tensorboard_scalars"] is True and "scalars" in summary["files"]
    else:
        assert any("tensorboard" in line for line in lines)
    if HAS_MPL:
        for name in ("grid.png", "curves.png"):
            data = (out / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000
    else:
        assert any('pip install "segloss-registry[plot]"' in line for line in lines)


def test_missing_extras_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    (tmp_path / "scalars").mkdir()
    (tmp_path / "scalars" / "events.out.tfevents.1.old").write_text("a previous run's curves")
    lines: list[str] = []
    cfg = DemoConfig(**{**SMALL, "steps": 10, "profile_steps": 0, "progress": True}, out=str(tmp_path))
    run_demo(cfg, log=lines.append)
    text = "\n".join(lines)
    assert 'pip install "segloss-registry[plot]"' in text
    assert 'pip install "segloss-registry[profile]"' in text
    assert "step    10/10" in text  # plain lines instead of the progress bar
    assert (tmp_path / "summary.json").is_file() and not (tmp_path / "grid.png").exists()
    # the output tells the truth: no scalars were written, so none are claimed and TensorBoard is not suggested
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["outputs"]["tensorboard_scalars"] is False and summary["outputs"]["pictures"] is False
    missing = summary["outputs"]["missing"]
    assert 'TensorBoard scalars need tensorboard: pip install "segloss-registry[profile]"' in missing
    assert "scalars" not in summary["files"] and "tensorboard" not in summary["settings"]
    assert summary["settings"]["tensorboard_requested"] is True
    assert "tensorboard --logdir" not in text
    assert not list((tmp_path / "scalars").glob("events.out.tfevents.*"))  # no stale curves pass for this run's


def test_the_quick_start_installs_what_the_readme_promises() -> None:
    """The README's quick start says the demo writes TensorBoard scalars and pictures, with a progress bar:
    the extras it installs must bring tensorboard, matplotlib and tqdm."""
    import re

    import tomllib

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    extras = re.search(r'pip install -e "\.\[([a-z,]+)\]" && segloss demo', quick)
    assert extras, "the quick start's first command installs the project with extras, then runs the demo"
    optional = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
                 for extra in extras.group(1).split(",") for req in optional[extra]}
    promised = {"TensorBoard scalars": "tensorboard", "pictures": "matplotlib", "progress": "tqdm"}
    for words, package in promised.items():
        if words.lower() in quick.lower():
            assert package in installed, (words, package, sorted(installed))
    assert "TensorBoard scalars" in quick  # the promise this test holds the install to


def test_numpy_is_a_runtime_dependency() -> None:
    """torch warns "Failed to initialize NumPy" on every import without numpy: the package depends on it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").lower().startswith("numpy") for d in deps), deps


# -- weight schedules -----------------------------------------------------------------------------------
def test_parse_schedule_rules() -> None:
    keys = ("bce", "dice")
    s = demo_train.parse_schedule("dice:1->0.2", keys)
    assert s is not None and s.ramps == (("dice", 1.0, 0.2),)
    assert s.at(0, 5) == {"dice": 1.0} and s.at(4, 5) == {"dice": 0.2}
    assert s.at(2, 5)["dice"] == pytest.approx(0.6)  # linear: halfway, halfway between
    both = demo_train.parse_schedule(["bce:0.5", "dice: 0 -> 2"], keys)
    assert both is not None and both.at(1, 3) == {"bce": 0.5, "dice": 1.0}
    assert demo_train.parse_schedule("bce:0.5,dice:1->0", keys).ramps == (("bce", 0.5, 0.5), ("dice", 1.0, 0.0))
    assert demo_train.parse_schedule(None, keys) is None
    for bad, message in (("dcie:1->0", "did you mean 'dice'"), ("dice", "not TERM:START->END"),
                         ("dice:-1->0", "finite numbers >= 0"), ("dice:1->nan", "finite numbers >= 0"),
                         ("dice:1->x", "finite numbers >= 0"), ("dice:1,dice:2", "twice")):
        with pytest.raises(SeglossError, match=message):
            demo_train.parse_schedule(bad, keys)


def test_schedule_ramps_the_weights_through_set_weights(tmp_path: Path) -> None:
    cfg = DemoConfig(**{**SMALL, "steps": 12, "profile_steps": 0}, out=None, schedule=("dice:1->0.1",))
    result = run_demo(cfg, log=lambda _: None)
    rows = result.history
    assert len(rows) == 12
    for i, row in enumerate(rows):
        w = 1.0 + (0.1 - 1.0) * i / 11  # the ramp written out: 1 at the first step, 0.1 at the last
        assert row["weight/dice"] == pytest.approx(w, abs=1e-12)
        # the loss that was trained on is bce + w * dice: the weight reached the criterion at that step
        assert row["total"] == pytest.approx(row["bce"] + w * row["dice"], rel=1e-5, abs=1e-6)
    assert result.criterion.weights == {"bce": 1.0, "dice": pytest.approx(0.1)}
    assert result.summary["schedule"]["ramps"] == {"dice": {"start": 1.0, "end": 0.1}}


def test_cli_schedule_and_a_bad_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["demo", "--steps", "3", "--size", "32", "--timing-steps", "0", "--profile-steps", "0", "--no-progress",
            "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "a"), "--schedule", "bce:0.01->0.5"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["schedule"]["ramps"] == {"bce": {"start": 0.01, "end": 0.5}}
    assert summary["settings"]["schedule"] == ["bce:0.01->0.5"]
    assert "weights ramped bce:0.01->0.5" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "b"), "--schedule", "surfce:0->1"]) == 1
    assert "--schedule names the term 'surfce'" in capsys.readouterr().err
    assert not (tmp_path / "b" / "summary.json").exists()


# -- the thin-structure task and the boundary metric --------------------------------------------------
def test_thin_task_is_thin_imbalanced_and_deterministic() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    train, val = make_splits(seed=2, n_train=48, n_val=8, task="thin", size=64)
    again, _ = make_splits(seed=2, n_train=48, n_val=8, task="thin", size=64)
    assert torch.equal(train.images, again.images) and torch.equal(train.targets, again.targets)
    assert train.targets.shape == (48, 1, 64, 64) and train.num_classes == 1
    assert set(train.targets.unique().tolist()) == {0.0, 1.0}
    fg = train.targets.mean().item()
    assert 0.01 < fg < 0.08  # heavy imbalance: a few per cent of the pixels
    masks = train.targets[:, 0].bool().numpy()
    # thin: a 3x3 erosion (scipy) removes most of the foreground; blobs as large as the demo's shapes would survive it
    kept = sum(ndimage.binary_erosion(m, structure=torch.ones(3, 3).numpy()).sum() for m in masks)
    assert kept < 0.2 * masks.sum()
    # the structures are painted brighter than their surroundings, by less than the noise
    lum = train.images.mean(1)
    fg_mask = train.targets[:, 0] > 0
    contrast = (lum[fg_mask].mean() - lum[~fg_mask].mean()).item()
    assert 0.03 < contrast < 0.15
    # held-out images are none of the training images
    assert torch.cdist(val.images.flatten(1), train.images.flatten(1)).min() > 1.0


def _boundary_reference(mask: Any, tol: int) -> tuple[Any, Any]:
    """Boundary (mask minus its 3x3 erosion, outside the image as background) and its (2 tol + 1)^2
    dilation, with scipy.ndimage."""
    import numpy as np
    from scipy import ndimage

    b = mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 3)), border_value=0)
    return b, ndimage.binary_dilation(b, structure=np.ones((2 * tol + 1, 2 * tol + 1)))


def test_boundary_f1_matches_scipy() -> None:
    pytest.importorskip("scipy")
    g = torch.Generator().manual_seed(0)
    pred = torch.nn.functional.max_pool2d((torch.rand(3, 1, 24, 24, generator=g) < 0.08).float(), 3, 1, 1)[:, 0] > 0
    truth = torch.nn.functional.max_pool2d((torch.rand(3, 1, 24, 24, generator=g) < 0.08).float(), 3, 1, 1)[:, 0] > 0
    for tol in (1, 2):
        counts = demo_train.boundary_counts(pred, truth, tol).tolist()
        mp = p = mt = t = 0
        for a, b in zip(pred.numpy(), truth.numpy()):
            (ba, da), (bb, db) = _boundary_reference(a, tol), _boundary_reference(b, tol)
            mp, p, mt, t = mp + (ba & db).sum(), p + ba.sum(), mt + (bb & da).sum(), t + bb.sum()
        assert counts == [mp, p, mt, t]
        precision, recall = mp / p, mt / t
        assert demo_train.boundary_f1(torch.tensor(counts)) == pytest.approx(
            2 * precision * recall / (precision + recall), abs=1e-12)
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    assert demo_train.boundary_f1(demo_train.boundary_counts(empty, empty)) == 1.0
    assert demo_train.boundary_f1(demo_train.boundary_counts(empty, truth[:1, :8, :8] | True)) == 0.0


def test_cli_thin_task(tmp_path: Path) -> None:
    code = main(["demo", "--task", "thin", "--steps", "3", "--size", "32", "--out", str(tmp_path),
                 "--timing-steps", "0", "--profile-steps", "0", "--no-progress", "--threads", "1"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["spec"] == "bce + dice" and summary["mode"] == "binary" and summary["task"] == "thin"
    assert 0.0 <= summary["metrics"]["boundary_f1"] <= 1.0


def test_demo_output_has_no_profiler_noise(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--steps", "2", "--size", "32", "--out", str(tmp_path), "--timing-steps", "0",
                 "--profile-steps", "1", "--no-progress", "--threads", "1"])
    assert code == 0
    out, err = capfd.readouterr()
    assert "profiled 1 training steps" in out
    assert "USDT" not in out + err and "profiler_start" not in err and "Memory block of unknown size" not in err




def test_cli_multiclass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--task", "multiclass", "--steps", "4", "--size", "32", "--out", str(tmp_path),
                 "--timing-steps", "0", "--profile-steps", "0", "--no-progress", "--seed", "1", "--threads", "1"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["spec"] == "ce + dice" and summary["mode"] == "multiclass"
    assert set(summary["metrics"]["per_class"]) == set(CLASSES[1:])
    per_class = [m["dice"] for m in summary["metrics"]["per_class"].values()]
    assert summary["metrics"]["dice"] == pytest.approx(sum(per_class) / 3)
    assert "held-out" in capsys.readouterr().out


def test_auto_threads_start_from_the_cores_not_the_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    # the pip install just before the quick start's demo leaves a 1-minute load of ~2: it must not cost a thread
    monkeypatch.setattr(demo_train.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(demo_train.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo_train.torch, "get_num_threads", lambda: 2)
    for load in (0.2, 1.0, 2.5, 6.5):
        monkeypatch.setattr(demo_train.os, "getloadavg", lambda load=load: (load, load, load))
        n, why = demo_train.choose_threads()
        assert n == 2 and "2 of 2 cores" in why and f"load {load:.2f}" in why
    # a process limited to one core gets one thread
    monkeypatch.setattr(demo_train.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert demo_train.choose_threads()[0] == 1


@pytest.mark.parametrize(("slow_with", "expected"), [(2, 1), (1, 2)])
def test_auto_threads_keep_whichever_count_runs_the_step_faster(slow_with: int, expected: int) -> None:
    import time

    threads = torch.get_num_threads()
    calls: list[int] = []

    def step() -> None:  # stands in for a training step: slower with `slow_with` threads
        calls.append(torch.get_num_threads())
        time.sleep(0.02 if torch.get_num_threads() == slow_with else 0.002)

    def even() -> None:  # no difference: every round is timed (30 ms: a busy machine's jitter stays below 2x)
        calls.append(torch.get_num_threads())
        time.sleep(0.03)

    try:
        best, med = demo_train.faster_threads(step, 2, rounds=3)
        assert best == expected and torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(threads)
    assert calls == [1, 2, 1]  # one untimed call, then one timed pair: a 10x difference needs no more
    assert med[slow_with] > 5 * med[3 - slow_with]
    assert "with 1 thread and" in demo_train.probe_note(best, med, "a training step")
    calls.clear()
    try:
        demo_train.faster_threads(even, 2, rounds=3)
    finally:
        torch.set_num_threads(threads)
    assert calls == [1] + [2, 1] * 3


def test_cli_bad_spec_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--spec", "bce+dcie", "--out", str(tmp_path)]) == 1
    assert "UnknownLossError" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.compile
def test_step_times_eager_and_compiled() -> None:
    torch.manual_seed(0)
    model = TinyUNet(3, 1, width=4, depth=1)
    x = torch.rand(2, 3, 16, 16)
    y = (torch.rand(2, 1, 16, 16) > 0.5).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = demo_train.measure_step_times("bce+dice", "binary", model, x, y, steps=2)
    for name in ("eager", "compiled"):
        assert t[name]["loss_ms"] > 0 and t[name]["train_step_ms"] > 0
    assert t["compiled"]["fell_back_to_eager"] is False and t["compiled"]["first_call_s"] > 0
    # the timed steps train copies; the model given is left as it was
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
