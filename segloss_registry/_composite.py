"""Composition: ``build_loss`` turns a spec into one module whose forward is one compiled graph."""

from __future__ import annotations

import itertools
import math
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._errors import InputError, LossConfigError, SeglossError, did_you_mean
from ._inputs import InputOptions, check_inputs, compact_ids, no_autocast, normalise
from .distributed import require_process_group
from ._params import MODES, LossParams, validate_params
from ._registry import LossInfo, Registry, get_registry
from ._spec import TermSpec, format_term, parse_spec, to_terms

__all__ = ["Term", "CompositeLoss", "build_loss", "CompileWarning"]

CompileMode = Literal["auto"] | bool
_UNSET: Any = object()
_OPTION_NAMES = ("mode", "from_logits", "ignore_index", "check_inputs", "compile", "weights", "params", "level_weights")
_counter = itertools.count()


class CompileWarning(UserWarning):
    """torch.compile failed for a loss; it runs eagerly instead."""


@dataclass(frozen=True)
class Term:
    """One validated term of a composite."""

    key: str
    info: LossInfo
    params: LossParams
    weight: float

    def spec(self) -> str:
        return format_term(self.info.name, self.weight, self.explicit_params())

    def explicit_params(self) -> dict[str, Any]:
        return self.params.model_dump(exclude_defaults=True)


