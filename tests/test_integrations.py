"""The criterion inside real training stacks, with the real packages (issue 11).

pickle / deepcopy / torch.save, ``torch.multiprocessing.spawn``, the user's own
``torch.compile(fullgraph=True)``, MONAI's ``MetaTensor`` and float labels, Hydra/OmegaConf
configs, tensors and numpy arrays as lists, PyTorch Lightning (fit, log, checkpoint, reload),
``mypy --strict`` on a user script, and the ``examples/`` scripts run as a user runs them.

Every value is compared with an independent formula written here (torch.nn.functional's BCE
and cross-entropy, a Dice written out), never with the library's own output copied back.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segloss_registry import CompileWarning, InputError, build_loss

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CPU = torch.device("cpu")


# -- inputs and independent reference formulas ---------------------------------------------------
def binary_inputs(seed: int = 0, n: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    t = (torch.rand(n, 1, size, size, generator=g) > 0.6).float()
    return x, t


def multiclass_inputs(seed: int = 0, n: int = 2, C: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C, H, W) and class ids (N, 1, H, W) int64, as MONAI's loaders shape them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, size, size, generator=g)
    ids = torch.randint(0, C, (n, 1, size, size), generator=g)
    return x, ids


def ref_dice(p: torch.Tensor, t: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum p + sum t + s) per channel over the batch, mean over channels."""
    dims = (0, *range(2, p.dim()))
    inter = (p * t).sum(dims)
    return (1 - (2 * inter + smooth) / (p.sum(dims) + t.sum(dims) + smooth)).mean()


def ref_bce_dice(x: torch.Tensor, t: torch.Tensor, w_bce: float = 1.0, w_dice: float = 1.0) -> torch.Tensor:
    x, t = x.detach().double(), t.double()
    bce = F.binary_cross_entropy_with_logits(x, t)
    return w_bce * bce + w_dice * ref_dice(torch.sigmoid(x), t)


def ref_ce_dice(x: torch.Tensor, ids: torch.Tensor, class_weights: list[float] | None = None,
                w_ce: float = 1.0, w_dice: float = 1.0) -> torch.Tensor:
    x = x.detach().double()
    ids = ids.reshape(x.shape[0], *x.shape[2:]).long()
    w = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float64)
    ce = F.cross_entropy(x, ids, weight=w)
    onehot = F.one_hot(ids, x.shape[1]).movedim(-1, 1).double()
    return w_ce * ce + w_dice * ref_dice(torch.softmax(x, 1), onehot)


