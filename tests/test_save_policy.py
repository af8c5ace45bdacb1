"""The compiled backward's save policy (``CompositeLoss.set_save_policy``): both policies give the
eager values and gradients, the choice per device, and a clear error for a bad value."""

from __future__ import annotations

import pickle

import pytest
import torch

from segloss_registry import LossConfigError, build_loss
from segloss_registry._compile import saves_softplus

pytestmark = pytest.mark.compile


def test_the_default_saves_only_float64_on_the_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert saves_softplus(cpu, torch.float64, "auto")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):  # computed in float32: the polynomial
        assert not saves_softplus(cpu, dtype, "auto")
    assert not saves_softplus(cuda, torch.float64, "auto")
    assert saves_softplus(cuda, torch.float32, "save")
    assert not saves_softplus(cpu, torch.float64, "recompute")


def _graph_ops(spec: str, policy: str, dtype: torch.dtype) -> set[str]:
    """The aten ops of the forward graph of ``spec`` compiled under ``policy`` (aot_eager backend)."""
    from torch._dynamo.backends.common import aot_autograd

    seen: set[str] = set()

    def fw(gm: torch.fx.GraphModule, _: object) -> torch.fx.GraphModule:
        seen.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    crit = build_loss(spec, compile=True)
    crit.set_save_policy(policy)
    crit._compiled = torch.compile(crit._compute, backend=aot_autograd(fw_compiler=fw), fullgraph=True)
    x = torch.randn(2, 1, 8, 8, dtype=dtype, requires_grad=True)
    crit(x, (torch.rand(2, 1, 8, 8) > 0.5).to(dtype)).backward()
    return seen


def test_cpu_float32_graphs_use_the_polynomial_unless_they_save() -> None:
    """The polynomial replaces log1p exactly where the policy recomputes on a float32 CPU graph."""
    assert "aten.log1p.default" not in _graph_ops("bce+focal", "auto", torch.float32)
    assert "aten.log1p.default" in _graph_ops("bce+focal", "save", torch.float32)
    assert "aten.log1p.default" in _graph_ops("bce+focal", "auto", torch.float64)


@pytest.mark.parametrize("spec, mode", [("bce+dice+focal", "binary"), ("ce+dice", "multiclass")])
def test_both_policies_match_eager_values_and_gradients(spec: str, mode: str) -> None:
    g = torch.Generator().manual_seed(1)
    x0 = 3 * torch.randn(2, 3 if mode == "multiclass" else 1, 24, 20, generator=g)
    t = torch.randint(0, 3, (2, 24, 20), generator=g) if mode == "multiclass" else (
        torch.rand(2, 1, 24, 20, generator=g) > 0.6).float()
    # the reference: float64 eager (an independent path: the closed-form eager Functions)
    xr = x0.double().requires_grad_()
    ref = build_loss(spec, mode=mode, compile=False)(xr, t)
    ref.backward()
    for policy in ("save", "recompute"):  # torch.log1p saved / the polynomial recomputed
        crit = build_loss(spec, mode=mode, compile=True)
        crit.set_save_policy(policy)
        assert crit.save_policy == policy
        x = x0.clone().requires_grad_()
        loss = crit(x, t)
        loss.backward()
        assert crit.uses_compile(x.device)
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
        assert x.grad is not None and xr.grad is not None
        torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-7)


def test_a_bad_policy_is_a_config_error_and_the_policy_survives_pickling() -> None:
    crit = build_loss("bce+dice")
    with pytest.raises(LossConfigError, match="save policy must be one of 'auto', 'save', 'recompute'"):
        crit.set_save_policy("keep")
    crit.set_save_policy("recompute")
    assert pickle.loads(pickle.dumps(crit)).save_policy == "recompute"
    old = pickle.loads(pickle.dumps(crit))
    del old.__dict__["_save_policy"]  # a criterion pickled before the policy existed
    assert pickle.loads(pickle.dumps(old)).save_policy == "auto"
