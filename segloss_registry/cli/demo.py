"""``segloss demo``: train a small U-Net on synthetic shapes with a composite loss, and show it."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    from ..demo.data import TASKS
    from ..demo.train import DemoConfig, default_steps

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="train a small U-Net on synthetic shapes with a composite loss; write metrics, pictures, traces",
        description="Generates a synthetic segmentation data set (shapes, or thin structures, on noisy, textured "
        "backgrounds; nothing is downloaded), trains a small U-Net with build_loss(SPEC), shows the per-term "
        "losses, evaluates Dice, IoU and boundary F1 on a held-out split, and writes summary.json, a profiler "
        "trace, TensorBoard scalars (with tensorboard installed) and PNGs (with matplotlib) to --out.",
    )
    p.add_argument("--spec", default=None, help="loss spec (default: 'bce+dice' for binary, 'ce+dice' for multiclass)")
    p.add_argument("--task", choices=TASKS, default=d.task,
                   help="binary: shape vs background; multiclass: disc, rectangle, triangle; thin: thin curves and "
                        "tiny dots under heavy imbalance (default binary)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default {default_steps('binary')} binary, {default_steps('multiclass')} "
                        f"multiclass, {default_steps('thin')} thin)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"peak Adam learning rate, one-cycle schedule (default {d.lr})")
    p.add_argument("--size", type=int, default=d.size, help=f"image side in pixels (default {d.size})")
    p.add_argument("--width", type=int, default=d.width,
                   help=f"channels of the U-Net's first level (default {d.width})")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--schedule", action="append", default=None, metavar="TERM:START->END",
                   help="ramp a term's weight linearly over the run with criterion.set_weights (no recompile), "
                        "e.g. --schedule 'dice:1->0.2' (repeatable, or comma-separated; TERM:VALUE holds it constant)")
    p.add_argument("--compile", action="store_true",
                   help="compile the criterion (default 'auto': compiled on an accelerator, eager on the CPU)")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data, initialisation and batch order (default {d.seed})")
    p.add_argument("--timing-steps", type=int, default=d.timing_steps,
                   help=f"steps timed with the criterion eager and compiled; 0 skips (default {d.timing_steps})")
    p.add_argument("--profile-steps", type=int, default=d.profile_steps,
                   help=f"training steps recorded by the profiler; 0 skips (default {d.profile_steps})")
    p.add_argument("--threads", default="auto",
                   help="CPU threads for torch; 'auto' (default): one per core this process may use; N: N threads "
                        "(--threads 1 helps when other processes keep every core busy)")
    p.add_argument("--no-progress", action="store_true", help="plain periodic lines instead of a progress bar")
    p.set_defaults(func=run)


def parse_threads(text: str, command: str) -> int | str:
    """``--threads``: 'auto' or an int >= 1; anything else is a ``SeglossError``."""
    from .._errors import SeglossError

    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise SeglossError(f"{command}: --threads must be 'auto' or an int >= 1 (got {text!r})")
    return n


def run(args: argparse.Namespace) -> int:
    from ..demo.train import DemoConfig, run_demo

    cfg = DemoConfig(
        spec=args.spec, task=args.task, steps=args.steps, batch_size=args.batch_size, lr=args.lr, size=args.size,
        width=args.width, device=args.device, threads=parse_threads(args.threads, "demo"),
        compile=True if args.compile else "auto", out=args.out, seed=args.seed, timing_steps=args.timing_steps,
        profile_steps=args.profile_steps, progress=not args.no_progress,
        schedule=tuple(args.schedule) if args.schedule else None,
    )
    run_demo(cfg)
    return 0
