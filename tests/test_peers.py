"""Peers through the ``register_peers`` hook: the built-in ones compute our losses (their values
agree with ours, and with formulas written here), the greedy cover, and third-party peers."""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from segloss_registry import NoParams, build_loss, get_registry, hookimpl
from segloss_registry.bench import (
    BenchConfig,
    PeerUnsupported,
    cover,
    library_peer,
    list_peers,
    make_inputs,
    run_benchmark,
)
from segloss_registry.testing import registered_plugin


def _value(spec: str, mode: str, library: str, C: int = 3, seed: int = 3, **kw: Any) -> tuple[Tensor, Tensor]:
    x, t = make_inputs(mode, (2, 1 if mode == "binary" else C, 12, 10), seed=seed)
    ours = build_loss(spec, mode=mode, compile=False, **kw)
    peer = library_peer(ours, library)
    assert not isinstance(peer, str), peer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peer[1](x, t).detach(), ours(x, t).detach()


CASES = [
    ("bce+dice+focal", "binary"), ("0.3*bce + 0.7*dice(smooth=0.5)", "binary"), ("iou+tversky", "binary"),
    ("focal(alpha=None, gamma=1.5)", "multilabel"), ("dice(per_image=True)+iou", "multilabel"),
    ("ce+dice", "multiclass"), ("ce(label_smoothing=0.1)+dice(include_background=False)", "multiclass"),
    ("tversky(alpha=0.4, beta=0.6)", "multiclass"),
]


@pytest.mark.parametrize("spec, mode", CASES)
def test_plain_peers_compute_our_losses(spec: str, mode: str) -> None:
    got, want = _value(spec, mode, "plain")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec, mode", [c for c in CASES if "label_smoothing" not in c[0]]
                         + [("dice+surface", "binary"), ("hausdorff_dt", "multiclass")])
def test_monai_peers_compute_our_losses(spec: str, mode: str) -> None:
    pytest.importorskip("monai")
    if "focal" in spec and mode == "multiclass":
        pytest.skip("MONAI's multiclass focal averages over classes")
    got, want = _value(spec, mode, "MONAI")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_monai_refuses_what_it_cannot_reproduce() -> None:
    pytest.importorskip("monai")
    why = library_peer(build_loss("ce(label_smoothing=0.1)+dice", mode="multiclass"), "MONAI")
    assert isinstance(why, str) and "label_smoothing" in why
    assert isinstance(library_peer(build_loss("surface", spacing=[1.0, 2.0]), "MONAI"), str)


def test_plain_focal_is_torchvisions_formula_and_multiclass_softmax_form() -> None:
    x, t = make_inputs("binary", (2, 1, 12, 10), seed=5)
    got, _ = _value("focal(alpha=0.25, gamma=2)", "binary", "plain", seed=5)
    p = torch.sigmoid(x.detach())
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    pt = p * t + (1 - p) * (1 - t)
    want = ((0.25 * t + 0.75 * (1 - t)) * (1 - pt) ** 2 * ce).mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got, ours = _value("focal(alpha=None)", "multiclass", "plain", seed=6)
    x, ids = make_inputs("multiclass", (2, 3, 12, 10), seed=6)
    logp = F.log_softmax(x.detach(), 1).gather(1, ids.unsqueeze(1))
    torch.testing.assert_close(got, (-(1 - logp.exp()) ** 2 * logp).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, ours, rtol=1e-5, atol=1e-6)


def test_seed_covers_greedily_multi_term_first_and_falls_back() -> None:
    x, t = make_inputs("binary", (2, 1, 16, 16), seed=4)
    ours = build_loss("bce+dice+iou", compile=False)
    name, fn = library_peer(ours, "seed")  # type: ignore[misc]
    assert name == "seed DiceBCELoss + IoULoss"
    p = torch.sigmoid(x.detach())
    i, s = (p * t).sum(), p.sum() + t.sum()
    want = F.binary_cross_entropy(p, t) + (1 - (2 * i + 1) / (s + 1)) + (1 - (i + 1) / (s - i + 1))
    torch.testing.assert_close(fn(x, t).detach(), want, rtol=1e-5, atol=1e-6)
    # unequal weights: DiceBCELoss refuses; the seed has no BCE on its own, and the row says why
    why = library_peer(build_loss("0.5*bce+dice"), "seed")
    assert isinstance(why, str) and "DiceBCELoss" in why and "one weight" in why
    assert isinstance(library_peer(build_loss("dice", mode="multiclass"), "seed"), str)
    assert "binary only" in str(library_peer(build_loss("dice", mode="multiclass"), "seed"))


