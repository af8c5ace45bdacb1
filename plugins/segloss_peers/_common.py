"""What the peer builders share: reading our terms' parameters and refusing what a peer cannot do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from segloss_registry.bench import PeerUnsupported

PeerFn = Callable[[Tensor, Tensor], Tensor]


def param(term: Any, name: str, default: Any = None) -> Any:
    """``term.params.<name>``, or ``default`` for a loss whose parameters have no such field."""
    return getattr(term.params, name, default)


def refuse_if(condition: object, why: str) -> None:
    if condition:
        raise PeerUnsupported(why)


def no_class_weights(term: Any) -> None:
    refuse_if(param(term, "class_weights") is not None, f"{term.info.name}: class_weights")


def no_spacing(term: Any) -> None:
    refuse_if(param(term, "spacing") is not None, f"{term.info.name}: spacing (it has none)")


def one_weight(terms: Sequence[Any]) -> float:
    """The weight shared by ``terms`` (a module that sums them has one), or refuse."""
    ws = {float(t.weight) for t in terms}
    refuse_if(len(ws) > 1, "one weight for its terms; these have " + ", ".join(f"{w:g}" for w in sorted(ws)))
    return ws.pop()


def scaled(fn: PeerFn, weight: float) -> PeerFn:
    """``weight * fn(logits, target)`` (``fn`` itself for weight 1)."""
    if weight == 1.0:
        return fn

    def run(logits: Tensor, target: Tensor) -> Tensor:
        return weight * fn(logits, target)

    return run
