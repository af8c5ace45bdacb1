"""segloss-registry: segmentation losses as plugins, composed into one compiled graph.

>>> from segloss_registry import build_loss
>>> criterion = build_loss("bce+dice", weights=[0.3, 0.7])
>>> loss = criterion(logits, target)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ._composite import CompileWarning, CompositeLoss, Term, build_loss
from ._errors import (
    AmbiguousLossError,
    InputError,
    LossConfigError,
    PluginError,
    SeglossError,
    SpecSyntaxError,
    UnknownLossError,
)
from ._functional import functional_loss
from ._hookspecs import hookimpl
from ._inputs import InputOptions, Inputs, safe_ratio
from ._params import LossParams, NoParams, RegionParams, per_class
from ._registry import LossInfo, PluginInfo, PluginWarning, Registry, get_registry

__version__ = "0.1.0"

__all__ = [
    "build_loss",
    "list_losses",
    "describe_loss",
    "list_plugins",
    "hookimpl",
    "CompositeLoss",
    "Term",
    "Inputs",
    "InputOptions",
    "LossParams",
    "NoParams",
    "RegionParams",
    "per_class",
    "LossInfo",
    "PluginInfo",
    "Registry",
    "get_registry",
    "functional_loss",
    "safe_ratio",
    "SeglossError",
    "UnknownLossError",
    "AmbiguousLossError",
    "SpecSyntaxError",
    "LossConfigError",
    "InputError",
    "PluginError",
    "PluginWarning",
    "CompileWarning",
    "__version__",
]


def list_losses(pattern: str = "*") -> list[LossInfo]:
    """Registered losses whose name or alias matches ``pattern`` (wildcards), naturally sorted."""
    return get_registry().list(pattern)


def list_plugins() -> list[PluginInfo]:
    """Every plugin found, with its distribution, version, status and losses."""
    return get_registry().plugins()


def describe_loss(name: str) -> dict[str, Any]:
    """Name, plugin, modes, summary and the parameters (type, default, rule) of one loss, JSON-able."""
    info = get_registry().resolve(name)
    out: dict[str, Any] = {
        "name": info.name,
        "qualified_name": info.qualified_name,
        "plugin": info.plugin,
        "distribution": info.distribution,
        "version": info.version,
        "aliases": list(info.aliases),
        "summary": info.summary,
        "modes": list(info.modes),
        "dims": list(info.dims),
    }
    if info.recipe is not None:
        out["recipe"] = info.recipe
        out["parameters"] = {}
        out["schema"] = None
        return out
    schema = info.params.model_json_schema()
    props = schema.get("properties", {})
    params = {}
    for fname, f in info.params.model_fields.items():
        prop = props.get(fname, {})
        rules: dict[str, Any] = {}
        for part in [prop, *prop.get("anyOf", [])]:
            for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum"):
                if k in part:
                    rules[k] = part[k]
        params[fname] = {
            "type": _type_text(prop),
            "default": f.default,
            "description": f.description or "",
            "rules": rules,
        }
    out["parameters"] = params
    out["schema"] = schema
    return out


def _type_text(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " | ".join(_type_text(p) for p in prop["anyOf"])
    t = prop.get("type", "any")
    if t == "array":
        return f"list[{_type_text(prop.get('items', {}))}]"
    return {"number": "float", "integer": "int", "boolean": "bool", "string": "str", "null": "None"}.get(t, str(t))