def _foo(inp: Any, params: Any) -> Tensor:
    return inp.prob.mean()


def _third_party(requires: Sequence[str] = (), broken: bool = False) -> types.ModuleType:
    mod = types.ModuleType("segloss_thirdparty_peers")

    def build(terms: Sequence[Any], mode: str) -> Any:
        (t,) = terms
        if mode != "binary":
            raise PeerUnsupported("binary only here")
        return lambda x, y: t.weight * torch.sigmoid(x).mean()

    @hookimpl
    def register_losses(register: Any) -> None:
        register("foo_mean", _foo, params=NoParams, summary="mean probability")

    @hookimpl
    def register_peers(register: Any) -> None:
        if broken:
            raise RuntimeError("no peers today")
        register("foolib", "FooMean", ("foo_mean",), build, requires=requires)

    mod.register_losses = register_losses  # type: ignore[attr-defined]
    mod.register_peers = register_peers  # type: ignore[attr-defined]
    return mod


def test_a_third_party_plugin_registers_a_peer_the_bench_times() -> None:
    with registered_plugin(_third_party(), "thirdparty_peers"):
        assert any(p.library == "foolib" and p.plugin == "thirdparty_peers" for p in list_peers())
        rep = run_benchmark(BenchConfig("2*foo_mean", shape=(2, 1, 8, 8), steps=2, warmup=0, compiled=False,
                                        compiled_peers=False, progress=False))
        row = next(m for m in rep.results if m.name == "foolib FooMean (eager)")
        ours = next(m for m in rep.results if m.reference)
        assert row.times_ms and row.value == pytest.approx(ours.value)
        why = library_peer(build_loss("foo_mean", mode="multilabel"), "foolib")
        assert why == "foolib FooMean: binary only here"
    assert not any(p.library == "foolib" for p in list_peers())


def test_a_missing_library_and_a_broken_hook_are_reported_not_fatal() -> None:
    with registered_plugin(_third_party(requires=("no_such_module_xyz",)), "thirdparty_peers"):
        why = library_peer(build_loss("foo_mean"), "foolib")
        assert why == "foolib: not installed (pip install no_such_module_xyz)"
    with registered_plugin(_third_party(broken=True), "thirdparty_peers"):
        with pytest.warns(UserWarning, match="register_peers hook raised RuntimeError: no peers today"):
            peers = list_peers()
        assert not any(p.library == "foolib" for p in peers) and any(p.library == "plain" for p in peers)


def test_cover_prefers_the_larger_peer_and_uses_a_peer_twice() -> None:
    terms = build_loss("dice+bce+0.5*dice").terms
    peers = [p for p in list_peers() if p.library == "seed"]
    plan = cover(terms, peers, "binary")
    assert not isinstance(plan, str)
    assert [(p.name, [t.key for t in ts]) for p, ts, _ in plan.parts] == [
        ("DiceBCELoss", [terms[1].key, terms[0].key]), ("DiceLoss", [terms[2].key])]
    assert plan.name == "seed DiceBCELoss + DiceLoss"
    why = cover(build_loss("dice(smooth=0)").terms, peers, "binary")
    assert why == "seed DiceLoss: dice: the seed's smooth is 1"


def test_the_peers_plugin_is_loaded_without_importing_monai() -> None:
    info = next(p for p in get_registry().plugins() if p.name == "segloss_peers")
    assert info.status == "loaded" and not info.problems
    import segloss_peers  # noqa: F401

    assert "segloss_peers._monai" in sys.modules
