"""Predictable compilation, counted with dynamo's own counters.

The compiled criteria here run on dynamo's ``CompileCounterWithBackend("aot_eager")`` (it
counts the graphs dynamo hands to the backend, which AOTAutograd then partitions as for inductor
and runs eagerly: the CPU's save policy, selective activation checkpointing, is partitioned
as in production): the number of compiles is dynamo's decision, not the backend's, so the
counts are those of the inductor path, without paying for inductor. The last test runs inductor for real, with a broken C++ compiler, in a
subprocess with its own empty cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pydantic
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from segloss_registry import CompileWarning, _compile, build_loss, list_losses

pytestmark = pytest.mark.compile


@pytest.fixture
def compile_counts() -> Iterator[dict[str, CompileCounterWithBackend]]:
    """Patch ``torch.compile`` so each compiled function gets its own ``CompileCounterWithBackend``
    (keyed by the function's name, which is per criterion); every other argument
    (fullgraph, dynamic) is the library's own, less inductor's ``options``, which no other
    backend takes (they are ``_compile.inductor_options()``, checked here)."""
    real = torch.compile
    made: dict[str, CompileCounterWithBackend] = {}

    def counted(fn: Any, **kwargs: Any) -> Any:
        assert "backend" not in kwargs
        assert kwargs.pop("options", None) == _compile.inductor_options()
        made[fn.__name__] = CompileCounterWithBackend("aot_eager")
        return real(fn, backend=made[fn.__name__], **kwargs)

    counters.clear()
    with mock.patch("torch.compile", counted), warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # a fallback to eager would hide a compile problem
        yield made


def _batch(mode: str, n: int, C: int, size: tuple[int, ...], requires_grad: bool = True) -> tuple[torch.Tensor, ...]:
    x = torch.randn(n, C, *size, requires_grad=requires_grad)
    if mode == "multiclass":
        t = torch.randint(0, C, (n, *size))
    else:
        t = (torch.rand(n, C, *size) > 0.6).float()
    return x, t


@pytest.mark.parametrize(
    "spec, mode, C, train_size, val_size",
    [
        ("bce+dice+focal", "binary", 1, (32, 32), (48, 40)),
        ("ce+dice", "multiclass", 3, (24, 24), (40, 40)),
        ("focal+dice", "binary", 1, (8, 16, 16), (12, 20, 20)),
    ],
)
def test_train_loop_with_short_last_batch_and_validation_compiles_at_most_twice(
    compile_counts: dict[str, CompileCounterWithBackend], spec: str, mode: str, C: int,
    train_size: tuple[int, ...], val_size: tuple[int, ...],
) -> None:
    crit = build_loss(spec, mode=mode, compile=True)
    ref = build_loss(spec, mode=mode, compile=False)
    for _epoch in range(2):
        for n in (4, 4, 4, 3):  # 15 samples in batches of 4: the last one is short
            x, t = _batch(mode, n, C, train_size)
            loss = crit(x, t)
            loss.backward()
            g = x.grad.clone()
            x.grad = None
            expected = ref(x, t)
            expected.backward()
            torch.testing.assert_close(loss, expected)
            torch.testing.assert_close(g, x.grad)
        with torch.no_grad():  # validation at another image size, batches of 2 and 5
            for n in (2, 5):
                x, t = _batch(mode, n, C, val_size, requires_grad=False)
                torch.testing.assert_close(crit(x, t), ref(x, t))
    count = compile_counts[crit._compute.__name__]
    # one graph with autograd, one under no_grad; each serves every batch and image size
    assert count.frame_count == 2, f"{spec}: {count.frame_count} compiles"
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_a_new_hyperparameter_is_a_new_loss_never_a_recompile(compile_counts: dict[str, CompileCounterWithBackend]) -> None:
    a = build_loss("focal(gamma=2) + dice", compile=True)
    b = build_loss("focal(gamma=3) + dice", compile=True)
    # each criterion traces its own code object, so dynamo keeps one cache per criterion
    assert a._compute.__code__ is not b._compute.__code__
    assert a._compute.__name__ != b._compute.__name__
    with pytest.raises(pydantic.ValidationError):  # hyperparameters are frozen: no way to mutate a built loss
        a.terms[0].params.gamma = 3.0  # type: ignore[misc]
    x, t = _batch("binary", 4, 1, (16, 16))
    values = {}
    for crit in (a, b, a, b, a):
        values[crit.spec] = crit(x, t)
    for crit in (a, b):
        assert compile_counts[crit._compute.__name__].frame_count == 1
    # the two losses really differ: gamma reaches the graph
    p = torch.sigmoid(x.detach())
    tt = t
    pt = p * tt + (1 - p) * (1 - tt)
    bce = -(tt * torch.log(p) + (1 - tt) * torch.log(1 - p))
    alpha_t = 0.25 * tt + 0.75 * (1 - tt)
    dice = 1 - (2 * (p * tt).sum() + 1) / (p.sum() + tt.sum() + 1)
    for gamma, crit in ((2, a), (3, b)):
        expected = (alpha_t * (1 - pt) ** gamma * bce).mean() + dice
        torch.testing.assert_close(values[crit.spec].detach(), expected, rtol=1e-5, atol=1e-6)
    assert not counters["graph_break"], dict(counters["graph_break"])


def _all_losses(mode: str) -> str:
    return "+".join(info.name for info in list_losses() if info.recipe is None and 2 in info.dims and mode in info.modes)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_every_loss_compiles_into_one_graph_without_a_break(
    compile_counts: dict[str, CompileCounterWithBackend], mode: str
) -> None:
    """One composite of every registered 2D loss of the mode: one graph, forward and backward."""
    spec = _all_losses(mode)
    C = 1 if mode == "binary" else 3
    crit = build_loss(spec, mode=mode, compile=True)
    ref = build_loss(spec, mode=mode, compile=False)
    x, t = _batch(mode, 2, C, (24, 24))
    loss, terms = crit(x, t, return_terms=True)
    loss.backward()
    assert compile_counts[crit._compute.__name__].frame_count == 1, spec
    assert not counters["graph_break"], dict(counters["graph_break"])
    _, expected = ref(x, t, return_terms=True)
    assert terms.keys() == expected.keys() and len(terms) >= 5
    for key in terms:
        torch.testing.assert_close(terms[key], expected[key], msg=lambda m, k=key: f"{k}: {m}")


_NO_CXX = textwrap.dedent(
    """
    import json, warnings
    import torch
    import torch._inductor.config as inductor_config
    from segloss_registry import CompileWarning, build_loss

    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    t = (torch.rand(2, 1, 16, 16) > 0.5).float()
    crit = build_loss("bce+dice", compile=True)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",)}), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = crit(x, t)
        first.backward()
        grad = x.grad.clone()
        second = crit(x, t)
    x.grad = None
    eager = build_loss("bce+dice", compile=False)(x, t)
    eager.backward()
    print(json.dumps({
        "warnings": [f"{w.category.__name__}: {w.message}" for w in seen if issubclass(w.category, CompileWarning)],
        "first": first.item(), "second": second.item(), "eager": eager.item(),
        "grad_equal": bool(torch.equal(grad, x.grad)),
        "uses_compile": crit.uses_compile(x.device),
    }))
    """
)


def test_no_cxx_compiler_gives_one_warning_and_eager_results(tmp_path: Any) -> None:
    env = dict(os.environ)
    env.update(
        TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),  # nothing cached: inductor must compile
        TORCHINDUCTOR_FX_GRAPH_CACHE="0",
        TORCHINDUCTOR_AUTOGRAD_CACHE="0",
        TORCHINDUCTOR_COMPILE_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run([sys.executable, "-c", _NO_CXX], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "running eagerly" in out["warnings"][0]
    assert out["first"] == out["second"] == out["eager"]
    assert out["grad_equal"]
    assert out["uses_compile"] is False


def test_per_term_gradients_with_retain_graph_work_across_shapes(compile_counts: dict[str, CompileCounterWithBackend]) -> None:
    """Dynamic sizes compile the backward ahead of time; ``retain_graph=True`` must still work."""
    crit = build_loss("bce+dice", compile=True)
    ref = build_loss("bce+dice", compile=False)
    for n, size in ((4, 16), (3, 20)):
        x, t = _batch("binary", n, 1, (size, size))
        for c in (crit, ref):
            _, terms = c(x, t, return_terms=True)
            grads = [torch.autograd.grad(v, x, retain_graph=True)[0] for v in terms.values()]
            if c is crit:
                got = grads
        for g, e in zip(got, grads):
            torch.testing.assert_close(g, e)
    assert compile_counts[crit._compute.__name__].frame_count == 1
