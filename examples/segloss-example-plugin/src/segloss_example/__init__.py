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

from pydantic import Field
from torch import Tensor

from segloss_registry import Inputs, Loss, RegionParams, losses_hook, safe_ratio
from segloss_registry.distributed import sync_sum

__all__ = ["SensitivitySpecificityParams", "sensitivity_specificity", "sensitivity_specificity_loss"]


class SensitivitySpecificityParams(RegionParams):
    """Hyperparameters; per_image, class_weights, include_background and sync come from RegionParams."""

    r: float = Field(0.05, ge=0, le=1, description="weight of the sensitivity term in [0, 1]; "
                     "1 - r weights specificity")


def sensitivity_specificity(inp: Inputs, params: SensitivitySpecificityParams) -> Tensor:
    """The sensitivity-specificity loss from the core's normalised inputs; a 0-dim tensor.

    Per class c, sums over the valid pixels of the batch (``per_image``: of each sample)::

        L = mean_c(r * sum(t (t - p)^2) / sum(t) + (1 - r) * sum((1 - t) (t - p)^2) / sum(1 - t))

    Shapes (plain function ``sensitivity_specificity_loss(logits, target, mode=...)``):
        binary: logits (N, 1, *S) or (N, *S) and target the same, values in [0, 1];
        multiclass: logits (N, C, *S), target (N, *S) class ids or (N, C, *S);
        multilabel: logits and target (N, C, *S); *S 1D, 2D or 3D. Returns a 0-dim tensor.

    Parameters: r in [0, 1] (default 0.05), and per_image, class_weights, include_background
    and sync of RegionParams.

    Example (probabilities: sens = 0.25 / 2, spec = 0.25 / 2, so L = 0.125):

        >>> import torch
        >>> from segloss_example import sensitivity_specificity_loss
        >>> p = torch.tensor([[[0.5, 0.0, 1.0, 0.5]]])  # (N=1, C=1, 4)
        >>> t = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> sensitivity_specificity_loss(p, t, from_logits=False, r=0.5).item()
        0.125
    """
    t = inp.target  # (N, C, *S), 0 where ignored
    squared = (t - inp.prob) ** 2
    negative = inp.masked(1 - t)  # background pixels, ignored ones left out
    sums = tuple(inp.class_sums(x, params.per_image) for x in (squared * t, t, squared * negative, negative))
    # sync="global" (DistributedDataParallel): the sums of every rank, so the loss is the global batch's
    pos_error, pos, neg_error, neg = sync_sum(sums, params.sync, "sensitivity_specificity")
    sens = safe_ratio(pos_error, pos, empty=0.0)
    spec = safe_ratio(neg_error, neg, empty=0.0)
    return inp.class_mean(params.r * sens + (1 - params.r) * spec, params)


# One declaration: the plain function (sensitivity_specificity_loss(logits, target, mode=..., r=...))
# and what the hook registers. modes and dims default to every mode and 1D, 2D and 3D.
sensitivity_specificity_loss = Loss(
    "sensitivity_specificity",
    sensitivity_specificity,
    SensitivitySpecificityParams,
    aliases=("sens_spec",),
    summary="r * foreground error + (1 - r) * background error (Brosch et al. 2015)",
)

# The hook segloss-registry calls (the entry point names this module).
register_losses = losses_hook(sensitivity_specificity_loss)
