"""Two ranks over NCCL: ``sync="global"`` dice on each rank's shard equals dice of the whole batch.

    python profiles/nccl_check.py        # needs two CUDA devices; exits 0 with a note otherwise

The independent value is computed in this file with plain torch (sigmoid, sums over the whole
batch, 1 - (2I + 1) / (P + T + 1)) on rank 0 from the gathered batch.
"""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    from segloss_registry import build_loss

    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(4, 1, 64, 64, generator=g)
    t_all = (torch.rand(4, 1, 64, 64, generator=g) < 0.3).float()
    x = x_all[2 * rank: 2 * rank + 2].cuda().requires_grad_(True)
    t = t_all[2 * rank: 2 * rank + 2].cuda()
    loss = build_loss("dice", sync="global", compile=False)(x, t)
    loss.backward()
    p = torch.sigmoid(x_all)
    want = 1 - (2 * (p * t_all).sum() + 1) / (p.sum() + t_all.sum() + 1)
    ok = torch.allclose(loss.detach().cpu(), want, rtol=1e-5, atol=1e-6)
    print(f"rank {rank}: global dice {loss.item():.6f}, whole batch {want.item():.6f}: {'ok' if ok else 'MISMATCH'}")
    dist.destroy_process_group()
    if not ok:
        raise SystemExit(1)


def main() -> int:
    if torch.cuda.device_count() < 2:
        print(f"nccl check skipped: {torch.cuda.device_count()} CUDA device(s), two needed")
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port), nprocs=2, join=True)  # type: ignore[attr-defined,no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
