"""Our own distance maps alone, as the distance-map losses compute them (a ``part`` peer).

What ``surface`` transforms (the target's signed distance map) and what ``hausdorff_dt`` /
``log_hausdorff_dt`` transform (the distance fields of the target and of the thresholded
prediction), through the same shared ops, without the loss and without a backward: the
benchmark gives their share of the whole step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from segloss_registry import InputOptions
from segloss_registry._inputs import normalise
from segloss_registry.ops import distance_field, signed_distance_map

from ._common import PeerFn, param


def distance_maps(terms: Sequence[Any], mode: str) -> PeerFn:
    opts = InputOptions(mode=mode)

    def maps(logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            inp = normalise(logits.detach(), target, opts)
            out = []
            for t in terms:
                spacing = param(t, "spacing")
                sp = None if spacing is None else tuple(spacing)
                if t.info.name == "surface":
                    out.append(signed_distance_map(inp, sp))
                else:
                    out.append(distance_field(inp, "target", sp))
                    out.append(distance_field(inp, "prediction", sp))
            return torch.stack([m.sum() for m in out]).sum()

    return maps
