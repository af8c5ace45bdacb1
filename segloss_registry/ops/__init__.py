"""Tensor operations shared by losses: exact distance transforms on the device.

``distance_transform_edt`` and ``signed_distance`` work on any bool ``(N, *S)`` tensor;
``class_distances``, ``signed_distance_map`` and ``distance_field`` give the per-class maps
of a loss's ``Inputs`` (target or thresholded prediction), computed once per call and shared
by every term that asks (``inp.shared``), so ``"dice + surface + hausdorff_dt"`` transforms
the target once. See ``_distance`` for the conventions.

>>> import torch
>>> from segloss_registry.ops import distance_transform_edt, signed_distance
>>> mask = torch.zeros(1, 5, 5, dtype=torch.bool); mask[0, 2, 2] = True
>>> float(distance_transform_edt(mask)[0, 0, 0])  # distance to the nearest True element
2.8284270763397217
>>> float(signed_distance(mask)[0, 2, 2])  # Kervadec's convention: 0 on the inner contour
0.0
"""

from __future__ import annotations

from ._distance import (
    ClassDistances,
    class_distances,
    distance_field,
    distance_transform_edt,
    signed_distance,
    signed_distance_map,
    squared_distance_transform,
)

__all__ = [
    "ClassDistances",
    "class_distances",
    "distance_field",
    "distance_transform_edt",
    "signed_distance",
    "signed_distance_map",
    "squared_distance_transform",
]
