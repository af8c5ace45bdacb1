"""Global loss statistics under DistributedDataParallel (``sync="global"``).

With DDP every rank sees a shard of the batch. A region loss (dice, iou, ...) built on
per-class sums ``I = sum(p t)``, ``P = sum(p)``, ``T = sum(t)`` is not additive, so the mean
of the per-rank losses is not the loss of the global batch. With ``sync="global"`` the
per-class sums are summed over the ranks of the default process group before the ratio is
taken: on every rank the loss equals the single-process loss over the whole global batch.

Gradients. Every rank computes the same ``L(S)`` with ``S = sum_r s_r``. The collective's
backward is again a sum over ranks, so rank r's backward gives
``dL_r/ds_r = sum_q dL/dS = W * dL/dS`` (W = world size). DDP then averages the parameter
gradients over the ranks::

    g = (1/W) sum_r W * dL/dS * ds_r/dtheta = sum_r dL/dS * ds_r/dtheta = dL/dtheta

which is the single-process gradient over the global batch: no rescaling by the user, for
any shard sizes. Terms that stay local (bce, focal, ...) keep their usual DDP meaning: the
value is the rank's own mean, and DDP's averaging gives the global gradient when the
shards have equal sizes.

The collective is ``torch.distributed._functional_collectives.all_reduce`` (the functional
collective that ``torch.compile(fullgraph=True)`` traces) inside a small autograd function
whose backward is the same all-reduce of the gradient; it runs in eager mode and in the
compiled graph alike. ``torch.distributed.nn.functional.all_reduce`` is not used: torch
2.13 deprecates it and refuses it under compile.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ._errors import InputError

__all__ = ["Sync", "SYNCS", "is_global_available", "world_size", "require_process_group", "all_reduce_sum", "sync_sum"]

Sync = Literal["local", "global"]
SYNCS: tuple[str, ...] = ("local", "global")


def is_global_available() -> bool:
    """Whether ``sync="global"`` can run: torch.distributed is built in and a default group exists."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks in the default process group; 1 without one."""
    import torch.distributed as dist

    return dist.get_world_size() if is_global_available() else 1


def require_process_group(owner: str = "loss") -> None:
    """Raise ``InputError`` (never hang) when ``sync="global"`` has no process group to sync over."""
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError(
            f"{owner}: sync='global' needs torch.distributed, which this torch build lacks; use sync='local'"
        )
    if not dist.is_initialized():
        raise InputError(
            f"{owner}: sync='global' needs an initialised default process group; call "
            "torch.distributed.init_process_group(...) first (torchrun sets up its environment), "
            "or use sync='local'"
        )


class _AllReduceSum(torch.autograd.Function):
    """``y = sum_r x_r`` over the default group; backward ``dx_r = sum_q dy_q`` (the same collective)."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override, unused-ignore]
        return _functional_sum(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override, unused-ignore]
        return _functional_sum(grad)


def _functional_sum(x: Tensor) -> Tensor:
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol

    out: Tensor = funcol.wait_tensor(  # type: ignore[no-untyped-call, unused-ignore]
        funcol.all_reduce(x.contiguous(), "sum", dist.group.WORLD)  # type: ignore[arg-type, unused-ignore]
    )
    return out


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over the ranks of the default process group, differentiable and traceable.

    Same shape as ``x`` on every rank. The backward sums the incoming gradients over the
    ranks (see the module docstring for why that makes DDP's gradients exact). Raises
    ``InputError`` without a process group; with one rank it returns ``x``.
    """
    require_process_group("all_reduce_sum")
    if world_size() == 1:
        return x
    out: Tensor = _AllReduceSum.apply(x)  # type: ignore[no-untyped-call, unused-ignore]
    return out


def sync_sum(tensors: tuple[Tensor, ...], sync: str, owner: str = "loss") -> tuple[Tensor, ...]:
    """Sum each tensor over the ranks (``sync="global"``, one collective for all), or return them.

    ``tensors`` must share dtype and device; shapes may differ. ``sync="local"`` returns
    the tensors unchanged. Raises ``InputError`` for ``"global"`` without a process group.
    """
    if sync == "local":
        return tensors
    if sync != "global":
        raise InputError(f"{owner}: sync must be 'local' or 'global' (got {sync!r})")
    require_process_group(owner)
    if world_size() == 1:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    summed: Tensor = _AllReduceSum.apply(flat)  # type: ignore[no-untyped-call, unused-ignore]
    return tuple(s.view_as(t) for s, t in zip(torch.split(summed, [t.numel() for t in tensors]), tensors))
