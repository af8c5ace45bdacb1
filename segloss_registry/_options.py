"""The options common to every term of a criterion, as one frozen pydantic model.

``build_loss`` validates them once, with the same one-line errors as the loss parameters;
``CompositeLoss.config()`` writes them back from this model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._errors import LossConfigError, did_you_mean
from ._params import MODES, format_validation_error

__all__ = ["LossOptions", "Mode", "CheckInputs", "CompileMode", "plain", "OPTION_NAMES"]

Mode = Literal["binary", "multiclass", "multilabel"]
CheckInputs = Literal["auto", "always", "deferred", "first", "never"]
CompileMode = Literal["auto"] | bool
CHECK_CHOICES = ("auto", "always", "deferred", "first", "never")
_INT64 = (-(2**63), 2**63 - 1)


def plain(value: Any) -> Any:
    """``value`` as plain JSON-able Python: Mappings -> dict, Sequences -> list, tensors/arrays -> lists.

    The boundary where OmegaConf's DictConfig/ListConfig, tuples, 1-D tensors and numpy arrays
    become the dicts, lists and numbers that the rest of the library (and ``config()``) holds.
    """
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    tolist = getattr(value, "tolist", None)
    if tolist is not None and hasattr(value, "shape") and hasattr(value, "dtype"):  # torch.Tensor, numpy
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        return plain(value.tolist())
    if hasattr(value, "item") and type(value).__module__ == "numpy":  # a numpy scalar
        return value.item()
    if isinstance(value, Mapping):
        return {plain(k) if not isinstance(k, str) else k: plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class InputOptions:
    """The input view of ``LossOptions`` (what the input checks and the normalisation read): a plain
    frozen dataclass, so that a compiled graph guards on three constants. Built by
    ``LossOptions.inputs``; not validated by itself."""

    mode: str = "binary"
    from_logits: bool = True
    ignore_index: int | None = None


class LossOptions(BaseModel):
    """``mode``, ``from_logits``, ``ignore_index``, ``check_inputs``, ``compile``, ``level_weights``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: Mode = Field("binary", description="binary, multiclass (softmax) or multilabel (sigmoid per channel)")
    from_logits: bool = Field(True, description="False: the inputs are probabilities")
    ignore_index: int | None = Field(None, description="target value whose pixels no term sees")
    check_inputs: CheckInputs = Field(
        "auto", description="value checks: auto (every call; read one call late on accelerators), "
        "always, deferred, first, never"
    )
    compile: CompileMode = Field("auto", description="auto (on accelerators), True, or False")
    level_weights: tuple[float, ...] | None = Field(
        None, description="deep supervision: one weight per level, normalised to sum 1"
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        if v not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}{did_you_mean(str(v), MODES)} (got {v!r})")
        return v

    @field_validator("from_logits", mode="before")
    @classmethod
    def _from_logits(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError(f"from_logits must be True or False (got {v!r})")
        return v

    @field_validator("ignore_index", mode="before")
    @classmethod
    def _ignore_index(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"ignore_index must be an int or None (got {v!r})")
        if v is not None and not _INT64[0] <= v <= _INT64[1]:
            raise ValueError(f"ignore_index must be an int64 value, in [-2**63, 2**63 - 1] (got {v})")
        return v

    @field_validator("check_inputs", mode="before")
    @classmethod
    def _check(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in CHECK_CHOICES:
            raise ValueError(
                f"check_inputs must be one of {', '.join(repr(c) for c in CHECK_CHOICES)}"
                f"{did_you_mean(str(v), CHECK_CHOICES)} (got {v!r})"
            )
        return v

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, v: Any) -> Any:
        if not (v == "auto" and isinstance(v, str)) and not isinstance(v, bool):
            kind = type(v).__name__ if type(v).__module__ == "builtins" else f"{type(v).__module__}.{type(v).__name__}"
            raise ValueError(f"compile must be 'auto', True or False (got {v!r} of type {kind})")
        return v

    @field_validator("level_weights", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> Any:
        if v is None:
            return v
        v = plain(v)
        if isinstance(v, (str, bytes)) or not isinstance(v, list):
            raise ValueError(f"level_weights must be a list of numbers (got {type(v).__name__})")
        return tuple(check_level_weights(v))

    @classmethod
    def build(cls, values: Mapping[str, Any], where: str = "build_loss") -> LossOptions:
        """Validate ``values``; raise ``LossConfigError`` with one line per problem, prefixed by ``where``."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as err:
            raise LossConfigError(format_validation_error(where, err, list(cls.model_fields))) from None

    @property
    def inputs(self) -> InputOptions:
        """What the input checks and ``normalise`` need (mode, from_logits, ignore_index)."""
        return InputOptions(self.mode, self.from_logits, self.ignore_index)

    def dump(self) -> dict[str, Any]:
        """The options as ``config()`` writes them (plain JSON values)."""
        d = self.model_dump()
        d["level_weights"] = None if self.level_weights is None else list(self.level_weights)
        return d


def check_level_weights(values: Sequence[Any], n: int | None = None) -> list[float]:
    """Finite numbers >= 0, not all 0 (and ``n`` of them when given); ``ValueError`` otherwise."""
    out: list[float] = []
    for w in values:
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ValueError(f"level_weights must be numbers (got {w!r} in {list(values)!r})")
        try:
            out.append(float(w))
        except OverflowError:
            raise ValueError(
                f"level_weights must be finite and >= 0 (got an int of {int(w).bit_length()} bits)"
            ) from None
    if n is not None and len(out) != n:
        raise ValueError(f"{len(out)} level_weights for {n} levels of logits; give one weight per level")
    if not out:
        raise ValueError("level_weights must not be empty")
    if any(not math.isfinite(w) or w < 0 for w in out):
        raise ValueError(f"level_weights must be finite and >= 0 (got {out})")
    if not any(out):
        raise ValueError(f"level_weights are all 0 ({out}); at least one must be > 0")
    return out


OPTION_NAMES = ("mode", "from_logits", "ignore_index", "check_inputs", "compile", "weights", "params", "level_weights")
