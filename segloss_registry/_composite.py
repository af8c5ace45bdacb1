"""Composition: ``build_loss`` turns a spec into one module whose forward is one compiled graph."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from torch import Tensor, nn

from . import _compile
from ._checks import PendingCheck, flags_bad, ids_form, raise_for_counts, value_counts, value_flags
from ._errors import InputError, LossConfigError, PluginError, SeglossError, did_you_mean
from ._functional import check_per_class, mode_problem
from ._inputs import Inputs, check_inputs, compact_ids, no_autocast, normalise
from ._options import OPTION_NAMES, CheckInputs, CompileMode, InputOptions, LossOptions, Mode, plain
from ._params import LossParams, per_class_fields, validate_params
from ._registry import LossInfo, RecipeInfo, Registry, get_registry
from ._spec import TermSpec, format_term, parse_spec, to_terms
from .distributed import require_process_group

__all__ = ["Term", "CompositeLoss", "build_loss", "CompileWarning"]

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


def _plain_tensor(t: Any) -> Any:
    """A tensor subclass (MONAI's MetaTensor, ...) as a plain ``torch.Tensor`` sharing its data
    and autograd history; anything else as it is."""
    if isinstance(t, Tensor) and type(t) is not Tensor and not isinstance(t, nn.Parameter):
        return t.as_subclass(Tensor)
    return t


def _versions(inp: Inputs, raw: tuple[Tensor | None, ...]) -> list[tuple[str, Tensor, int]]:
    """The tensors a term shares with the others and with the caller, with their version counters."""
    named: list[tuple[str, Any]] = [("logits (the caller's)", raw[0]), ("target (the caller's)", raw[1]),
                                    ("mask (the caller's)", raw[2]), ("inp.logits", inp.logits),
                                    ("inp.target", inp.target), ("inp.mask", inp.mask)]
    act = inp._act or inp._eager_act
    named += [(f"inp.{n}", t) for n, t in zip(("prob", "log_prob", "log1m_prob"), act)]
    named.append(("inp.bce_elements()", inp._bce))
    for key, stats in inp._stats.items():
        named += [(f"inp.region_stats{key}", t) for t in stats]
    named += [(f"inp.shared({k!r})", v) for k, v in inp._shared.items()]
    return [(n, t, t._version) for n, t in named if isinstance(t, Tensor)]


def _check_output(value: Any, info: LossInfo, key: str, like: Tensor) -> Tensor:
    """A term's value must be a 0-dim floating tensor on the inputs' device (static facts: free
    in eager mode, checked once at trace time in the compiled graph)."""
    who = f"segloss plugin '{info.plugin}': loss '{info.name}' (term '{key}')"
    if not isinstance(value, Tensor):
        raise PluginError(f"{who} returned {type(value).__name__}, not a 0-dim torch.Tensor; compute it from "
                          f"the tensors of inp so that it carries the gradient")
    if value.dim() != 0:
        raise PluginError(f"{who} returned a tensor of shape {tuple(value.shape)}; a loss returns a 0-dim tensor: "
                          f"reduce it, e.g. inp.pixel_mean(per_pixel) or .mean()")
    if not value.is_floating_point():
        raise PluginError(f"{who} returned a {value.dtype} tensor; a loss is a floating-point value")
    if value.device != like.device:
        raise PluginError(f"{who} returned a tensor on {value.device} for inputs on {like.device}; create tensors "
                          f"with device=inp.logits.device")
    return value


class CompositeLoss(nn.Module):
    """A weighted sum of losses: ``loss = sum_i w_i * L_i(logits, target)``.

    Call it as ``criterion(logits, target)`` for a 0-dim tensor, or with
    ``return_terms=True`` for ``(loss, {key: term})``. ``last_terms`` keeps the detached
    per-term values of the last call; ``set_weights`` changes the term weights without a
    recompile. It pickles, deep-copies and ``torch.save``s (the compiled function is rebuilt
    lazily). See ``build_loss``.
    """

    def __init__(self, terms: Sequence[Term], options: LossOptions) -> None:
        super().__init__()
        self.terms: tuple[Term, ...] = tuple(terms)
        self.settings = options
        self.options = options.inputs
        self.last_terms: dict[str, Tensor] = {}
        self._dims = set.intersection(*(set(t.info.dims) for t in self.terms))
        self._global_sync = any(getattr(t.params, "sync", "local") == "global" for t in self.terms)
        self._save_policy = "auto"
        # the terms with a per-class list to check against C at call time
        self._per_class = tuple(
            t for t in self.terms
            if any(isinstance(getattr(t.params, name, None), list) for name in per_class_fields(type(t.params)))
        )
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        """The state that is rebuilt rather than pickled: compiled function, caches, pending checks."""
        self._compute = _compile.fresh_function(self._make_compute(), f"segloss_{next(_counter)}")
        self._compiled: Any = None
        self._weight_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._pending: PendingCheck | None = None
        self._checked_once = False
        self._calls = 0
        self._compile_disabled: str | None = None  # a cause that can never go away (no C++ compiler)
        self._eager_inputs: set[tuple[Any, ...]] = set()  # input kinds whose compile failed

    # -- pickling: the compiled function and the caches are rebuilt lazily ----------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_compute", "_compiled", "_weight_cache", "_pending", "_checked_once", "_calls",
                  "_compile_disabled", "_eager_inputs"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call, unused-ignore]
        self.__dict__.setdefault("_save_policy", "auto")  # pickled before the save policy existed
        self._reset_runtime()

    # -- the computation (what torch.compile traces) --------------------------------------
    def _make_compute(self) -> Any:
        opts = self.options
        fns = tuple((t.key, t.info, t.params) for t in self.terms)

        def compute(logits: Tensor, target: Tensor, mask: Tensor | None, weights: Tensor, labels: bool, poison: bool,
                    verify: bool, check: str, save: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
            if save and torch.is_grad_enabled():  # our own compiled graph: keep log1p for the backward
                out: tuple[Tensor, Tensor, Tensor | None] = _compile.with_saved_softplus(
                    body, logits, target, mask, weights, labels, poison, verify, check, False)
                return out
            return body(logits, target, mask, weights, labels, poison, verify, check, True)

        def body(logits: Tensor, target: Tensor, mask: Tensor | None, weights: Tensor, labels: bool,
                 poison: bool, verify: bool, check: str, recompute: bool) -> tuple[Tensor, Tensor, Tensor | None]:
            with no_autocast(logits.device.type):
                inp = normalise(logits, target, opts, mask)
                inp.cheap_log1p = recompute and _compile.cheap_log1p(inp.logits)
                values = []
                raw = (logits, target, mask)
                for key, info, params in fns:
                    before = _versions(inp, raw) if verify else None
                    if labels:
                        with torch.profiler.record_function(f"segloss/{key}"):
                            value = info.fn(inp, params)
                    else:
                        value = info.fn(inp, params)
                    values.append(_check_output(value, info, key, inp.logits).to(inp.logits.dtype))
                    if before is not None:
                        changed = [n for n, t, v in before if t._version != v]
                        if changed:
                            raise PluginError(
                                f"segloss plugin '{info.plugin}': loss '{info.name}' (term '{key}') wrote in place "
                                f"into {', '.join(changed)}, which the other terms and the caller share; compute out "
                                f"of place (y = x * w, not x.mul_(w) or x *= w)"
                            )
                stacked = torch.stack(values)
                if poison:  # a non-finite input never gives a finite loss, checked or not
                    ok = torch.isfinite(logits).all()
                    if target.is_floating_point():
                        ok = ok & torch.isfinite(target).all()
                    stacked = stacked + torch.where(ok, 0.0, float("nan")).to(stacked.dtype)
                total = (stacked * weights.to(stacked.dtype)).sum()
                return total, stacked, _checked(check, logits, target, mask, opts)

        return compute

    def _compiled_fn(self) -> Any:
        if self._compiled is None:
            self._compiled = torch.compile(self._compute, fullgraph=True, options=_compile.inductor_options())
        return self._compiled

    @property
    def _compile_failed(self) -> bool:
        """Whether any call fell back to eager after a compile failure."""
        return self._compile_disabled is not None or bool(self._eager_inputs)

    def uses_compile(self, device: torch.device) -> bool:
        """Whether a call on ``device`` runs the compiled graph."""
        mode = self.settings.compile
        if self._compile_disabled is not None or mode is False:
            return False
        return mode is True or device.type not in ("cpu", "meta")

    # -- weights ----------------------------------------------------------------------------------------
    def _weights_on(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (device, dtype)
        w = self._weight_cache.get(key)
        if w is None:
            w = torch.tensor([t.weight for t in self.terms], dtype=dtype, device=device)
            self._weight_cache[key] = w
        return w

    def set_weights(self, weights: Mapping[str, float] | Sequence[float]) -> None:
        """Change term weights, by term name (``{"dice": 0.9, "surface": 0.1}``; terms not named
        keep theirs) or one per term, without a recompile: the weights enter the compiled graph as
        a tensor. Checked as at build time (finite, >= 0, not all 0)."""
        new = _resolve_weights(list(self.keys), [t.info for t in self.terms], plain(weights),
                               [t.weight for t in self.terms], replace=True)
        self.terms = tuple(dataclasses.replace(t, weight=w) for t, w in zip(self.terms, new))
        self._weight_cache = {}  # new tensors: a graph still holding the old ones for its backward keeps them

    # -- what the compiled backward saves ----------------------------------------------------------------
    @property
    def save_policy(self) -> str:
        """What the compiled graph keeps for its backward (see ``set_save_policy``)."""
        return self._save_policy

    def set_save_policy(self, policy: str) -> None:
        """``"auto"`` (default): recompute the ``log1p`` results of a sigmoid loss's forward in the
        backward, except for float64 on the CPU, where they are saved (``_compile.saves_softplus``;
        float32 graphs on the CPU compute them with a cheap polynomial, ``_fastmath``); ``"save"``
        (with ``torch.log1p``) or ``"recompute"``: the same on every device. Saving costs one float per
        element of peak memory; ``segloss bench --save-policies`` times both. Takes effect at the next
        call (one recompile)."""
        if policy not in _compile.SAVE_POLICIES:
            raise LossConfigError(
                f"save policy must be one of {', '.join(map(repr, _compile.SAVE_POLICIES))}, got {policy!r}"
            )
        self._save_policy = policy

    # -- forward ----------------------------------------------------------------------------
    if TYPE_CHECKING:

        @overload
        def __call__(self, logits: Tensor | Sequence[Tensor], target: Tensor, return_terms: Literal[False] = ...,
                     level_weights: Sequence[float] | None = ..., mask: Tensor | None = ...) -> Tensor: ...

        @overload
        def __call__(self, logits: Tensor | Sequence[Tensor], target: Tensor, return_terms: Literal[True],
                     level_weights: Sequence[float] | None = ...,
                     mask: Tensor | None = ...) -> tuple[Tensor, dict[str, Tensor]]: ...

        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    @overload
    def forward(self, logits: Tensor | Sequence[Tensor], target: Tensor, return_terms: Literal[False] = ...,
                level_weights: Sequence[float] | None = ..., mask: Tensor | None = ...) -> Tensor: ...

    @overload
    def forward(self, logits: Tensor | Sequence[Tensor], target: Tensor, return_terms: Literal[True],
                level_weights: Sequence[float] | None = ...,
                mask: Tensor | None = ...) -> tuple[Tensor, dict[str, Tensor]]: ...

    def forward(
        self,
        logits: Tensor | Sequence[Tensor],
        target: Tensor,
        return_terms: bool = False,
        level_weights: Sequence[float] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """``logits`` (N, C, *S), or a list of them at decreasing resolutions (deep supervision:
        ``sum_l w_l * loss(logits_l, target resized nearest-exact)``, weights normalised to sum 1;
        see ``_deep_supervision``). ``mask``: optional (N, *S), (N, 1, *S) (or, multilabel,
        (N, C, *S)) bool mask or float weights >= 0, applied to every term beside
        ``ignore_index``: pixels with weight 0 change neither the value nor the gradient."""
        if isinstance(logits, (list, tuple)):
            from ._deep_supervision import deep_supervised

            weights = self.settings.level_weights if level_weights is None else level_weights
            return deep_supervised(self, logits, target, return_terms, weights, mask)  # type: ignore[no-any-return]
        if level_weights is not None:
            raise InputError(
                f"{self.options.mode}: level_weights applies to a list of logits (deep supervision); "
                f"got one tensor {tuple(getattr(logits, 'shape', ()))}"
            )
        return self._forward_one(_plain_tensor(logits), _plain_tensor(target), return_terms, _plain_tensor(mask))

    def _forward_one(self, logits: Tensor, target: Tensor, return_terms: bool,
                     mask: Tensor | None) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        outer = _compile.is_compiling()
        if not outer:
            self._calls += 1
        if not outer and self._pending is not None:  # the deferred checks of the previous call
            pending, self._pending = self._pending, None
            pending.raise_if_bad()
        ndim = check_inputs(logits, target, self.options, mask=mask)
        if ndim not in self._dims:
            names = ", ".join(t.key for t in self.terms if ndim not in t.info.dims)
            raise InputError(
                f"{self.options.mode}: {names} supports {_dims_text(self._dims)} inputs, got {ndim}D "
                f"(logits {tuple(logits.shape)})"
            )
        self._check_term_shapes(logits)
        if self._global_sync and not outer:
            require_process_group(self.options.mode)  # outside the graph: a clear error, not a trace failure
        if outer:  # inside the user's own torch.compile: trace our computation into the user's graph
            total, stacked, _ = self._compute(logits, target, mask, self._weights_on(logits.device, _dtype(logits)),
                                              False, True, False, "off")
        else:
            total, stacked = self._run(logits, target, mask)
        terms = dict(zip(self.keys, stacked.unbind(0)))
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return (total, terms) if return_terms else total

    def _check_policy(self, device: torch.device) -> str:
        """``"now"`` (read the counts in this call), ``"later"`` (read at the next call) or ``"off"``."""
        mode = self.settings.check_inputs
        if mode == "never" or device.type == "meta" or (mode == "first" and self._checked_once):
            return "off"
        if mode in ("always", "first") or (mode == "auto" and device.type == "cpu"):
            return "now"
        return "later"

    def _run(self, logits: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        policy = self._check_policy(logits.device)
        weights = self._weights_on(logits.device, _dtype(logits))
        labels = _compile.profiler_active()
        counts: Tensor | None = None
        if self.uses_compile(logits.device) and self._input_kind(logits, target, mask) not in self._eager_inputs:
            with _label(labels, f"segloss/compiled[{self.spec}]"):
                total, stacked, counts = self._run_compiled(logits, target, mask, weights, policy)
        else:
            if policy == "now":  # before the computation: a bad batch is an InputError, not a crash inside a term
                self._raise_if_flagged(_flags(logits, target, mask, self.options), logits, target, mask)
            elif policy == "later":
                counts = _counts(logits, target, mask, self.options)
            with _label(labels, f"segloss/eager[{self.spec}]"):
                total, stacked, _ = self._compute(logits, target, mask, weights, labels, policy != "now", True, "off")
        if counts is not None:
            if policy == "now":
                self._raise_if_flagged(counts, logits, target, mask)
            else:
                self._pending = PendingCheck.start(self._calls, counts, self.options.mode,
                                                   (tuple(logits.shape), tuple(target.shape)))
        if policy == "now":
            self._checked_once = True
        return total, stacked

    def _raise_if_flagged(self, flags: Tensor, logits: Tensor, target: Tensor, mask: Tensor | None) -> None:
        """Read one call's ``value_flags``; when they show a bad value, count and raise ``InputError``."""
        opts = self.options
        if flags_bad(flags.tolist(), opts.mode, logits.shape[1] if logits.dim() > 1 else 1, opts.from_logits,
                     ids_form(logits, target, opts.mode)):
            self._raise_now(_counts(logits, target, mask, opts), logits, target)

    def _raise_now(self, counts: Tensor, logits: Tensor, target: Tensor) -> None:
        raise_for_counts([int(v) for v in counts.tolist()], self.options.mode,
                         (tuple(logits.shape), tuple(target.shape)), (logits, target), self.options.ignore_index)

    def check_pending(self) -> None:
        """Read the deferred value checks of the last call now (an accelerator, or
        ``check_inputs="deferred"``), e.g. at the end of an epoch; raise ``InputError`` if bad."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.raise_if_bad()

    @staticmethod
    def _input_kind(logits: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Any, ...]:
        """What a compile failure may depend on (not the sizes: they are dynamic)."""
        return (logits.dtype, logits.device, logits.dim(), logits.requires_grad, target.dtype, target.dim(),
                None if mask is None else (mask.dtype, mask.dim()))

    def _run_compiled(self, logits: Tensor, target: Tensor, mask: Tensor | None, weights: Tensor,
                      policy: str) -> tuple[Tensor, Tensor, Tensor | None]:
        versions = [t._version for t in (logits, target) if isinstance(t, Tensor)]
        try:
            with _compile.no_donated_buffers():
                # integer ids compacted outside the graph (int64 ids are slow in it); float ids go in as
                # they are, so that the checks in the graph see their fractions
                ids = target if target.is_floating_point() else compact_ids(target, self.options, logits)
                x, t = _dynamic_views(logits, ids, self.options.mode)
                check = {"now": "flags", "later": "counts"}.get(policy, "off")
                save = _compile.saves_softplus(logits.device, logits.dtype, self._save_policy)
                total, stacked, counts = self._compiled_fn()(x, t, mask, weights, False, policy != "now", False, check,
                                                             save)
            _compile.allow_retained_backward(total)
        except SeglossError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compile/run failure falls back to eager with a warning
            return self._fall_back(exc, logits, target, mask, weights, policy)
        if [t._version for t in (logits, target)] != versions:
            raise PluginError(
                f"a term of '{self.spec}' wrote in place into the caller's logits or target in the compiled graph; "
                f"run it once with compile=False to see which plugin (its error names it)"
            )
        return total, stacked, counts

    def _fall_back(self, exc: Exception, logits: Tensor, target: Tensor, mask: Tensor | None, weights: Tensor,
                   policy: str) -> tuple[Tensor, Tensor, Tensor | None]:
        counts = None
        if policy == "now":
            self._raise_if_flagged(_flags(logits, target, mask, self.options), logits, target, mask)
        elif policy == "later":
            counts = _counts(logits, target, mask, self.options)
        total, stacked, _ = self._compute(logits, target, mask, weights, False, policy != "now", True, "off")
        cause = _compile.permanent_failure(exc)
        if cause is not None:
            self._compile_disabled = cause
            warnings.warn(
                f"torch.compile cannot work here for loss '{self.spec}': {cause}; running eagerly from now on "
                f"({_compile.failure_text(exc)}). Pass compile=False to silence this.",
                CompileWarning, stacklevel=5,
            )
        else:
            kind = self._input_kind(logits, target, mask)
            self._eager_inputs.add(kind)
            warnings.warn(
                f"torch.compile failed for loss '{self.spec}' on logits {logits.dtype} {logits.dim()}D on "
                f"{logits.device} ({_compile.failure_text(exc)}); inputs of this kind run eagerly, others still "
                f"compile. Pass compile=False to silence this.",
                CompileWarning, stacklevel=5,
            )
        return total, stacked, counts

    def _check_term_shapes(self, logits: Tensor) -> None:
        for t in self._per_class:
            check_per_class(t.key, t.params, self.options.mode, logits)

    # -- description -------------------------------------------------------------------------
    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(t.key for t in self.terms)

    @property
    def weights(self) -> dict[str, float]:
        return {t.key: t.weight for t in self.terms}

    @property
    def check_inputs(self) -> str:
        return self.settings.check_inputs

    @property
    def compile_mode(self) -> CompileMode:
        return self.settings.compile

    @property
    def level_weights(self) -> tuple[float, ...] | None:
        return self.settings.level_weights

    @property
    def spec(self) -> str:
        """The loss as a spec string that ``build_loss`` parses back."""
        cached = self.__dict__.get("_spec_text")
        if cached is None or cached[0] is not self.terms:
            cached = (self.terms, " + ".join(t.spec() for t in self.terms))
            self.__dict__["_spec_text"] = cached
        return cached[1]

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
            **self.settings.dump(),
        }

    def extra_repr(self) -> str:
        return f"{self.spec!r}, mode={self.options.mode!r}, compile={self.settings.compile!r}"


def _checked(check: str, logits: Tensor, target: Tensor, mask: Tensor | None, opts: InputOptions) -> Tensor | None:
    """The value checks of one call: ``"flags"`` (read at once), ``"counts"`` (read later) or ``"off"``."""
    if check == "off":
        return None
    return _flags(logits, target, mask, opts) if check == "flags" else _counts(logits, target, mask, opts)


def _flags(logits: Tensor, target: Tensor, mask: Tensor | None, opts: InputOptions) -> Tensor:
    return value_flags(logits, target, mask, opts.mode, opts.from_logits, opts.ignore_index)


def _counts(logits: Tensor, target: Tensor, mask: Tensor | None, opts: InputOptions) -> Tensor:
    return value_counts(logits, target, mask, opts.mode, opts.from_logits, opts.ignore_index)


def _label(on: bool, name: str) -> Any:
    """A profiler label while a profiler records; nothing otherwise (labels cost microseconds)."""
    return torch.profiler.record_function(name) if on else contextlib.nullcontext()


def _dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


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
                _compile.mark_dynamic(v, d)
        out.append(v)
    return out[0], out[1]


# -- build_loss ---------------------------------------------------------------------------------
def build_loss(
    spec: str | Mapping[str, Any] | Sequence[Any],
    *,
    weights: Sequence[float] | Mapping[str, float] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    mode: Mode | None = None,
    from_logits: bool | None = None,
    ignore_index: int | None = None,
    check_inputs: CheckInputs | None = None,
    compile: CompileMode | None = None,
    level_weights: Sequence[float] | None = None,
    registry: Registry | None = None,
    **kwargs: Any,
) -> CompositeLoss:
    """Build a (weighted) loss from a spec.

    ``spec``: a string (``"bce+dice"``, ``"0.5*focal(gamma=2) + dice(smooth=0)"``,
    ``"plugin:name"``), a dict (``{"ce": 1.0, "dice": {"weight": 2.0, "smooth": 0.0}}``), a
    list of terms, or a ``config()``; any Mapping/Sequence (OmegaConf's containers), tensor or
    numpy array is accepted where a dict or list is. ``weights``: one per term, or by term
    name. ``params``: per-term parameters by name.

    Options (``None``: the value of a ``config()`` spec, else the default): ``mode``
    (``"binary"``), ``from_logits`` (True), ``ignore_index`` (None), ``check_inputs``
    (``"auto"``: value checks on every call, read one call late on accelerators; see
    ``segloss_registry._checks``), ``compile`` (``"auto"``: compiled on accelerators, eager on
    the CPU), ``level_weights`` (deep supervision: 1, 1/2, 1/4, ..., normalised to sum 1).
    Any other keyword is a loss parameter applied to every term that accepts it. Raises
    ``UnknownLossError``, ``AmbiguousLossError``, ``SpecSyntaxError`` or ``LossConfigError``
    before any tensor is touched.
    """
    if registry is not None and not isinstance(registry, Registry):
        raise LossConfigError(
            f"build_loss: registry must be a segloss_registry.Registry (got {type(registry).__name__})"
        )
    reg = registry or get_registry()
    spec = spec if isinstance(spec, str) else plain(spec)
    base = dict(spec) if isinstance(spec, Mapping) and "terms" in spec else {}
    given = {"mode": mode, "from_logits": from_logits, "ignore_index": ignore_index, "check_inputs": check_inputs,
             "compile": compile, "level_weights": level_weights}
    values = {k: base[k] for k in LossOptions.model_fields if k in base}
    values.update({k: v for k, v in given.items() if v is not None})
    options = LossOptions.build(values)
    raw = _expand_recipes(to_terms(spec), reg)
    terms = _apply_params(raw, plain(weights), plain(params), {k: plain(v) for k, v in kwargs.items()}, options.mode)
    return CompositeLoss(terms, options)


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
        if not isinstance(info, RecipeInfo):
            out.append(_RawTerm(info, t.weight, dict(t.params), t.name))
            continue
        if depth > 8:
            raise LossConfigError(f"recipe '{info.name}' expands into itself")
        inner = _expand_recipes(parse_spec(info.spec), reg, depth + 1)
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
    """The validated terms: weights resolved, ``params=`` and keyword parameters given to their terms."""
    keys = _keys(raw)
    match = _term_matcher(keys, [{r.info.name, r.written, *r.info.aliases} for r in raw], "build_loss")
    final_w = _resolve_weights(keys, [r.info for r in raw], weights, [r.weight for r in raw], match=match)
    values = _ParamValues(keys, [dict(r.params) for r in raw])
    values.add_params(params, match)
    values.add_keywords(kwargs, raw)
    return _validated_terms(keys, raw, final_w, values.values, mode)


@dataclass
class _ParamValues:
    """The raw parameter values of each term, from the spec, ``params=`` and keywords; a value given
    twice with two different values is an error."""

    keys: list[str]
    values: list[dict[str, Any]]

    def put(self, i: int, k: str, v: Any, source: str) -> None:
        if k in self.values[i] and self.values[i][k] != v:
            raise LossConfigError(
                f"{self.keys[i]}: {k} given twice ({self.values[i][k]!r} and {v!r} from {source}); keep one"
            )
        self.values[i][k] = v

    def add_params(self, params: Any, match: Any) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise LossConfigError(f"build_loss: params must be a dict of per-term dicts (got {type(params).__name__})")
        for name, p in (params or {}).items():
            if not isinstance(p, Mapping):
                raise LossConfigError(f"build_loss: params['{name}'] must be a dict (got {type(p).__name__})")
            for i in match(str(name), "params"):
                for k, v in p.items():
                    self.put(i, k, v, "params=")

    def add_keywords(self, kwargs: Mapping[str, Any], raw: list[_RawTerm]) -> None:
        """A keyword goes to every term whose params model has that field."""
        for k, v in kwargs.items():
            takers = [i for i, r in enumerate(raw) if k in r.info.params.model_fields]
            if not takers:
                fields = sorted({f for r in raw for f in r.info.params.model_fields} | set(OPTION_NAMES))
                raise LossConfigError(
                    f"build_loss: no term accepts '{k}'{did_you_mean(k, fields)} (terms: {', '.join(self.keys)}); "
                    f"accepted: {', '.join(fields)}"
                )
            for i in takers:
                self.put(i, k, v, "a keyword")


def _validated_terms(keys: list[str], raw: list[_RawTerm], weights: list[float], values: list[dict[str, Any]],
                     mode: str) -> list[Term]:
    """Each term's params validated for ``mode``; every problem of every term in one error."""
    problems: list[str] = []
    terms: list[Term] = []
    for key, r, weight, vals in zip(keys, raw, weights, values):
        if mode not in r.info.modes:
            problems.append(mode_problem(key, mode, r.info.modes, r.info.hints))
            continue
        try:
            validated = validate_params(key, r.info.params, vals, mode)
        except LossConfigError as exc:
            problems.append(str(exc))
            continue
        terms.append(Term(key, r.info, validated, weight))
    if problems:
        raise LossConfigError("\n".join(problems))
    return terms


def _resolve_weights(keys: list[str], infos: list[LossInfo], weights: Any, current: list[float | None],
                     match: Any = None, replace: bool = False) -> list[float]:
    """The final weight of every term from ``weights`` (a list, one per term, or a dict by name).

    ``replace=False`` (build time): a weight written in the spec and in ``weights=`` is an
    error; ``replace=True`` (``set_weights``): the new weights replace the current ones.
    """
    if match is None:
        match = _term_matcher(keys, [{info.name, *info.aliases} for info in infos], "set_weights")

    w: list[float | None] = list(current)
    where = "set_weights" if replace else "build_loss"
    if weights is not None:
        if not replace and any(v is not None for v in current):
            raise LossConfigError("build_loss: weights given twice (in the spec and in weights=); keep one")
        if isinstance(weights, Mapping):
            for name, value in weights.items():
                for i in match(str(name), "weights"):
                    w[i] = value
        elif isinstance(weights, Sequence) and not isinstance(weights, str):
            if len(weights) != len(keys):
                raise LossConfigError(
                    f"{where}: {len(weights)} weights for {len(keys)} terms ({', '.join(keys)}); give one per term"
                )
            w = list(weights)
        else:
            raise LossConfigError(f"{where}: weights must be a list or a dict (got {type(weights).__name__})")
    out: list[float] = []
    for key, value in zip(keys, w):
        value = 1.0 if value is None else value
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                or not (math.isfinite(value) if isinstance(value, float) else value <= 1e300)):
            raise LossConfigError(f"{where}: the weight of '{key}' must be a finite number >= 0 (got {value!r})")
        out.append(float(value))
    if not any(out):
        raise LossConfigError(f"{where}: all weights are 0 ({', '.join(keys)}); at least one must be > 0")
    return out


def _term_matcher(keys: list[str], names: list[set[str]], where: str) -> Any:
    """``match(name, what)``: the indices of the terms ``name`` picks (a term key, or a loss name or
    alias shared by those terms); ``LossConfigError`` with a did-you-mean when it picks none."""
    aliases = {key: {key, *n} for key, n in zip(keys, names)}

    def match(name: str, what: str) -> list[int]:
        hits = [i for i, key in enumerate(keys) if name == key or name in aliases[key]]
        if not hits:
            head = (f"build_loss: {what} names '{name}', which is not a term" if where == "build_loss"
                    else f"{where}: '{name}' is not a term")
            raise LossConfigError(f"{head}{did_you_mean(name, keys)}; terms: {', '.join(keys)}")
        return hits[:1] if name in keys else hits

    return match
