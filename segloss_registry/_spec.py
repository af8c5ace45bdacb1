"""Spec parsing: ``"0.5*focal(gamma=2) + dice"``, dicts and lists, into terms. Uses ``ast``, never ``eval``."""

from __future__ import annotations

import ast
import io
import math
import tokenize
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import LossConfigError, SpecSyntaxError

__all__ = ["TermSpec", "parse_spec", "to_terms", "format_term", "MAX_SPEC_LENGTH"]

MAX_SPEC_LENGTH = 4000


@dataclass
class TermSpec:
    """One term as written: a (possibly qualified) loss name, its factor and inline parameters."""

    name: str
    weight: float | None = None  # None: not written (1)
    params: dict[str, Any] = field(default_factory=dict)


def _fail(spec: str, why: str, col: int | None = None) -> SpecSyntaxError:
    where = f" at column {col + 1}" if col is not None else ""
    return SpecSyntaxError(
        f"cannot parse loss spec {spec!r}: {why}{where}; expected terms like "
        f"'name + 0.5*other(param=1)' or 'plugin:name' (`segloss list` shows the names)"
    )


def _rewrite_qualified(spec: str) -> str:
    """``plugin:name`` -> ``plugin.name`` outside brackets of dict literals, so that ast can read it."""
    toks = list(tokenize.generate_tokens(io.StringIO(spec).readline))
    out: list[tuple[int, str]] = []
    stack: list[str] = []
    for i, tok in enumerate(toks):
        if tok.type == tokenize.OP and tok.string in "([{":
            stack.append(tok.string)
        elif tok.type == tokenize.OP and tok.string in ")]}" and stack:
            stack.pop()
        if (
            tok.type == tokenize.OP
            and tok.string == ":"
            and (not stack or stack[-1] != "{")
            and 0 < i < len(toks) - 1
            and toks[i - 1].type == tokenize.NAME
            and toks[i + 1].type == tokenize.NAME
        ):
            out.append((tokenize.OP, "."))
            continue
        out.append((tok.type, tok.string))
    return tokenize.untokenize(out)


