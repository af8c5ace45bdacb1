"""``segloss compare SPEC [SPEC ...]``: train the same model with each loss; one table, one picture."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    from ..demo.compare import CompareConfig
    from ..demo.data import TASKS
    from ..demo.train import default_steps

    d = CompareConfig()
    p = sub.add_parser(
        "compare",
        help="train the same U-Net with each loss spec on a synthetic task; a table and one picture side by side",
        description="Trains the same small U-Net (same initial weights, same batches in the same order) once per "
        "loss spec on a synthetic data set made in code (default: the 'thin' task, thin curves and tiny dots, "
        "about 3 % foreground), and writes a table (held-out Dice, IoU, boundary F1, ms per training step and per "
        "loss call) and one picture of every spec's predictions on held-out images to --out.",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help="loss specs, e.g. bce 'bce+dice' 'focal+dice'")
    p.add_argument("--task", choices=TASKS, default=d.task,
                   help="thin (default): thin curves and tiny dots under heavy imbalance; binary: shapes; "
                        "multiclass: disc, rectangle, triangle")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps per spec (default {default_steps('thin')} thin, {default_steps('binary')} "
                        f"binary, {default_steps('multiclass')} multiclass)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak Adam learning rate, one-cycle (default {d.lr})")
    p.add_argument("--size", type=int, default=d.size, help=f"image side in pixels (default {d.size})")
    p.add_argument("--width", type=int, default=d.width,
                   help=f"channels of the U-Net's first level (default {d.width})")
    p.add_argument("--n-train", type=int, default=d.n_train, help=f"training images (default {d.n_train})")
    p.add_argument("--n-val", type=int, default=d.n_val, help=f"held-out images (default {d.n_val})")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--compile", action="store_true",
                   help="compile the criteria (default 'auto': compiled on an accelerator, eager on the CPU)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data, initial weights and batch order (default {d.seed})")
    p.add_argument("--threads", default="auto", help="CPU threads for torch: 'auto' (default, one per core) or N")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.compare import CompareConfig, run_compare
    from .demo import parse_threads

    cfg = CompareConfig(
        specs=tuple(args.specs), task=args.task, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        size=args.size, width=args.width, n_train=args.n_train, n_val=args.n_val, device=args.device,
        threads=parse_threads(args.threads, "compare"), compile=True if args.compile else "auto", seed=args.seed,
        out=args.out, progress=not args.no_progress,
    )
    run_compare(cfg)
    return 0
