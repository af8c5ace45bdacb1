"""Sensitivity-specificity loss (Brosch et al. 2015), a plugin for segloss-registry.

T. Brosch, Y. Yoo, L. Y. W. Tang, D. K. B. Li, A. Traboulsee, R. Tam: "Deep convolutional
encoder networks for multiple sclerosis lesion segmentation", MICCAI 2015. Per class c, with
``p`` the probabilities, ``t`` the target and the sums over the valid pixels of the batch
(``per_image=True``: of each sample)::

    sens_c = sum(t (t - p)^2) / sum(t)                  the error on the foreground
    spec_c = sum((1 - t) (t - p)^2) / sum(1 - t)        the error on the background
    L      = mean_c(r * sens_c + (1 - r) * spec_c)

``r`` (default 0.05) weights the sensitivity term; the authors found values from 0.01 to 0.10
to behave alike. Each term is a mean over its own pixels, so a small foreground is not
drowned by a large background. A class without foreground pixels has ``sens_c = 0`` (nothing
to miss); without background pixels ``spec_c = 0``. Prediction and target both empty give 0;
an empty target with prediction ``p`` gives ``(1 - r) mean(p^2)``. Every pixel ignored gives 0.

Binary and multilabel modes use the sigmoid per channel, multiclass the softmax with a
one-hot target. The mean over classes honours ``class_weights`` and ``include_background``
(multiclass), and ``sync="global"`` first sums the per-class sums over the ranks of a
DistributedDataParallel job, as ``dice`` does. NiftyNet's implementation sums over classes
instead of averaging: its value is this one times the number of classes.

Shapes: logits (N, C, *S) with S 1D, 2D or 3D; the target as the mode wants.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, RegionParams, functional_loss, hookimpl, safe_ratio
from segloss_registry.distributed import sync_sum

__all__ = ["SensitivitySpecificityParams", "sensitivity_specificity", "sensitivity_specificity_loss"]

MODES = ("binary", "multiclass", "multilabel")


class SensitivitySpecificityParams(RegionParams):
    """Hyperparameters; per_image, class_weights, include_background and sync come from RegionParams."""

    r: float = Field(0.05, ge=0, le=1, description="weight of the sensitivity term in [0, 1]; 1 - r weights specificity")


def sensitivity_specificity(inp: Inputs, params: SensitivitySpecificityParams) -> Tensor:
    """The sensitivity-specificity loss from normalised inputs; a 0-dim tensor."""
    t = inp.target  # (N, C, *S), 0 where ignored
    squared = (t - inp.prob) ** 2
    negative = inp.masked(1 - t)  # background pixels, ignored ones left out
    sums = tuple(inp.class_sums(x, params.per_image) for x in (squared * t, t, squared * negative, negative))
    # sync="global" (DistributedDataParallel): the sums of every rank, so the loss is the global batch's
    pos_error, pos, neg_error, neg = sync_sum(sums, params.sync, "sensitivity_specificity")
    sens = safe_ratio(pos_error, pos, empty=0.0)
    spec = safe_ratio(neg_error, neg, empty=0.0)
    return inp.class_mean(params.r * sens + (1 - params.r) * spec, params)


def sensitivity_specificity_loss(logits: Tensor, target: Tensor, *, mode: str = "binary", **kwargs: Any) -> Tensor:
    """The sensitivity-specificity loss of ``logits`` against ``target``, without the registry."""
    return functional_loss("sensitivity_specificity", sensitivity_specificity, SensitivitySpecificityParams,
                           MODES, logits, target, mode=mode, **kwargs)


@hookimpl
def register_losses(register: Any) -> None:
    register(
        "sensitivity_specificity",
        sensitivity_specificity,
        params=SensitivitySpecificityParams,
        aliases=("sens_spec",),
        modes=MODES,
        dims=(1, 2, 3),
        summary="r * foreground error + (1 - r) * background error (Brosch et al. 2015)",
    )