class CompositeLoss(nn.Module):
    """A weighted sum of losses: ``loss = sum_i w_i * L_i(logits, target)``.

    Call it as ``criterion(logits, target)`` for a 0-dim tensor, or with
    ``return_terms=True`` for ``(loss, {key: term})``. ``last_terms`` keeps the detached
    per-term values of the last call. See ``build_loss``.
    """

    def __init__(
        self,
        terms: Sequence[Term],
        options: InputOptions,
        check_inputs: str = "first",
        compile: CompileMode = "auto",
        level_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.terms: tuple[Term, ...] = tuple(terms)
        self.options = options
        self.check_inputs = check_inputs
        self.compile_mode = compile
        self.level_weights: tuple[float, ...] | None = None if level_weights is None else tuple(level_weights)
        self.last_terms: dict[str, Tensor] = {}
        self._values_checked = False
        self._compile_failed = False
        self._dims = set.intersection(*(set(t.info.dims) for t in self.terms))
        self._global_sync = any(getattr(t.params, "sync", "local") == "global" for t in self.terms)
        self._compute = _fresh(self._make_compute(), f"segloss_{next(_counter)}")
        self._compiled: Any = None

    # -- the computation (what torch.compile traces) --------------------------------------
    def _make_compute(self) -> Any:
        opts = self.options
        fns = tuple((t.key, t.info.fn, t.params, float(t.weight)) for t in self.terms)

        def compute(logits: Tensor, target: Tensor, labels: bool) -> tuple[Tensor, Tensor]:
            with no_autocast(logits.device.type):
                inp = normalise(logits, target, opts)
                values = []
                for key, fn, params, _ in fns:
                    if labels:
                        with torch.profiler.record_function(f"segloss/{key}"):
                            values.append(fn(inp, params))
                    else:
                        values.append(fn(inp, params))
                total = values[0] * fns[0][3]
                for value, (_, _, _, w) in zip(values[1:], fns[1:]):
                    total = total + value * w
                return total, torch.stack(values)

        return compute

    def _compiled_fn(self) -> Any:
        if self._compiled is None:
            self._compiled = torch.compile(self._compute, fullgraph=True)
        return self._compiled

    def uses_compile(self, device: torch.device) -> bool:
        """Whether a call on ``device`` runs the compiled graph."""
        if self._compile_failed or self.compile_mode is False:
            return False
        return self.compile_mode is True or device.type not in ("cpu", "meta")

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        logits: Tensor | Sequence[Tensor],
        target: Tensor,
        return_terms: bool = False,
        level_weights: Sequence[float] | None = None,
    ) -> Any:
        """``logits`` (N, C, *S), or a list of them at decreasing resolutions (deep supervision:
        ``sum_l level_weights[l] * loss(logits_l, target resized nearest-exact)``, default weights
        1, 1/2, 1/4, ... normalised to sum 1; see ``_deep_supervision``)."""
        if isinstance(logits, (list, tuple)):
            from ._deep_supervision import deep_supervised

            weights = self.level_weights if level_weights is None else level_weights
            return deep_supervised(self, logits, target, return_terms, weights)
        if level_weights is not None:
            raise InputError(
                f"{self.options.mode}: level_weights applies to a list of logits (deep supervision); "
                f"got one tensor {tuple(getattr(logits, 'shape', ()))}"
            )
        values = self.check_inputs == "always" or (self.check_inputs == "first" and not self._values_checked)
        ndim = check_inputs(logits, target, self.options, values=values)
        if values:
            self._values_checked = True
        if ndim not in self._dims:
            names = ", ".join(t.key for t in self.terms if ndim not in t.info.dims)
            raise InputError(
                f"{self.options.mode}: {names} supports {_dims_text(self._dims)} inputs, got {ndim}D "
                f"(logits {tuple(logits.shape)})"
            )
        self._check_term_shapes(logits)
        if self._global_sync:
            require_process_group(self.options.mode)  # outside the graph: a clear error, not a trace failure
        if self.uses_compile(logits.device):
            with torch.profiler.record_function(f"segloss/compiled[{self.spec}]"):
                total, stacked = self._run_compiled(logits, target)
        else:
            with torch.profiler.record_function(f"segloss/eager[{self.spec}]"):
                total, stacked = self._compute(logits, target, True)
        terms = dict(zip(self.keys, stacked.unbind(0)))
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return (total, terms) if return_terms else total

    def _run_compiled(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        import torch._functorch.config as functorch_config

        try:
            # no donated buffers: with dynamic sizes AOTAutograd compiles the backward with the
            # forward, and a backward with donated buffers refuses retain_graph=True; the peak
            # memory is the same without them (segloss bench)
            with functorch_config.patch(donated_buffer=False):
                target = compact_ids(target, self.options)  # outside the graph: int64 ids are slow in it
                total, stacked = self._compiled_fn()(*_dynamic_views(logits, target, self.options.mode), False)
            _allow_retained_backward(total)
            return total, stacked
        except SeglossError:
            raise
        except Exception as exc:  # noqa: BLE001 - a compiler problem must not kill a training run
            out = self._compute(logits, target, True)  # re-raises real errors of the loss itself
            self._compile_failed = True
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            warnings.warn(
                f"torch.compile failed for loss '{self.spec}' ({type(exc).__name__}: {first}); "
                f"running eagerly from now on. Pass compile=False to silence this.",
                CompileWarning,
                stacklevel=3,
            )
            return out

    def _check_term_shapes(self, logits: Tensor) -> None:
        C = 1 if self.options.mode == "binary" else logits.shape[1]
        for t in self.terms:
            for name in ("class_weights", "pos_weight"):
                value = getattr(t.params, name, None)
                if isinstance(value, list) and len(value) != C:
                    raise InputError(
                        f"{self.options.mode}: {t.key}: {name} has {len(value)} entries but the logits "
                        f"{tuple(logits.shape)} have C = {C}; give one per class"
                    )

    # -- description -------------------------------------------------------------------------
    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(t.key for t in self.terms)

    @property
    def weights(self) -> dict[str, float]:
        return {t.key: t.weight for t in self.terms}

    @property
    def spec(self) -> str:
        """The loss as a spec string that ``build_loss`` parses back."""
        return " + ".join(t.spec() for t in self.terms)

    def config(self) -> dict[str, Any]:
        """A JSON-able description; ``build_loss(criterion.config())`` rebuilds this loss."""
        return {
            "terms": [
                {
                    "loss": t.info.name,
                    "plugin": t.info.plugin,
                    "weight": t.weight,
                    "params": t.params.model_dump(mode="json"),
                }
                for t in self.terms
            ],
            "mode": self.options.mode,
            "from_logits": self.options.from_logits,
            "ignore_index": self.options.ignore_index,
            "check_inputs": self.check_inputs,
            "compile": self.compile_mode,
            "level_weights": None if self.level_weights is None else list(self.level_weights),
        }

    def extra_repr(self) -> str:
        return f"{self.spec!r}, mode={self.options.mode!r}, compile={self.compile_mode!r}"


def _dims_text(dims: set[int]) -> str:
    return " or ".join(f"{d}D" for d in sorted(dims))


def _dynamic_views(logits: Tensor, target: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Aliases of the inputs with their batch and spatial sizes marked dynamic for dynamo.

    One graph then serves every batch size and image size, so a criterion compiles once with
    autograd and once under ``no_grad`` however the shapes vary (a smaller last batch, a
    validation size). Dynamo still specialises sizes 0 and 1 (a batch of one gets its own
    graph) and the class axis stays static. Views, so the marks do not stick to the caller's
    tensors.
    """
    out = []
    for t in (logits, target):
        v = t.view_as(t)
        for d, size in enumerate(t.shape):
            if size >= 2 and not (d == 1 and mode != "binary" and t.dim() == logits.dim()):
                torch._dynamo.maybe_mark_dynamic(v, d)
        out.append(v)
    return out[0], out[1]


def _allow_retained_backward(out: Tensor) -> None:
    """Let the compiled graph's backward run under ``retain_graph=True`` (per-term gradients).

    With dynamic sizes AOTAutograd compiles the backward together with the forward; the graph
    is compiled without donated buffers (see ``_run_compiled``), which AOTAutograd records as
    "unknown" (None) and then refuses ``retain_graph=True``; record it as "none" instead.
    """
    meta = getattr(getattr(out.grad_fn, "_forward_cls", None), "metadata", None)
    if meta is not None and getattr(meta, "bw_donated_idxs", ()) is None:
        meta.bw_donated_idxs = []


def _fresh(fn: Any, name: str) -> Any:
    """A copy of ``fn`` with its own code object, so that dynamo's cache is per criterion."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


# -- build_loss ---------------------------------------------------------------------------------
def build_loss(
    spec: Any,
    *,
    weights: Sequence[float] | Mapping[str, float] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    mode: str = _UNSET,
    from_logits: bool = _UNSET,
    ignore_index: int | None = _UNSET,
    check_inputs: str = _UNSET,
    compile: CompileMode = _UNSET,
    level_weights: Sequence[float] | None = _UNSET,
    registry: Registry | None = None,
    **kwargs: Any,
) -> CompositeLoss:
    """Build a (weighted) loss from a spec.

    ``spec``: a string (``"bce+dice"``, ``"0.5*focal(gamma=2) + dice(smooth=0)"``,
    ``"plugin:name"``), a dict (``{"ce": 1.0, "dice": {"weight": 2.0, "smooth": 0.0}}``), a
    list of terms, or a ``config()``. ``weights``: one per term, or by term name.
    ``params``: per-term parameters by name. ``level_weights``: the default per-level weights
    for deep supervision (a list of logits; see ``CompositeLoss.forward``). Any other keyword is
    a loss parameter applied to every term that accepts it. Raises ``UnknownLossError``, ``AmbiguousLossError``,
    ``SpecSyntaxError`` or ``LossConfigError`` before any tensor is touched.
    """
    reg = registry or get_registry()
    base = dict(spec) if isinstance(spec, Mapping) and "terms" in spec else {}
    opts = {
        "mode": base.get("mode", "binary"),
        "from_logits": base.get("from_logits", True),
        "ignore_index": base.get("ignore_index"),
        "check_inputs": base.get("check_inputs", "first"),
        "compile": base.get("compile", "auto"),
        "level_weights": base.get("level_weights"),
    }
    for k, v in (("mode", mode), ("from_logits", from_logits), ("ignore_index", ignore_index),
                 ("check_inputs", check_inputs), ("compile", compile), ("level_weights", level_weights)):
        if v is not _UNSET:
            opts[k] = v
    _check_options(opts)
    raw = _expand_recipes(to_terms(spec), reg)
    terms = _apply_params(raw, weights, params, kwargs, opts["mode"])
    return CompositeLoss(
        terms,
        InputOptions(opts["mode"], opts["from_logits"], opts["ignore_index"]),
        check_inputs=opts["check_inputs"],
        compile=opts["compile"],
        level_weights=opts["level_weights"],
    )


def _check_options(opts: dict[str, Any]) -> None:
    problems = []
    if opts["mode"] not in MODES:
        problems.append(f"build_loss: mode must be one of {', '.join(MODES)}{did_you_mean(str(opts['mode']), MODES)} "
                        f"(got {opts['mode']!r})")
    if not isinstance(opts["from_logits"], bool):
        problems.append(f"build_loss: from_logits must be True or False (got {opts['from_logits']!r})")
    ii = opts["ignore_index"]
    if ii is not None and (isinstance(ii, bool) or not isinstance(ii, int)):
        problems.append(f"build_loss: ignore_index must be an int or None (got {ii!r})")
    if opts["check_inputs"] not in ("first", "always", "never"):
        problems.append(f"build_loss: check_inputs must be 'first', 'always' or 'never' (got {opts['check_inputs']!r})")
    if opts["compile"] not in ("auto", True, False) or isinstance(opts["compile"], int) and not isinstance(opts["compile"], bool):
        problems.append(f"build_loss: compile must be 'auto', True or False (got {opts['compile']!r})")
    lw = opts["level_weights"]
    if lw is not None:
        from ._deep_supervision import level_weights

        try:
            level_weights(len(lw) if isinstance(lw, Sequence) and not isinstance(lw, str) else 0, lw)
        except LossConfigError as exc:
            problems.append(f"build_loss: {exc}")
    if problems:
        raise LossConfigError("\n".join(problems))


@dataclass
class _RawTerm:
    info: LossInfo
    weight: float | None
    params: dict[str, Any]
    written: str


def _expand_recipes(terms: list[TermSpec], reg: Registry, depth: int = 0) -> list[_RawTerm]:
    out: list[_RawTerm] = []
    for t in terms:
        info = reg.resolve(t.name)
        if info.recipe is None:
            out.append(_RawTerm(info, t.weight, dict(t.params), t.name))
            continue
        if depth > 8:
            raise LossConfigError(f"recipe '{info.name}' expands into itself")
        inner = _expand_recipes(parse_spec(info.recipe), reg, depth + 1)
        if t.params:
            for k in t.params:
                if not any(k in r.info.params.model_fields for r in inner):
                    fields = sorted({f for r in inner for f in r.info.params.model_fields})
                    raise LossConfigError(
                        f"{info.name}: unknown parameter '{k}'{did_you_mean(k, fields)}; "
                        f"its terms ({', '.join(r.info.name for r in inner)}) accept: {', '.join(fields) or 'none'}"
                    )
        for r in inner:
            shared = {k: v for k, v in t.params.items() if k in r.info.params.model_fields}
            w = None
            if t.weight is not None or r.weight is not None:
                w = (1.0 if t.weight is None else t.weight) * (1.0 if r.weight is None else r.weight)
            out.append(_RawTerm(r.info, w, {**r.params, **shared}, r.written))
    return out


def _keys(raw: list[_RawTerm]) -> list[str]:
    keys: list[str] = []
    for r in raw:
        key, n = r.info.name, 2
        while key in keys:
            key, n = f"{r.info.name}_{n}", n + 1
        keys.append(key)
    return keys


def _apply_params(
    raw: list[_RawTerm],
    weights: Any,
    params: Mapping[str, Mapping[str, Any]] | None,
    kwargs: dict[str, Any],
    mode: str,
) -> list[Term]:
    keys = _keys(raw)
    aliases = {key: {key, r.info.name, r.written, *r.info.aliases} for key, r in zip(keys, raw)}

    def match(name: str, what: str) -> list[int]:
        hits = [i for i, key in enumerate(keys) if name == key or (name in aliases[key] and keys.count(key) == 1)]
        if not hits:
            raise LossConfigError(f"build_loss: {what} names '{name}', which is not a term{did_you_mean(name, keys)}; "
                                  f"terms: {', '.join(keys)}")
        return hits[:1] if name in keys else hits

    # weights
    w: list[float | None] = [r.weight for r in raw]
    if weights is not None:
        if any(r.weight is not None for r in raw):
            raise LossConfigError("build_loss: weights given twice (in the spec and in weights=); keep one")
        if isinstance(weights, Mapping):
            for name, value in weights.items():
                for i in match(str(name), "weights"):
                    w[i] = value
        elif isinstance(weights, Sequence) and not isinstance(weights, str):
            if len(weights) != len(raw):
                raise LossConfigError(
                    f"build_loss: {len(weights)} weights for {len(raw)} terms ({', '.join(keys)}); give one per term"
                )
            w = list(weights)
        else:
            raise LossConfigError(f"build_loss: weights must be a list or a dict (got {type(weights).__name__})")
    final_w: list[float] = []
    for key, value in zip(keys, w):
        value = 1.0 if value is None else value
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                or not (math.isfinite(value) if isinstance(value, float) else value <= 1e300)):
            raise LossConfigError(f"build_loss: the weight of '{key}' must be a finite number >= 0 (got {value!r})")
        final_w.append(float(value))
    if not any(final_w):
        raise LossConfigError(f"build_loss: all weights are 0 ({', '.join(keys)}); at least one must be > 0")

    values: list[dict[str, Any]] = [dict(r.params) for r in raw]

    def put(i: int, k: str, v: Any, source: str) -> None:
        if k in values[i] and values[i][k] != v:
            raise LossConfigError(f"{keys[i]}: {k} given twice ({values[i][k]!r} and {v!r} from {source}); keep one")
        values[i][k] = v

    if params is not None and not isinstance(params, Mapping):
        raise LossConfigError(f"build_loss: params must be a dict of per-term dicts (got {type(params).__name__})")
    for name, p in (params or {}).items():
        if not isinstance(p, Mapping):
            raise LossConfigError(f"build_loss: params['{name}'] must be a dict (got {type(p).__name__})")
        for i in match(str(name), "params"):
            for k, v in p.items():
                put(i, k, v, "params=")
    for k, v in kwargs.items():
        takers = [i for i, r in enumerate(raw) if k in r.info.params.model_fields]
        if not takers:
            fields = sorted({f for r in raw for f in r.info.params.model_fields} | set(_OPTION_NAMES))
            raise LossConfigError(
                f"build_loss: no term accepts '{k}'{did_you_mean(k, fields)} (terms: {', '.join(keys)}); "
                f"accepted: {', '.join(fields)}"
            )
        for i in takers:
            put(i, k, v, "a keyword")

    problems: list[str] = []
    terms: list[Term] = []
    for key, r, weight, vals in zip(keys, raw, final_w, values):
        if mode not in r.info.modes:
            problems.append(
                f"{key}: not defined for mode '{mode}'; it supports {', '.join(r.info.modes)}"
                + ("; use 'bce' for binary and multilabel targets" if r.info.name == "ce" else "")
            )
            continue
        try:
            p = validate_params(key, r.info.params, vals, mode)
        except LossConfigError as exc:
            problems.append(str(exc))
            continue
        terms.append(Term(key, r.info, p, weight))
    if problems:
        raise LossConfigError("\n".join(problems))
    return terms
