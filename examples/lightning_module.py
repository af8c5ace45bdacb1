"""A segloss-registry criterion in a PyTorch Lightning module: train, log the terms, checkpoint, reload.

    python examples/lightning_module.py                 # 3 epochs on 256 synthetic 32x32 images
    python examples/lightning_module.py --epochs 2 --n 32 --size 16 --root /tmp/run
    SEGLOSS_EXAMPLE_SMALL=1 python examples/lightning_module.py   # the sizes the test suite uses

The module keeps the loss's ``config()`` as a hyperparameter, so the checkpoint (and
``hparams.yaml``) records exactly which loss trained the model, and ``load_from_checkpoint``
rebuilds it. ``criterion.last_terms`` holds the detached value of each term of the last call:
``self.log_dict`` logs them next to the total.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from segloss_registry import build_loss


class SegModule(pl.LightningModule):
    def __init__(self, loss_config: dict[str, Any], lr: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()  # loss_config lands in the checkpoint and in hparams.yaml
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 1, 1),
        )
        self.criterion = build_loss(loss_config)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, target = batch
        loss = self.criterion(self(x), target)
        # sync_dist: the epoch means over every process under DDP (a no-op on one device)
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log_dict({f"train/{k}": v for k, v in self.criterion.last_terms.items()}, on_step=False, on_epoch=True,
                      sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, target = batch
        self.log("val/loss", self.criterion(self(x), target), on_epoch=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def disks(n: int, size: int, seed: int) -> TensorDataset:
    """Noisy images of one bright disk each, with its mask (N, 1, H, W)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=g)
    r = torch.randint(size // 8 + 1, size // 4 + 1, (n,), generator=g)
    mask = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2 <= r[:, None, None] ** 2
    mask = mask[:, None].float()
    return TensorDataset(mask * 2 - 1 + 0.5 * torch.randn(n, 1, size, size, generator=g), mask)


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("SEGLOSS_EXAMPLE_SMALL") == "1"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2 if small else 3)
    ap.add_argument("--n", type=int, default=32 if small else 256, help="training images")
    ap.add_argument("--size", type=int, default=16 if small else 32, help="image side")
    ap.add_argument("--root", default=None, help="where logs and checkpoints go (default: a temporary folder)")
    args = ap.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="segloss-lightning-")

    pl.seed_everything(0, verbose=False)
    criterion = build_loss("bce + dice", weights=[0.5, 0.5])  # compile="auto": eager on the CPU
    train = DataLoader(disks(args.n, args.size, seed=1), batch_size=8, shuffle=True)
    val = DataLoader(disks(max(8, args.n // 4), args.size, seed=2), batch_size=8)
    module = SegModule(criterion.config())
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=1, logger=CSVLogger(root, name="segloss"),
        enable_checkpointing=True, default_root_dir=root, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*num_workers.*")  # a CPU toy: no worker processes
        trainer.fit(module, train, val)

    metrics = {k: float(v) for k, v in trainer.logged_metrics.items()}
    for k in sorted(metrics):
        print(f"{k}: {metrics[k]:.4f}")
    assert all(math.isfinite(v) for v in metrics.values()), metrics

    ckpt = trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    reloaded = SegModule.load_from_checkpoint(ckpt)
    x, target = next(iter(val))
    with torch.no_grad():
        a = module.criterion(module(x), target)
        b = reloaded.criterion(reloaded(x), target)
    assert torch.allclose(a, b), (a, b)
    print(f"reloaded {os.path.basename(ckpt)}: criterion {reloaded.criterion.spec!r}, val loss={float(b):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