def parse_spec(spec: str) -> list[TermSpec]:
    """Parse a spec string into terms. Raises ``SpecSyntaxError``."""
    if not isinstance(spec, str):
        raise SpecSyntaxError(f"a loss spec must be a string, dict or list (got {type(spec).__name__})")
    if not spec.strip():
        raise _fail(spec, "it is empty")
    if len(spec) > MAX_SPEC_LENGTH:
        raise _fail(spec[:40] + "...", f"it is longer than {MAX_SPEC_LENGTH} characters")
    try:
        source = _rewrite_qualified(spec.strip())
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        stripped = spec.strip()
        if stripped and stripped[-1] in "+*/-":
            raise _fail(spec, f"it ends with '{stripped[-1]}': a term is missing after it") from None
        if stripped and stripped[0] in "*/":
            raise _fail(spec, f"it starts with '{stripped[0]}': a term is missing before it") from None
        raise _fail(spec, exc.msg or "invalid syntax", (exc.offset or 1) - 1) from None
    except (tokenize.TokenError, ValueError, RecursionError, MemoryError, IndentationError) as exc:
        raise _fail(spec, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    try:
        return _terms(tree.body, spec, 1.0, explicit=False)
    except RecursionError:
        raise _fail(spec, "it is nested too deeply") from None


def _number(node: ast.AST, spec: str = "") -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            value = float(node.value)  # type: ignore[arg-type]  # int or float, checked above
        except OverflowError:  # a 400-digit int
            raise _fail(spec, f"the number {str(node.value)[:20]}... is too large for a weight",
                        getattr(node, "col_offset", None)) from None
        if not math.isfinite(value):
            raise _fail(spec, f"the number {node.value!r} is not finite", getattr(node, "col_offset", None))
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _number(node.operand, spec)
        if inner is not None:
            return -inner if isinstance(node.op, ast.USub) else inner
    return None


def _terms(node: ast.AST, spec: str, factor: float, explicit: bool) -> list[TermSpec]:
    col = getattr(node, "col_offset", None)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _terms(node.left, spec, factor, explicit) + _terms(node.right, spec, factor, explicit)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _number(node.left, spec), _number(node.right, spec)
        if left is not None and right is None:
            return _terms(node.right, spec, factor * left, True)
        if right is not None and left is None:
            return _terms(node.left, spec, factor * right, True)
        raise _fail(spec, "'*' needs a number on one side and a loss on the other", col)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        right = _number(node.right, spec)
        if right is None or _number(node.left, spec) is not None:
            raise _fail(spec, "'/' needs a loss on the left and a number on the right", col)
        if right == 0:
            raise _fail(spec, "division by zero", col)
        return _terms(node.left, spec, factor / right, True)
    if _number(node, spec) is not None:
        raise _fail(spec, "a number alone is not a loss", col)
    params: dict[str, Any] = {}
    target = node
    if isinstance(node, ast.Call):
        if node.args:
            callee = ast.unparse(node.func) if isinstance(node.func, (ast.Name, ast.Attribute)) else "loss"
            raise _fail(spec, f"arguments must be keywords, e.g. {callee}(name=value)", col)
        for kw in node.keywords:
            if kw.arg is None:
                raise _fail(spec, "'**' is not allowed", col)
            if kw.arg in params:
                raise _fail(spec, f"parameter '{kw.arg}' given twice", col)
            try:
                params[kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise _fail(
                    spec, f"the value of '{kw.arg}' must be a literal (number, string, True/False/None, list)",
                    getattr(kw.value, "col_offset", col),
                ) from None
        target = node.func
    if isinstance(target, ast.Name):
        name = target.id
    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        name = f"{target.value.id}:{target.attr}"
    else:
        raise _fail(spec, f"unexpected {type(node).__name__.lower()} where a loss name was expected", col)
    return [TermSpec(name, factor if explicit else None, params)]


def _term_from_mapping(key: str | None, value: Any, where: str) -> TermSpec:
    if key is None:  # {"loss": "dice", "weight": 1.0, "params": {...}}
        if "loss" not in value:
            raise LossConfigError(f"{where}: a term needs a 'loss' key (got keys {sorted(value, key=repr)})")
        extra = set(value) - {"loss", "weight", "params", "plugin"}
        if extra:
            raise LossConfigError(
                f"{where}: unknown term keys {sorted(extra, key=repr)}; use 'loss', 'weight' and 'params'"
            )
        name = value["loss"]
        if "plugin" in value and value["plugin"] and ":" not in str(name):
            name = f"{value['plugin']}:{name}"
        params = value.get("params") or {}
        weight = value.get("weight")
    else:
        name = key
        if isinstance(value, Mapping):
            inner = value.get("params")
            if inner is not None and not isinstance(inner, Mapping):
                raise LossConfigError(f"{where}: 'params' of '{name}' must be a dict (got {type(inner).__name__})")
            params = dict(inner or {})
            weight = value.get("weight")
            for k, v in value.items():
                if k not in ("weight", "params"):
                    if k in params:
                        raise LossConfigError(
                            f"{where}: '{name}' sets {k} twice (in 'params' as {params[k]!r} and beside it as "
                            f"{v!r}); keep one"
                        )
                    params[k] = v
        else:
            params, weight = {}, value
    if not isinstance(name, str):
        raise LossConfigError(f"{where}: a loss name must be a string (got {name!r})")
    if not isinstance(params, Mapping):
        raise LossConfigError(f"{where}: 'params' of '{name}' must be a dict (got {type(params).__name__})")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
        raise LossConfigError(f"{where}: the weight of '{name}' must be a number (got {weight!r})")
    bad = [k for k in params if not isinstance(k, str)]
    if bad:
        raise LossConfigError(f"{where}: parameter names of '{name}' must be strings (got {bad!r})")
    try:
        w = None if weight is None else float(weight)
    except OverflowError:  # an int beyond float's range
        raise LossConfigError(
            f"{where}: the weight of '{name}' must be a finite number >= 0 (got an int of {len(str(weight))} digits)"
        ) from None
    return TermSpec(name, w, dict(params))


def to_terms(spec: Any) -> list[TermSpec]:
    """Terms from a spec string, a ``{name: weight | {...}}`` dict, a canonical config or a list."""
    if isinstance(spec, str):
        return parse_spec(spec)
    if isinstance(spec, Mapping):
        if "terms" in spec:
            terms = spec["terms"]
            if isinstance(terms, (str, bytes, bytearray, Mapping)) or not isinstance(terms, Sequence):
                raise LossConfigError(f"config: 'terms' must be a list of terms (got {type(terms).__name__})")
            return to_terms(list(terms))
        if not spec:
            raise LossConfigError("a loss config needs at least one term (got an empty dict)")
        out = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise LossConfigError(f"config keys must be loss names (got {key!r})")
            out.extend(_expand(_term_from_mapping(key, value, "config")))
        return out
    if isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        if not spec:
            raise LossConfigError("a loss config needs at least one term (got an empty list)")
        out = []
        for i, item in enumerate(spec):
            if isinstance(item, str):
                out.extend(parse_spec(item))
            elif isinstance(item, Mapping):
                out.append(_term_from_mapping(None, item, f"term {i}"))
            elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
                out.append(_term_from_mapping(item[0], item[1], f"term {i}"))
            else:
                raise LossConfigError(f"term {i} must be a spec string, a dict or a (name, weight) pair (got {item!r})")
        return out
    raise SpecSyntaxError(f"a loss spec must be a string, dict or list (got {type(spec).__name__})")


def _expand(term: TermSpec) -> list[TermSpec]:
    # a dict key may itself be a spec ("0.5*dice" or "focal(gamma=1)")
    if term.name.replace("_", "").replace(":", "").isalnum():
        return [term]
    parsed = parse_spec(term.name)
    if len(parsed) != 1:
        raise LossConfigError(f"config key {term.name!r} must name one loss")
    inner = parsed[0]
    weight = term.weight if inner.weight is None else inner.weight * (1.0 if term.weight is None else term.weight)
    twice = sorted(set(inner.params) & set(term.params))
    if twice:
        k = twice[0]
        raise LossConfigError(
            f"config: '{term.name}' sets {k} twice (in the key as {inner.params[k]!r} and in its value as "
            f"{term.params[k]!r}); keep one"
        )
    return [TermSpec(inner.name, weight, {**inner.params, **term.params})]


def format_term(name: str, weight: float, params: Mapping[str, Any]) -> str:
    """A term as a spec string that parses back: ``0.5*focal(alpha=0.25, gamma=2.0)``."""
    inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
    w = "" if weight == 1.0 else f"{weight!r}*"
    if math.isinf(weight) or math.isnan(weight):
        w = f"{weight}*"
    return f"{w}{name}({inner})" if inner else f"{w}{name}"
