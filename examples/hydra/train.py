"""Train a small net with a loss that Hydra builds from config.yaml (``_target_: segloss_registry.build_loss``).

    python examples/hydra/train.py
    python examples/hydra/train.py steps=5 data.size=16 hydra.run.dir=/tmp/run
    SEGLOSS_EXAMPLE_SMALL=1 python examples/hydra/train.py    # the sizes the test suite uses

The criterion's ``config()`` is saved beside Hydra's own record of the run (``loss.yaml``) and
built back from it, through OmegaConf, at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segloss_registry import CompositeLoss, build_loss


def shapes(n: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images holding a square (class 1) and a disk (class 2) on background 0; ids (N, H, W)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ids = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        r = int(torch.randint(size // 8 + 1, size // 4 + 1, (1,), generator=g))
        cls = 1 + i % (classes - 1)
        square = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
        region = square if cls == 1 else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        ids[i][region] = cls
    img = ids[:, None].float() / (classes - 1) + 0.2 * torch.randn(n, 1, size, size, generator=g)
    return img, ids


@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if os.environ.get("SEGLOSS_EXAMPLE_SMALL") == "1":
        cfg.data.n, cfg.data.size = 8, 16
    torch.manual_seed(cfg.seed)
    criterion: CompositeLoss = instantiate(cfg.loss)  # ListConfig / DictConfig values are fine
    print(f"criterion {criterion.spec!r} ({criterion.options.mode})")
    x, ids = shapes(cfg.data.n, cfg.data.size, cfg.data.classes, cfg.seed)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, cfg.data.classes, 1))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        opt.zero_grad()
        loss = criterion(net(x), ids)
        loss.backward()
        opt.step()
        terms = " ".join(f"{k}={float(v):.4f}" for k, v in criterion.last_terms.items())
        print(f"step {step}: loss={loss.item():.4f} ({terms})")

    # the criterion's own config, saved with the run and built back through OmegaConf
    out = Path(HydraConfig.get().runtime.output_dir) / "loss.yaml"
    out.write_text(OmegaConf.to_yaml(OmegaConf.create(criterion.config())))
    rebuilt = build_loss(OmegaConf.load(out))
    assert rebuilt.config() == criterion.config()
    with torch.no_grad():
        print(f"rebuilt from {out.name}: {rebuilt.spec!r}, loss={float(rebuilt(net(x), ids)):.4f}")


if __name__ == "__main__":
    main()
