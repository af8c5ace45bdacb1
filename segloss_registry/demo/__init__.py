"""``segloss demo``: train a small U-Net on synthetic shapes with a composite loss.

>>> from segloss_registry.demo import DemoConfig, run_demo
>>> result = run_demo(DemoConfig(steps=50, out=None))  # doctest: +SKIP
>>> result.summary["metrics"]["dice"]  # doctest: +SKIP
"""

from __future__ import annotations

from .data import CLASSES, TASKS, SegData, make_samples, make_split, make_splits
from .model import TinyUNet
from .train import DemoConfig, DemoResult, class_counts, default_spec, dice_iou, evaluate, predict, run_demo

__all__ = [
    "CLASSES",
    "TASKS",
    "SegData",
    "make_samples",
    "make_split",
    "make_splits",
    "TinyUNet",
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "default_spec",
    "evaluate",
    "predict",
    "class_counts",
    "dice_iou",
]