def close(value: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(value.detach().double(), ref.detach().double(), rtol=tol, atol=tol)


def compiled_labels(fn) -> list[str]:
    """The ``segloss/compiled[...]`` / ``segloss/eager[...]`` profiler labels of one call of fn."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name.startswith(("segloss/compiled[", "segloss/eager["))]


@contextlib.contextmanager
def strict_warnings():
    """Every warning is an error (a CompileWarning above all), except torch's own deprecation
    notices (inductor imports torch.jit.script_method, which warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch(\.|$)")
        yield


class Holder(nn.Module):
    """A user's model that keeps its criterion as a submodule (module level: torch.load finds it)."""

    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.criterion = criterion

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.conv(x), t)


# -- pickle, deepcopy, torch.save ------------------------------------------------------------------
def _roundtrips(crit):
    yield "pickle", pickle.loads(pickle.dumps(crit))
    yield "deepcopy", copy.deepcopy(crit)
    buf = io.BytesIO()
    torch.save(crit, buf)
    buf.seek(0)
    yield "torch.save", torch.load(buf, weights_only=False)


@pytest.mark.parametrize("called", [False, True], ids=["before-call", "after-call"])
def test_eager_criterion_pickles_deepcopies_and_saves(called):
    x, t = binary_inputs()
    crit = build_loss("bce+dice", weights=[0.3, 0.7], compile=False)
    ref = ref_bce_dice(x, t, 0.3, 0.7)
    if called:
        close(crit(x, t), ref)
    for how, clone in _roundtrips(crit):
        assert type(clone) is type(crit), how
        assert clone.config() == crit.config() and clone.spec == crit.spec, how
        close(clone(x, t), ref)
        total, terms = clone(x, t, return_terms=True)
        close(total, ref)
        assert set(terms) == {"bce", "dice"} and set(clone.last_terms) == {"bce", "dice"}, how
    # and the original still works after being pickled
    close(crit(x, t), ref)


@pytest.mark.compile
def test_compiled_criterion_pickles_before_and_after_a_call():
    x, t = binary_inputs(1)
    ref = ref_bce_dice(x, t, 1.0, 2.0)
    crit = build_loss("bce + 2*dice", compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        before = pickle.loads(pickle.dumps(crit))  # never called: nothing compiled yet
        xg = x.clone().requires_grad_(True)
        loss = crit(xg, t)
        loss.backward()
        close(loss, ref)
        # (inputs that require grad throughout: a no-grad call would compile a second graph)
        assert compiled_labels(lambda: crit(x.clone().requires_grad_(True), t)) == [f"segloss/compiled[{crit.spec}]"]
        after = pickle.loads(pickle.dumps(crit))  # holds a compiled function: rebuilt lazily
        copied = copy.deepcopy(crit)
        for clone in (before, after, copied):
            assert clone.config() == crit.config() and clone.uses_compile(CPU)
            xc = x.clone().requires_grad_(True)
            value = clone(xc, t)
            value.backward()
            close(value, ref)
            close(xc.grad, xg.grad)
            # the clone runs its own compiled graph, not eager
            assert compiled_labels(lambda c=clone: c(x.clone().requires_grad_(True), t)) == [
                f"segloss/compiled[{clone.spec}]"]


def test_torch_save_of_a_module_holding_a_criterion(tmp_path):
    x, t = binary_inputs(2)
    model = Holder(build_loss("bce+dice", weights={"bce": 0.25, "dice": 0.75}, compile=False))
    before = model(x, t)
    close(before, ref_bce_dice(model.conv(x), t, 0.25, 0.75))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded.criterion.config() == model.criterion.config()
    close(loaded(x, t), before)
    # the state_dict route too: a criterion adds no tensors to the model's state
    torch.save(model.state_dict(), tmp_path / "state.pt")
    fresh = Holder(build_loss("bce+dice", weights={"bce": 0.25, "dice": 0.75}, compile=False))
    fresh.load_state_dict(torch.load(tmp_path / "state.pt"))
    close(fresh(x, t), before)


# -- torch.multiprocessing.spawn -------------------------------------------------------------------
def _spawn_worker(rank: int, criterion: nn.Module, out_dir: str) -> None:
    torch.set_num_threads(1)
    x, t = binary_inputs(seed=10 + rank)
    value = criterion(x, t)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"loss": float(value), "config": criterion.config()}))


