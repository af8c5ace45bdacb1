"""A user's training script: ``mypy --strict`` must pass on it (tests/test_integrations.py).

It builds, calls (both return forms), configures and rebuilds a criterion the way a training
script does, with the types a user writes. Run it with python to see it work.
"""

from __future__ import annotations

import sys
from typing import Any, assert_type

import torch
from torch import Tensor, nn

from segloss_registry import (
    CompileWarning,
    CompositeLoss,
    InputError,
    LossConfigError,
    build_loss,
)


def make_criterion(mode: str = "binary") -> CompositeLoss:
    if mode == "multiclass":
        return build_loss("ce + dice", mode="multiclass", weights={"ce": 1.0, "dice": 0.5},
                          params={"ce": {"class_weights": [1.0, 2.0, 1.0]}}, ignore_index=255,
                          check_inputs="always", compile=False)
    return build_loss("bce+dice", weights=[0.3, 0.7], mode="binary", from_logits=True,
                      check_inputs="first", compile="auto")


def train_step(model: nn.Module, criterion: CompositeLoss, opt: torch.optim.Optimizer,
               x: Tensor, t: Tensor) -> float:
    opt.zero_grad()
    loss: Tensor = criterion(model(x), t)
    assert_type(criterion(model(x), t), Tensor)
    # torch.autograd.backward(loss), not loss.backward(): torch leaves Tensor.backward unannotated,
    # which --strict (disallow_untyped_calls) refuses in a typed function
    torch.autograd.backward(loss)
    opt.step()
    return float(loss.detach())


def log_terms(criterion: CompositeLoss, logits: Tensor, t: Tensor) -> dict[str, float]:
    total, terms = criterion(logits, t, return_terms=True)
    assert_type(total, Tensor)
    assert_type(terms, dict[str, Tensor])
    assert_type(criterion.forward(logits, t, return_terms=True), tuple[Tensor, dict[str, Tensor]])
    named: dict[str, Tensor] = dict(terms)
    last: dict[str, Tensor] = dict(criterion.last_terms)
    out = {k: float(v) for k, v in named.items()}
    out.update({f"last/{k}": float(v) for k, v in last.items()})
    out["total"] = float(total)
    return out


def main() -> int:
    torch.manual_seed(0)
    criterion = make_criterion()
    model = nn.Conv2d(1, 1, 3, padding=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 1, 16, 16)
    t = (torch.rand(2, 1, 16, 16) > 0.5).float()

    value = criterion.forward(model(x), t)
    assert_type(value, Tensor)
    loss = train_step(model, criterion, opt, x, t)
    terms = log_terms(criterion, model(x).detach(), t)

    # configure: the weights at run time, the config as a plain dict, and back
    criterion.set_weights({"bce": 0.5, "dice": 0.5})
    weights: dict[str, float] = criterion.weights
    config: dict[str, Any] = criterion.config()
    rebuilt: CompositeLoss = build_loss(config)
    spec: str = rebuilt.spec
    uses: bool = criterion.uses_compile(torch.device("cpu"))

    multiclass = make_criterion("multiclass")
    logits = torch.randn(2, 3, 8, 8)
    ids = torch.randint(0, 3, (2, 1, 8, 8))
    mc: Tensor = multiclass(logits, ids)
    try:
        build_loss("dice", smooth=-1.0)
    except LossConfigError as exc:
        message: str = str(exc)
        assert "smooth" in message
    try:
        multiclass(logits, ids + 5)
    except InputError:
        pass
    _ = CompileWarning
    print(f"loss {loss:.4f} terms {sorted(terms)} weights {weights} spec {spec!r} compiled {uses} "
          f"multiclass loss {float(mc):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
