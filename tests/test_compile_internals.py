"""Every private torch name the project uses lives in ``segloss_registry._compile``; each has a
fallback that still gives correct results when a torch release removes it. And compile failures
are handled per cause: input-dependent ones for those inputs only, permanent ones for good."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import Tensor

from segloss_registry import CompileWarning, _compile, build_loss
from segloss_registry.testing import make_inputs


def _ref(x: Tensor, t: Tensor) -> Tensor:
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t)
    p = torch.sigmoid(x)
    return bce + 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


def test_mark_dynamic_without_the_private_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch._dynamo, "maybe_mark_dynamic")
    t = torch.zeros(3, 4)
    _compile.mark_dynamic(t, 0)  # a no-op, no error


def test_no_donated_buffers_without_the_config_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    from types import ModuleType

    # (inductor itself needs the real name, so the check swaps in a config module without it)
    monkeypatch.setitem(sys.modules, "torch._functorch.config", ModuleType("torch._functorch.config"))
    monkeypatch.setattr(torch._functorch, "config", sys.modules["torch._functorch.config"], raising=False)
    with _compile.no_donated_buffers():
        pass


def test_allow_retained_backward_without_the_metadata() -> None:
    x = torch.randn(3, requires_grad=True)
    _compile.allow_retained_backward((x * 2).sum())  # an eager grad_fn: nothing to patch, no error
    _compile.allow_retained_backward(torch.zeros(()))  # no grad_fn at all


def test_profiler_flag_without_the_private_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.autograd.profiler, "_is_profiler_enabled")
    assert _compile.profiler_active() is True  # labels always recorded: correct, a little slower
    x, t = make_inputs("binary", 2)
    torch.testing.assert_close(build_loss("bce+dice")(x, t), _ref(x, t))


def test_is_compiling_without_the_public_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    # a torch whose torch.compiler has no is_compiling (before 2.3): the private spelling answers
    fake = SimpleNamespace(compiler=SimpleNamespace(), _dynamo=SimpleNamespace(is_compiling=lambda: True))
    monkeypatch.setattr(_compile, "torch", fake)
    assert _compile.is_compiling() is True
    monkeypatch.setattr(_compile, "torch", SimpleNamespace())
    assert _compile.is_compiling() is False


def test_fresh_function_gives_each_criterion_its_own_code_object() -> None:
    def f(a: int) -> int:
        return a + 1

    g = _compile.fresh_function(f, "segloss_fresh")
    assert g(1) == 2 and g.__code__ is not f.__code__ and g.__name__ == "segloss_fresh"
    assert _compile.fresh_function(len, "x") is len  # not a Python function: returned as it is


def test_inductor_options_keep_only_the_names_this_torch_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor

    known = set(torch._inductor.list_options())
    assert "realize_cpu_opcount_threshold" in known  # torch 2.13 (CI): the option is passed
    assert _compile.inductor_options() == {"realize_cpu_opcount_threshold": 200}
    monkeypatch.setattr(_compile, "INDUCTOR_OPTIONS", {"no_such_inductor_option": 1, "max_fusion_size": 64})
    assert _compile.inductor_options() == {"max_fusion_size": 64}  # a name gone from inductor is left out
    monkeypatch.setattr(_compile, "INDUCTOR_OPTIONS", {"no_such_inductor_option": 1})
    assert _compile.inductor_options() is None  # nothing left: inductor's defaults


def test_inductor_options_without_the_private_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor

    monkeypatch.delattr(torch._inductor, "list_options")
    assert _compile.inductor_options() is None  # inductor's defaults: correct, the focal term a little slower


@pytest.mark.compile
def test_a_criterion_still_compiles_and_is_right_without_the_private_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch._dynamo, "maybe_mark_dynamic")
    x, t = make_inputs("binary", 2, seed=3)
    x.requires_grad_(True)
    crit = build_loss("bce+dice", compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        got = crit(x, t)
    got.backward()
    assert crit._compiled is not None and not crit._compile_failed
    torch.testing.assert_close(got, _ref(x.detach(), t))


# -- failure causes -------------------------------------------------------------------------------------------
def test_permanent_failure_recognises_a_missing_compiler_through_the_chain() -> None:
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        try:
            raise InvalidCxxCompiler()
        except InvalidCxxCompiler as inner:
            raise RuntimeError("backend failed") from inner
    except RuntimeError as exc:
        assert "C++ compiler" in (_compile.permanent_failure(exc) or "")
    assert _compile.permanent_failure(RuntimeError("Unsupported tensor subclass")) is None
    assert _compile.permanent_failure(ImportError("No module named 'triton'")) is not None


def test_an_input_dependent_failure_falls_back_for_those_inputs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    crit = build_loss("bce+dice", compile=True)
    calls: list[torch.dtype] = []

    def flaky() -> Any:
        def fn(x: Tensor, *args: Any) -> Any:
            calls.append(x.dtype)
            if x.dtype == torch.float64:
                raise RuntimeError("this backend has no float64 kernel for one op")
            return crit._compute(x, *args)
        return fn

    monkeypatch.setattr(crit, "_compiled_fn", flaky)
    x32, t = make_inputs("binary", 2, seed=1)
    x64 = x32.double()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.testing.assert_close(crit(x64, t), _ref(x64, t.double()))  # eager for this call
        torch.testing.assert_close(crit(x64, t), _ref(x64, t.double()))  # not retried
        torch.testing.assert_close(crit(x32, t), _ref(x32, t))  # float32 still runs "compiled"
    msgs = [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]
    assert len(msgs) == 1 and "inputs of this kind run eagerly, others still compile" in msgs[0]
    assert "float64" in msgs[0] and "no float64 kernel" in msgs[0]
    assert calls == [torch.float64, torch.float32]
    assert crit.uses_compile(x32.device)


def test_a_permanent_failure_turns_compile_off_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor.exc import InvalidCxxCompiler

    crit = build_loss("bce+dice", compile=True)

    def broken() -> Any:
        def fn(*args: Any) -> Any:
            raise InvalidCxxCompiler()
        return fn

    monkeypatch.setattr(crit, "_compiled_fn", broken)
    x, t = make_inputs("binary", 2, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            torch.testing.assert_close(crit(x, t), _ref(x, t))
    msgs = [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]
    assert len(msgs) == 1 and "no working C++ compiler" in msgs[0] and "running eagerly from now on" in msgs[0]
    assert not crit.uses_compile(x.device)


def test_a_tensor_subclass_is_unwrapped_and_the_result_is_a_plain_tensor() -> None:
    class Tagged(torch.Tensor):
        pass

    x, t = make_inputs("binary", 2, seed=6)
    xs = x.as_subclass(Tagged).requires_grad_(True)
    out = build_loss("bce+dice")(xs, t.as_subclass(Tagged))
    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, _ref(x, t))
    out.backward()
    assert xs.grad is not None and torch.isfinite(xs.grad).all()