@pytest.mark.slow
def test_multiprocessing_spawn_with_the_criterion_as_argument(tmp_path):
    import torch.multiprocessing as mp

    crit = build_loss("bce+dice", weights=[0.4, 0.6], compile=False)
    crit(*binary_inputs())  # called once before: its state travels too
    mp.spawn(_spawn_worker, args=(crit, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        x, t = binary_inputs(seed=10 + rank)
        assert got["config"] == crit.config()
        assert got["loss"] == pytest.approx(float(crit(x, t)), rel=1e-6)
        assert got["loss"] == pytest.approx(float(ref_bce_dice(x, t, 0.4, 0.6)), rel=1e-5)


# -- the user's own torch.compile ------------------------------------------------------------------
def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


@pytest.mark.compile
@pytest.mark.parametrize("compile_opt", ["auto", True])
def test_users_fullgraph_compile_around_a_training_step(compile_opt):
    from torch._dynamo.utils import counters

    x, t = binary_inputs(3)
    net = _small_net()
    # eager reference: value and parameter gradients
    ref_loss = build_loss("bce+dice", weights=[0.5, 1.0], compile=False)(net(x), t)
    ref_loss.backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]
    close(ref_loss, ref_bce_dice(net(x), t, 0.5, 1.0))
    net.zero_grad()

    crit = build_loss("bce+dice", weights=[0.5, 1.0], compile=compile_opt)

    def forward(inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return crit(net(inp), target)

    step = torch.compile(forward, fullgraph=True)  # default options: a graph break is an error
    counters.clear()
    with strict_warnings():
        loss = step(x, t)
        loss.backward()  # backward of the user's compiled graph (Tensor.backward inside is a graph break in torch)
        graphs_after_first = counters["stats"]["unique_graphs"]
        for _ in range(2):
            net.zero_grad()
            again = step(x, t)
            again.backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert graphs_after_first >= 1
    # at most one recompile after the first call, none from then on
    assert counters["stats"]["unique_graphs"] <= graphs_after_first + 1, dict(counters["stats"])
    close(loss, ref_loss)
    close(again, ref_loss)
    for g, r in zip((p.grad for p in net.parameters()), ref_grads):
        close(g, r)
    # the criterion's state is not broken by the outer compile: called directly afterwards it
    # takes its own path (compiled for True, eager on the CPU for "auto") without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        direct = crit(net(x), t)
    close(direct, ref_loss)
    assert crit.uses_compile(CPU) is (compile_opt is True)
    want = "compiled" if compile_opt is True else "eager"
    assert compiled_labels(lambda: crit(net(x), t)) == [f"segloss/{want}[{crit.spec}]"]


@pytest.mark.compile
def test_last_terms_are_set_under_the_users_compile():
    x, t = binary_inputs(4)
    net = _small_net()
    crit = build_loss("bce+dice", compile=False)
    step = torch.compile(lambda a, b: crit(net(a), b), fullgraph=True)
    loss = step(x, t)
    with torch.no_grad():
        out = net(x)
    ref = ref_bce_dice(out, t)
    close(loss, ref)
    assert set(crit.last_terms) == {"bce", "dice"}
    close(crit.last_terms["bce"], F.binary_cross_entropy_with_logits(out.double(), t.double()))
    close(crit.last_terms["bce"] + crit.last_terms["dice"], ref)
    assert not any(v.requires_grad for v in crit.last_terms.values())


@pytest.mark.compile
def test_check_inputs_always_compiles_fullgraph_inside_the_users_compile():
    """Value checks need a host sync: inside an outer compile their host-side part is skipped."""
    x, ids = multiclass_inputs(5)
    crit = build_loss("ce+dice", mode="multiclass", check_inputs="always", compile="auto")
    step = torch.compile(lambda a, b: crit(a * 1.0, b), fullgraph=True)
    close(step(x, ids), ref_ce_dice(x, ids))
    # outside a compile the checks still run on every call
    bad = ids.clone()
    bad[0, 0, 0, 0] = 7
    with pytest.raises(InputError, match=r"outside \[0, 3\)"):
        crit(x, bad)


# -- MONAI: MetaTensor and float labels --------------------------------------------------------------
@pytest.mark.compile
@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_metatensor_inputs_to_a_compiled_criterion(mode):
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    if mode == "binary":
        x, t = binary_inputs(6)
        spec, ref = "bce+dice", ref_bce_dice(x, t)
        label = t
    else:
        x, ids = multiclass_inputs(6)
        spec, ref = "ce+dice", ref_ce_dice(x, ids)
        t, label = ids, ids.float()  # MONAI's loaders deliver float labels (N, 1, H, W)
    crit = build_loss(spec, mode=mode, compile=True)
    meta = {"filename_or_obj": "case_000.nii.gz"}
    mx = MetaTensor(x.clone(), affine=torch.eye(4), meta=dict(meta)).requires_grad_(True)
    mt = MetaTensor(label.clone(), affine=torch.eye(4), meta=dict(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        value = crit(mx, mt)
        total, terms = crit(mx, mt, return_terms=True)
    assert type(value) is torch.Tensor and type(total) is torch.Tensor
    assert all(type(v) is torch.Tensor for v in terms.values())
    assert all(type(v) is torch.Tensor for v in crit.last_terms.values())
    close(value, ref)
    value.backward()
    assert mx.grad is not None
    xp = x.clone().requires_grad_(True)
    plain = crit(xp, t)
    plain.backward()
    close(plain, ref)
    close(mx.grad.as_subclass(torch.Tensor), xp.grad)
    # the MetaTensor calls did not switch the criterion to eager for good
    assert crit.uses_compile(CPU)
    assert compiled_labels(lambda: crit(x, t)) == [f"segloss/compiled[{crit.spec}]"]
    assert compiled_labels(lambda: crit(mx.detach(), mt)) == [f"segloss/compiled[{crit.spec}]"]


@pytest.mark.parametrize("layout", ["N1HW", "NHW"])
def test_float_class_ids_in_multiclass_equal_the_integer_ids(layout):
    x, ids = multiclass_inputs(7)
    if layout == "NHW":
        ids = ids[:, 0]
    crit = build_loss("ce+dice", mode="multiclass", compile=False)
    v_long = crit(x, ids)
    v_float = crit(x, ids.float())
    close(v_float, v_long, tol=0)
    close(v_float, ref_ce_dice(x, ids))
    # half-precision labels and a MetaTensor of float labels, as MONAI hands them over
    close(crit(x, ids.half()), v_long, tol=0)
    monai = pytest.importorskip("monai")
    close(crit(x, monai.data.MetaTensor(ids.float())), v_long, tol=0)


def test_float_class_ids_with_ignore_index():
    x, ids = multiclass_inputs(8)
    ids[:, :, :4] = 255
    crit = build_loss("ce", mode="multiclass", ignore_index=255, compile=False)
    v = crit(x, ids.float())
    close(v, crit(x, ids), tol=0)
    valid = ids[:, 0] != 255
    ref = F.cross_entropy(x.double(), ids[:, 0].masked_fill(~valid, 0), reduction="none")[valid].mean()
    close(v, ref)


def test_non_integral_or_out_of_range_float_ids_are_input_errors():
    x, ids = multiclass_inputs(9)
    crit = build_loss("ce+dice", mode="multiclass", check_inputs="always", compile=False)
    crit(x, ids.float())  # a good batch first: the checks run on every call
    frac = ids.float()
    frac[1, 0, 3, 3] = 1.5
    with pytest.raises(InputError, match=r"(?i)whole|integ") as exc:
        crit(x, frac)
    assert "1.5" in str(exc.value) and "multiclass" in str(exc.value)
    big = ids.float()
    big[0, 0, 0, 0] = 3.0
    with pytest.raises(InputError, match=r"outside \[0, 3\)"):
        crit(x, big)


# -- config containers: tensors, numpy arrays, OmegaConf ----------------------------------------------
def _as(kind: str, values: list[float]):
    if kind == "list":
        return list(values)
    if kind == "tensor":
        return torch.tensor(values)
    if kind == "numpy":
        np = pytest.importorskip("numpy")
        return np.asarray(values, dtype=np.float32)
    omegaconf = pytest.importorskip("omegaconf")
    return omegaconf.OmegaConf.create(list(values))


def _plain_json(cfg) -> None:
    """config() holds only plain JSON values (no tensors, numpy scalars or OmegaConf nodes)."""
    def walk(v):
        if isinstance(v, dict):
            assert all(type(k) is str for k in v)
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        else:
            assert v is None or type(v) in (bool, int, float, str), (type(v), v)

    walk(cfg)
    assert json.loads(json.dumps(cfg)) == cfg


@pytest.mark.parametrize("kind", ["tensor", "numpy", "listconfig"])
def test_class_weights_and_weights_as_tensor_numpy_or_listconfig(kind):
    x, ids = multiclass_inputs(11)
    cw = [1.0, 2.0, 0.5]
    crit = build_loss("ce+dice", mode="multiclass", weights=_as(kind, [0.25, 0.75]),
                      params={"ce": {"class_weights": _as(kind, cw)}}, compile=False)
    cfg = crit.config()
    _plain_json(cfg)
    assert cfg["terms"][0]["params"]["class_weights"] == cw
    assert crit.weights == {"ce": 0.25, "dice": 0.75}
    close(crit(x, ids), ref_ce_dice(x, ids, cw, 0.25, 0.75))
    assert build_loss(cfg).config() == cfg


@pytest.mark.parametrize("kind", ["tensor", "numpy"])
def test_pos_weight_and_level_weights_as_tensor_or_numpy(kind):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 8, 8, generator=g)
    t = (torch.rand(2, 3, 8, 8, generator=g) > 0.5).float()
    pw = [1.0, 2.0, 4.0]
    crit = build_loss("bce", mode="multilabel", pos_weight=_as(kind, pw), level_weights=_as(kind, [0.5, 0.5]),
                      compile=False)
    cfg = crit.config()
    _plain_json(cfg)
    assert cfg["terms"][0]["params"]["pos_weight"] == pw and cfg["level_weights"] == [0.5, 0.5]
    ref = F.binary_cross_entropy_with_logits(x.double(), t.double(),
                                             pos_weight=torch.tensor(pw, dtype=torch.float64).view(1, 3, 1, 1))
    close(crit(x, t), ref)
    # two levels at full resolution with weights 1/2, 1/2: the mean of the two losses
    y = torch.randn(2, 3, 8, 8, generator=g)
    ref_y = F.binary_cross_entropy_with_logits(y.double(), t.double(),
                                               pos_weight=torch.tensor(pw, dtype=torch.float64).view(1, 3, 1, 1))
    close(crit([x, y], t), 0.5 * ref + 0.5 * ref_y)


# -- Hydra / OmegaConf ----------------------------------------------------------------------------------
HYDRA_YAML = """\
loss:
  _target_: segloss_registry.build_loss
  spec: ce + dice
  mode: multiclass
  weights: [0.4, 0.6]
  params:
    ce:
      class_weights: [1.0, 2.0, 3.0]
    dice:
      smooth: 0.5
      class_weights: [1.0, 1.0, 1.0]
"""


def test_hydra_instantiate_with_list_parameters(tmp_path):
    pytest.importorskip("hydra")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = tmp_path / "loss.yaml"
    path.write_text(HYDRA_YAML)
    cfg = OmegaConf.load(path)
    crit = instantiate(cfg.loss)  # the default _convert_="none": DictConfig / ListConfig arrive as they are
    assert crit.weights == {"ce": 0.4, "dice": 0.6}
    out = crit.config()
    _plain_json(out)
    assert out["terms"][0]["params"]["class_weights"] == [1.0, 2.0, 3.0]
    assert out["terms"][1]["params"]["smooth"] == 0.5
    x, ids = multiclass_inputs(13)
    onehot = F.one_hot(ids[:, 0], 3).movedim(-1, 1).double()
    ce = F.cross_entropy(x.double(), ids[:, 0], weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    ref = 0.4 * ce + 0.6 * ref_dice(torch.softmax(x.double(), 1), onehot, smooth=0.5)
    close(crit(x, ids), ref)
    # the other _convert_ modes give the same criterion
    for convert in ("partial", "all", "object"):
        assert instantiate(cfg.loss, _convert_=convert).config() == out


def test_omegaconf_and_yaml_round_trips_of_config():
    pytest.importorskip("omegaconf")
    import yaml
    from omegaconf import DictConfig, OmegaConf

    x, ids = multiclass_inputs(14)
    crit = build_loss("0.3*ce(class_weights=[1, 2, 1], label_smoothing=0.1) + dice(per_image=True)",
                      mode="multiclass", ignore_index=255, level_weights=[0.75, 0.25], compile=False)
    cfg = crit.config()
    expected = crit(x, ids)
    node = OmegaConf.create(cfg)
    assert isinstance(node, DictConfig)
    for source in (node, OmegaConf.create(OmegaConf.to_yaml(node)), yaml.safe_load(yaml.safe_dump(cfg)),
                   OmegaConf.to_container(node)):
        rebuilt = build_loss(source)
        assert rebuilt.config() == cfg
        assert rebuilt.spec == crit.spec
        close(rebuilt(x, ids), expected, tol=0)
    # a dict spec inside an OmegaConf node, as a config group would hold it
    d = OmegaConf.create({"ce": 1.0, "dice": {"weight": 2.0, "smooth": 0.0}})
    built = build_loss(d, mode="multiclass", compile=False)
    assert built.weights == {"ce": 1.0, "dice": 2.0}
    _plain_json(built.config())


# -- PyTorch Lightning ---------------------------------------------------------------------------------
def _disk_data(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of a bright disk, and its mask: a net learns it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=g)
    r = torch.randint(size // 8 + 1, size // 4 + 1, (n,), generator=g)
    mask = ((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2 <= r[:, None, None] ** 2)
    mask = mask[:, None].float()
    img = mask * 2 - 1 + 0.3 * torch.randn(n, 1, size, size, generator=g)
    return img, mask


@pytest.mark.slow
def test_lightning_fit_log_checkpoint_and_reload(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class SegModule(pl.LightningModule):
        def __init__(self, loss_config: dict) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
            self.criterion = build_loss(loss_config)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, t = batch
            loss = self.criterion(self(x), t)
            self.log_dict({f"train/{k}": v for k, v in self.criterion.last_terms.items()},
                          on_step=False, on_epoch=True)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.02)

    torch.manual_seed(0)
    img, mask = _disk_data(64, 16, seed=15)
    loader = DataLoader(TensorDataset(img, mask), batch_size=8, shuffle=False)
    config = build_loss("bce+dice", weights=[0.5, 0.5]).config()
    module = SegModule(config)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="csv"),
                         enable_checkpointing=True, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers and the like
        trainer.fit(module, loader)
    metrics = trainer.logged_metrics
    for key in ("train/bce", "train/dice", "train/loss"):
        assert key in metrics and math.isfinite(float(metrics[key])), (key, dict(metrics))
    # the CSV logger holds one row per epoch, and the loss went down
    import csv

    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_epoch = {int(r["epoch"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    terms = {int(r["epoch"]): (float(r["train/bce"]), float(r["train/dice"])) for r in rows if r.get("train/bce")}
    assert sorted(per_epoch) == [0, 1] and sorted(terms) == [0, 1]
    assert per_epoch[1] < per_epoch[0], per_epoch
    for epoch, (b, d) in terms.items():
        assert per_epoch[epoch] == pytest.approx(0.5 * b + 0.5 * d, rel=1e-5)
    # the checkpoint reloads into a working module with the same criterion
    ckpt = trainer.checkpoint_callback.best_model_path
    assert ckpt and Path(ckpt).exists()
    manual = tmp_path / "manual.ckpt"
    trainer.save_checkpoint(manual)
    for path in (ckpt, manual):
        reloaded = SegModule.load_from_checkpoint(path)
        assert reloaded.criterion.config() == module.criterion.config()
        x, t = img[:8], mask[:8]
        with torch.no_grad():
            out = reloaded(x)
            close(reloaded.criterion(out, t), ref_bce_dice(out, t, 0.5, 0.5))
            close(out, module(x))


@pytest.mark.slow
def test_lightning_ddp_spawn_pickles_the_criterion_into_two_processes(tmp_path, monkeypatch):
    """strategy="ddp_spawn" pickles the module, criterion included, into each process (gloo, CPU)."""
    pl = pytest.importorskip("pytorch_lightning")
    from torch.utils.data import DataLoader

    monkeypatch.syspath_prepend(str(EXAMPLES))  # the spawned processes import the module from there
    import lightning_module as ex

    torch.manual_seed(0)
    module = ex.SegModule(build_loss("bce+dice", weights=[0.5, 0.5]).config())
    module.criterion(*binary_inputs())  # called once before: a criterion with state travels
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(ex.disks(16, 16, seed=1), batch_size=4),
                    DataLoader(ex.disks(8, 16, seed=2), batch_size=4))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"train/loss", "train/bce", "train/dice", "val/loss"} <= set(metrics), metrics
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["train/loss"] == pytest.approx(0.5 * metrics["train/bce"] + 0.5 * metrics["train/dice"], rel=1e-5)


# -- mypy --strict on a user's script -------------------------------------------------------------------
def _mypy(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    # the package is found as an installed one (PYTHONPATH entries are mypy's package path, where
    # a package without py.typed is skipped as untyped), not as sources of the checked project
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
           "--no-error-summary", "--hide-error-context", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_mypy_strict_passes_on_a_user_script_and_catches_a_wrong_mode(tmp_path):
    pytest.importorskip("mypy")
    script = ROOT / "tests" / "typing" / "user_script.py"
    bad = tmp_path / "bad_user.py"
    bad.write_text(
        "from segloss_registry import build_loss\n"
        "a = build_loss('dice', mode='binnary')\n"
        "b = build_loss('dice', check_inputs='sometimes')\n"
        "c = build_loss('dice', compile='yes')\n"
    )
    proc = _mypy(tmp_path, script, bad)
    lines = [ln for ln in proc.stdout.splitlines() if ": error:" in ln]
    in_script = [ln for ln in lines if "user_script.py" in ln]
    assert not in_script, proc.stdout + proc.stderr
    # the bad script fails on each line, because the options are Literal types
    flagged = {int(m.group(1)) for ln in lines if (m := re.search(r"bad_user\.py:(\d+):", ln))}
    assert flagged == {2, 3, 4}, proc.stdout + proc.stderr
    # and the user script alone passes: exit 0
    alone = _mypy(tmp_path, script)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    # the script also runs
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"loss \d+\.\d+", run.stdout), run.stdout


def test_signatures_have_real_defaults():
    import inspect

    sig = inspect.signature(build_loss)
    for name in ("mode", "from_logits", "ignore_index", "check_inputs", "compile", "level_weights"):
        default = sig.parameters[name].default
        # a real value, or None for "as in the config / the documented default"; never a sentinel
        assert default is None or type(default) in (str, bool, int, float), (name, default)
        assert "object at 0x" not in str(sig), str(sig)
    assert "Literal" in str(sig.parameters["mode"].annotation) or "Mode" in str(sig.parameters["mode"].annotation)
    assert (Path(__import__("segloss_registry").__file__).parent / "py.typed").exists()


# -- the examples, run as a user runs them -----------------------------------------------------------------
def _run_example(args: list[str], tmp_path: Path, timeout: int = 600) -> str:
    env = {**os.environ, "SEGLOSS_EXAMPLE_SMALL": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _losses(stdout: str) -> list[float]:
    values = [float(v) for v in re.findall(r"loss[ =:]+([-+0-9.eE]+|nan|inf)", stdout)]
    assert values, stdout
    assert all(math.isfinite(v) and v > 0 for v in values), stdout
    return values


@pytest.mark.slow
def test_example_lightning_module(tmp_path):
    pytest.importorskip("pytorch_lightning")
    out = _run_example([str(EXAMPLES / "lightning_module.py"), "--root", str(tmp_path)], tmp_path)
    _losses(out)
    assert "reloaded" in out, out


@pytest.mark.slow
def test_example_hydra(tmp_path):
    pytest.importorskip("hydra")
    out = _run_example([str(EXAMPLES / "hydra" / "train.py"), f"hydra.run.dir={tmp_path / 'run'}", "steps=3"],
                       tmp_path)
    losses = _losses(out)
    assert len(losses) >= 3, out
    assert "criterion '" in out and "rebuilt from loss.yaml" in out, out


@pytest.mark.slow
@pytest.mark.compile
def test_example_monai_loop(tmp_path):
    pytest.importorskip("monai")
    out = _run_example([str(EXAMPLES / "monai_loop.py"), "--steps", "3"], tmp_path)
    losses = _losses(out)
    assert len(losses) >= 3, out
    assert "compiled=True" in out and "MetaTensor -> Tensor" in out, out
