"""What ``describe_loss`` and ``segloss describe`` say about a loss: modes, dims, parameters, rules."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.fields import FieldInfo

from ._params import per_class_fields
from ._registry import RecipeInfo, Registered

__all__ = ["describe"]

_RULE_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "minItems", "maxItems")
_METADATA_RULES = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def describe(info: Registered) -> dict[str, Any]:
    """Name, plugin, modes, summary and the parameters (type, default, rule) of one loss, JSON-able.

    A field that has no JSON schema (a ``torch.Tensor``) or no default is described as far as it
    can be (its type, ``"required": True``) and listed under ``not_described``; nothing raises.
    """
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
    if isinstance(info, RecipeInfo):
        out.update(recipe=info.spec, parameters={}, schema=None, not_described=[])
        return out
    try:
        schema: dict[str, Any] | None = info.params.model_json_schema()
    except Exception:  # noqa: BLE001 - a field type pydantic cannot put in a JSON schema
        schema = None
    props = (schema or {}).get("properties", {})
    per_class = set(per_class_fields(info.params))
    params: dict[str, Any] = {}
    missing: list[str] = []
    for fname, f in info.params.model_fields.items():
        prop = props.get(fname)
        if prop is None:
            prop = _field_schema(f)
        if prop is None:
            missing.append(fname)
        required = f.is_required()
        params[fname] = {
            "type": _type_text(prop) if prop is not None else f"no JSON schema ({_annotation_text(f)})",
            "default": None if required else _jsonable(f.default),
            "required": required,
            "description": f.description or "",
            "rules": _rules(prop, f),
            "per_class": fname in per_class,
        }
    out["parameters"] = params
    out["schema"] = schema
    out["not_described"] = missing
    return out


def _field_schema(f: FieldInfo) -> dict[str, Any] | None:
    if f.annotation is None:
        return None
    try:
        return TypeAdapter(f.annotation).json_schema()
    except Exception:  # noqa: BLE001
        return None


def _rules(prop: dict[str, Any] | None, f: FieldInfo) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if prop is not None:
        for part in [prop, *prop.get("anyOf", [])]:
            for k in _RULE_KEYS:
                if k in part:
                    rules[k] = part[k]
    for m in f.metadata:  # constraints that the schema could not carry
        for attr, key in _METADATA_RULES.items():
            value = getattr(m, attr, None)
            if value is not None and key not in rules:
                rules[key] = value
    return rules


def _annotation_text(f: FieldInfo) -> str:
    text = str(f.annotation).replace("typing.", "").replace("torch.", "")
    return text.replace("<class '", "").replace("'>", "")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _type_text(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " | ".join(_type_text(p) for p in prop["anyOf"])
    t = prop.get("type", "any")
    if t == "array":
        return f"list[{_type_text(prop.get('items', {}))}]"
    return {"number": "float", "integer": "int", "boolean": "bool", "string": "str", "null": "None"}.get(t, str(t))
