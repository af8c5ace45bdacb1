"""The compiled backward's save policy (``CompositeLoss.set_save_policy``): both policies give the
eager values and gradients, the choice per device, and a clear error for a bad value."""

from __future__ import annotations

import pickle

import pytest
import torch

from segloss_registry import LossConfigError, build_loss
from segloss_registry._compile import saves_softplus

pytestmark = pytest.mark.compile


def test_the_default_saves_on_the_cpu_and_recomputes_on_accelerators() -> None:
    assert saves_softplus(torch.device("cpu"), "auto")
    assert not saves_softplus(torch.device("cuda", 0), "auto")
    assert saves_softplus(torch.device("cuda", 0), "save")
    assert not saves_softplus(torch.device("cpu"), "recompute")


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
    for policy in ("save", "recompute"):
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
