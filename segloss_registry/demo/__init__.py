"""``segloss demo`` and ``segloss compare``: train a small U-Net on synthetic data with composite losses.

>>> from segloss_registry.demo import CompareConfig, DemoConfig, run_compare, run_demo
>>> result = run_demo(DemoConfig(steps=50, out=None))  # doctest: +SKIP
>>> result.summary["metrics"]["dice"]  # doctest: +SKIP
>>> table = run_compare(CompareConfig(specs=("bce", "bce+dice"), task="thin"))  # doctest: +SKIP
"""

from __future__ import annotations

from .compare import CompareConfig, CompareResult, CompareRow, run_compare
from .data import CLASSES, TASKS, SegData, make_samples, make_split, make_splits, make_thin_samples
from .model import TinyUNet
from .train import (
    DemoConfig,
    DemoResult,
    WeightSchedule,
    boundary_f1,
    class_counts,
    default_spec,
    dice_iou,
    evaluate,
    parse_schedule,
    predict,
    run_demo,
)

__all__ = [
    "CLASSES",
    "TASKS",
    "SegData",
    "make_samples",
    "make_thin_samples",
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
    "boundary_f1",
    "WeightSchedule",
    "parse_schedule",
    "CompareConfig",
    "CompareResult",
    "CompareRow",
    "run_compare",
]
