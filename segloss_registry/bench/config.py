"""What one ``segloss bench`` run measures: ``BenchConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BenchConfig", "DTYPES", "numel"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}


@dataclass
class BenchConfig:
    """What to measure. ``shape`` is the logits' shape (N, C, *S); ``also``: more specs to time
    beside ``spec`` (e.g. a single term, to see what composition costs).

    ``peers``: time the peers the plugins register (``register_peers``); ``libraries``: only these
    peer libraries (None: all); ``compiled_peers``: also each peer wrapped in ``torch.compile``;
    ``unchecked``: also ours compiled with ``check_inputs="never"`` (the peers check nothing);
    ``save_policies``: also ours compiled with the save policy that the device does not use by default
    (``CompositeLoss.set_save_policy``: what keeping ``log1p`` for the backward gains and costs).
    """

    spec: str
    mode: str = "binary"
    shape: tuple[int, ...] = (8, 1, 512, 512)
    dtype: str = "float32"
    device: str = "cpu"
    steps: int = 20
    warmup: int = 3
    peers: bool = True
    also: tuple[str, ...] = ()
    eager: bool = True
    compiled: bool = True
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    progress: bool = True
    name: str | None = None
    compiled_peers: bool = True
    libraries: tuple[str, ...] | None = None
    unchecked: bool = False  # also ours compiled with check_inputs="never": what the every-call value checks cost
    save_policies: bool = False  # also ours compiled with the other save policy (save vs recompute)


def numel(shape: tuple[int, ...] | list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
