"""Hyperparameters: pydantic models, and validation errors turned into one line per problem."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ._errors import LossConfigError, did_you_mean

__all__ = [
    "LossParams",
    "RegionParams",
    "NoParams",
    "Mode",
    "MODES",
    "validate_params",
    "format_validation_error",
    "odd_int",
    "per_class",
    "per_class_fields",
    "check_class_weights",
    "check_class_mean_mode",
]

Mode = Literal["binary", "multiclass", "multilabel"]
MODES: tuple[str, ...] = ("binary", "multiclass", "multilabel")


_PER_CLASS = "segloss_per_class"


def per_class(**extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` marking a list field as one value per class.

    ``Field(None, json_schema_extra=per_class())``: at call time the core checks that a list
    given for it has one entry per class of the logits (C; 1 in binary mode) and raises an
    ``InputError`` naming the loss, the field and both lengths otherwise. ``describe`` shows
    the mark. Scalars in a ``float | list[float]`` field are left alone.
    """
    return {_PER_CLASS: True, **extra}


def per_class_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The names of the fields of ``model`` marked with ``per_class()``."""
    out = []
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra
        if isinstance(extra, dict) and extra.get(_PER_CLASS):
            out.append(name)
    return tuple(out)


class LossParams(BaseModel):
    """Base class of every loss's hyperparameters: frozen, strict, unknown names rejected.

    ``validate_params(..., mode=...)`` passes the mode as validation context, so a model
    can reject values that make no sense for that mode (``info.context["mode"]``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoParams(LossParams):
    """For a loss without hyperparameters."""


class RegionParams(LossParams):
    """Options shared by the losses built on per-class sums (dice, iou, ...)."""

    per_image: bool = Field(False, description="Reduce per sample, then average; otherwise over the whole batch.")
    class_weights: list[float] | None = Field(
        None,
        description="Weight of each class in the mean over classes (multiclass/multilabel), each >= 0.",
        json_schema_extra=per_class(),
    )
    include_background: bool = Field(
        True, description="multiclass only: False leaves class 0 out of the mean over classes."
    )
    sync: Literal["local", "global"] = Field(
        "local",
        description="'global': sum the per-class statistics over the ranks of the default process group "
        "(DistributedDataParallel), so every rank gets the loss of the global batch; 'local': this rank's batch only.",
    )

    @field_validator("class_weights")
    @classmethod
    def _weights_ok(cls, v: list[float] | None) -> list[float] | None:
        return check_class_weights(v)

    @model_validator(mode="after")
    def _mode_ok(self, info: ValidationInfo) -> RegionParams:
        if self.per_image and self.sync == "global":
            raise ValueError(
                "per_image=True with sync='global' is not supported: per-image statistics need no all-reduce; "
                "use sync='local' (with equal shard sizes DDP's gradient averaging already gives the gradient "
                "of the mean over all images), or per_image=False for statistics over the global batch"
            )
        check_class_mean_mode(self.include_background, self.class_weights, (info.context or {}).get("mode"))
        return self


def check_class_weights(v: list[float] | None) -> list[float] | None:
    """The rule of a ``class_weights`` field (the mean over classes): non-empty, finite, >= 0, not all 0."""
    if v is not None and (not v or any(w < 0 or not math.isfinite(w) for w in v) or sum(v) <= 0):
        raise ValueError(f"class_weights must be a non-empty list of finite values >= 0, not all 0 (got {v})")
    return v


def check_class_mean_mode(include_background: bool, class_weights: list[float] | None, mode: str | None) -> None:
    """The mode rules of the class-mean options (``inp.class_mean``); ``mode`` None: not known yet."""
    if mode is None:
        return
    if not include_background and mode != "multiclass":
        raise ValueError(f"include_background=False needs mode='multiclass' (got mode='{mode}')")
    if class_weights is not None and mode == "binary":
        raise ValueError("class_weights needs mode='multiclass' or 'multilabel' (binary has one class)")
    if class_weights is not None and not include_background and sum(class_weights[1:]) <= 0:
        raise ValueError(f"class_weights must not all be 0 outside class 0 with include_background=False "
                         f"(got {class_weights})")


def odd_int(name: str, v: int) -> int:
    """The rule of a pool or kernel size field: an odd integer >= 1 (``field_validator`` helper)."""
    if v < 1 or v % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 1 (got {v})")
    return v


def _n(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


_RULES: dict[str, Callable[[dict[str, Any]], str]] = {
    "greater_than_equal": lambda c: f"must be >= {_n(c['ge'])}",
    "greater_than": lambda c: f"must be > {_n(c['gt'])}",
    "less_than_equal": lambda c: f"must be <= {_n(c['le'])}",
    "less_than": lambda c: f"must be < {_n(c['lt'])}",
    "finite_number": lambda c: "must be finite",
    "float_type": lambda c: "must be a number",
    "int_type": lambda c: "must be an integer",
    "bool_type": lambda c: "must be true or false",
    "list_type": lambda c: "must be a list",
    "literal_error": lambda c: f"must be one of {c.get('expected')}",
    "string_type": lambda c: "must be a string",
    "none_required": lambda c: "must be None",
}


def format_validation_error(owner: str, err: ValidationError, fields: list[str]) -> str:
    """One line per problem, the first one per field: ``owner: gamma must be >= 0 (got -1.0)``."""
    lines: dict[str, str] = {}
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        field = loc[0] if loc else ""
        if field in lines:  # a union reports one problem per member: keep the first
            continue
        etype = e.get("type", "")
        if etype == "extra_forbidden":
            line = f"unknown parameter '{field}'{did_you_mean(field, fields)}; known: {', '.join(fields) or 'none'}"
        elif etype in ("value_error", "assertion_error"):
            line = str(e.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        else:
            rule = _RULES.get(etype)
            text = rule(e.get("ctx") or {}) if rule else str(e.get("msg", "is invalid")).lower()
            line = f"{'.'.join(loc) or 'value'} {text} (got {e.get('input')!r})"
        lines[field] = f"{owner}: {line}"
    return "\n".join(lines.values())


def validate_params(owner: str, model: type[LossParams], values: dict[str, Any], mode: str | None = None) -> LossParams:
    """Validate ``values`` into ``model``; raise ``LossConfigError`` with one line per problem."""
    clean = {k: _lists(v) for k, v in values.items()}
    try:
        return model.model_validate(clean, context={"mode": mode})
    except ValidationError as err:
        raise LossConfigError(format_validation_error(owner, err, list(model.model_fields))) from None


def _lists(v: Any) -> Any:
    # spec strings and configs may carry tuples where the model wants lists
    if isinstance(v, tuple):
        return [_lists(x) for x in v]
    return v
