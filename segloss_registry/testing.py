"""The conformance kit: what every loss plugin must do, as checks a plugin author runs from pytest.

Two ways to use it::

    from segloss_registry.testing import check_loss, conformance_cases

    def test_my_loss_conforms():
        report = check_loss("my_loss")        # every check; one AssertionError listing all failures
        print(report)                         # what was checked, per check, mode and dimensionality

    @pytest.mark.parametrize("case", conformance_cases("my_loss"))
    def test_my_loss(case):                   # one pytest item per check, mode and dimensionality
        case()

The checks (``CHECKS``), on small random inputs (N = 2; C = 1 binary, 3 otherwise; spatial
(16,) in 1D, (8, 8) in 2D, (4, 8, 8) in 3D), all seeded, so a failure reproduces:

``builds``
    ``build_loss(name)`` with default parameters in every declared mode, and
    ``build_loss(criterion.config())`` rebuilds the same config.
``finite``
    per declared mode and dimensionality: a finite 0-dim float tensor and a finite gradient
    for the logits, on random logits, on saturated logits (|x| ~ 40), and on an empty target.
``compiled``
    ``build_loss(name, compile=True)`` (``torch.compile(fullgraph=True)``: a graph break is a
    failure, not a silent eager fallback) equals ``compile=False`` in value and gradient
    within 1e-5 relative (float32). A cold compile costs seconds, so by default this runs for
    ONE mode (the first the loss declares) and ONE dimensionality (2D if declared, else the
    first); ``compile_all=True`` compiles every declared mode and dimensionality.
``unknown_param``
    an unknown parameter is a ``LossConfigError`` that names it.
``schema``
    ``params.model_json_schema()`` is a JSON-serialisable object schema listing every field,
    and every field has a default.
``ignore_index``
    per declared mode (one dimensionality): with ``ignore_index=255``, changing the logits at
    ignored pixels changes neither the loss nor the gradient elsewhere, the gradient at ignored
    pixels is 0, and an all-ignored target gives 0.
``half``
    per declared mode (one dimensionality): float16 and bfloat16 inputs give the float32 value
    of the same (rounded) inputs within 1e-3 absolute/relative with a finite gradient of the
    input's dtype, and a float32 call under ``torch.autocast`` (bfloat16) gives the float32 value.

``check_loss`` returns a ``ConformanceReport`` (every case run, passed or not, and what was
left out); ``print(report)`` gives the summary that ``segloss plugins --check`` prints, which
runs this same kit over the losses of installed plugins (``check_plugin``).
``compile=False`` leaves the compiled check out (a machine without a C++ compiler).
``registered_plugin(obj, name)`` registers a plugin object for the duration of a ``with``
block, for testing a plugin before it is installed.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from ._composite import CompileWarning, CompositeLoss, build_loss
from ._errors import LossConfigError, PluginError
from ._registry import LossInfo, PluginInfo, RecipeInfo, Registry, get_registry
from ._spec import parse_spec

if TYPE_CHECKING:
    from ._options import Mode

__all__ = [
    "CHECKS",
    "IGNORE_INDEX",
    "CaseResult",
    "ConformanceCase",
    "ConformanceError",
    "ConformanceReport",
    "check_loss",
    "check_plugin",
    "conformance_cases",
    "iter_cases",
    "make_inputs",
    "registered_plugin",
]

CHECKS: tuple[str, ...] = ("builds", "finite", "compiled", "unknown_param", "schema", "ignore_index", "half")
IGNORE_INDEX = 255
SPATIAL: dict[int, tuple[int, ...]] = {1: (16,), 2: (8, 8), 3: (4, 8, 8)}
BATCH = 2
CLASSES = 3
_UNKNOWN = "no_such_parameter_xyz"


def registered_plugin(obj: object, name: str, registry: Registry | None = None) -> AbstractContextManager[PluginInfo]:
    """``with registered_plugin(module_or_obj, "my_plugin"):`` its losses are buildable inside the block."""
    return (registry or get_registry()).plugin(obj, name)


def make_inputs(
    mode: str,
    dim: int,
    *,
    seed: int = 0,
    scale: float = 2.0,
    empty: bool = False,
    classes: int = CLASSES,
) -> tuple[Tensor, Tensor]:
    """Random float32 ``(logits, target)`` for ``mode`` with ``dim`` spatial axes.

    logits (N, C, *S) = scale * randn; target: binary (N, 1, *S) and multilabel (N, C, *S)
    0/1 floats (40 % foreground), multiclass (N, *S) int64 ids. ``empty``: an all-background
    target. The shapes of the kit (``BATCH``, ``SPATIAL``) on ``segloss_registry.bench``'s
    ``make_inputs``, the one generator of random inputs.
    """
    from .bench.inputs import make_inputs as random_inputs

    C = 1 if mode == "binary" else classes
    return random_inputs(mode, (BATCH, C, *SPATIAL[dim]), seed=seed, scale=scale, foreground=0.4, empty=empty,
                         requires_grad=False)


# -- helpers -------------------------------------------------------------------------------------
def _resolve(name: str, registry: Registry | None) -> LossInfo:
    info = (registry or get_registry()).resolve(name)
    if isinstance(info, RecipeInfo):
        terms = ", ".join(f"check_loss({t.name!r})" for t in parse_spec(info.spec))
        raise LossConfigError(f"'{name}' is a recipe ('{info.spec}'), not a loss; check its terms instead: {terms}")
    return info


def _build(name: str, info: LossInfo, mode: str, params: Mapping[str, Any], registry: Registry | None,
           compile: bool = False, **options: Any) -> CompositeLoss:
    return build_loss(name, mode=cast("Mode", mode), compile=compile, registry=registry, check_inputs="always",
                      params={info.name: dict(params)} if params else None, **options)


def _value_and_grad(criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor,
                    what: str) -> tuple[Tensor, Tensor]:
    x = logits.detach().clone().requires_grad_(True)
    value = criterion(x, target)
    if not isinstance(value, Tensor):
        raise AssertionError(f"{what}: returned {type(value).__name__}, not a tensor")
    if value.dim() != 0:
        raise AssertionError(f"{what}: returned shape {tuple(value.shape)}, expected a 0-dim tensor")
    if not value.is_floating_point():
        raise AssertionError(f"{what}: returned dtype {value.dtype}, expected a floating-point tensor")
    if not torch.isfinite(value):
        raise AssertionError(f"{what}: returned {value.item()} (not finite)")
    if not value.requires_grad:
        raise AssertionError(f"{what}: the value does not depend on the logits (no gradient)")
    value.backward()
    grad = x.grad
    if grad is None:
        raise AssertionError(f"{what}: no gradient reached the logits")
    if not torch.isfinite(grad).all():
        bad = int((~torch.isfinite(grad)).sum())
        raise AssertionError(f"{what}: the gradient holds {bad} non-finite entries of {grad.numel()}")
    return value.detach(), grad.detach()


def _close(a: Tensor, b: Tensor, rel: float, abs_: float = 0.0) -> tuple[bool, float]:
    """|a - b| <= abs_ + rel * |b| elementwise; returns (ok, the largest |a - b|)."""
    a64, b64 = a.double(), b.double()
    diff = (a64 - b64).abs()
    ok = bool((diff <= abs_ + rel * b64.abs()).all())
    return ok, float(diff.max()) if diff.numel() else 0.0


def _grad_close(a: Tensor, b: Tensor, rel: float) -> tuple[bool, float]:
    # relative per element, with a floor relative to the largest entry (exact zeros stay comparable)
    scale = float(b.abs().max()) if b.numel() else 0.0
    return _close(a, b, rel, rel * scale + 1e-12)


def _tag(info: LossInfo, check: str, mode: str | None = None, dim: int | None = None) -> str:
    where = "" if mode is None else f" [{mode}{'' if dim is None else f', {dim}D'}]"
    return f"{info.qualified_name}: {check}{where}"


def _default_dim(info: LossInfo) -> int:
    return 2 if 2 in info.dims else info.dims[0]


# -- the checks ----------------------------------------------------------------------------------
def _check_builds(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None, **_: Any) -> None:
    for mode in info.modes:
        what = _tag(info, "builds", mode)
        try:
            crit = _build(name, info, mode, params, registry)
        except Exception as exc:
            raise AssertionError(f"{what}: build_loss failed with defaults: {type(exc).__name__}: {exc}") from exc
        config = crit.config()
        try:
            json.dumps(config)
        except TypeError as exc:
            raise AssertionError(f"{what}: config() is not JSON-serialisable: {exc}") from exc
        again = build_loss(config, registry=registry).config()
        if again != config:
            raise AssertionError(f"{what}: build_loss(config()) gives {again}, expected {config}")


def _check_finite(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None,
                  mode: str, dim: int, **_: Any) -> None:
    crit = _build(name, info, mode, params, registry)
    cases = {
        "random logits": make_inputs(mode, dim, seed=1),
        "saturated logits (|x| ~ 40)": make_inputs(mode, dim, seed=2, scale=40.0),
        "an empty target": make_inputs(mode, dim, seed=3, empty=True),
    }
    for label, (logits, target) in cases.items():
        _value_and_grad(crit, logits, target, f"{_tag(info, 'finite', mode, dim)} on {label}")


def _check_compiled(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None,
                    mode: str, dim: int, **_: Any) -> None:
    what = _tag(info, "compiled", mode, dim)
    logits, target = make_inputs(mode, dim, seed=4)
    eager = _build(name, info, mode, params, registry, compile=False)
    compiled = _build(name, info, mode, params, registry, compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileWarning)
        try:
            v_c, g_c = _value_and_grad(compiled, logits, target, what)
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"{what}: the compiled loss raised {type(exc).__name__}: {exc}") from exc
    failed = [str(w.message) for w in caught if issubclass(w.category, CompileWarning)]
    if failed or not compiled.uses_compile(logits.device):
        raise AssertionError(
            f"{what}: torch.compile(fullgraph=True) failed and the loss fell back to eager: "
            f"{failed[0] if failed else 'unknown reason'}. Keep the loss function pure tensor code "
            f"(no .item(), no Python branching on tensor values, no data-dependent shapes)"
        )
    v_e, g_e = _value_and_grad(eager, logits, target, what + " (eager)")
    ok, diff = _close(v_c, v_e, 1e-5, 1e-7)
    if not ok:
        raise AssertionError(f"{what}: compiled value {v_c.item():.8g} != eager {v_e.item():.8g} (|diff| {diff:.3g})")
    ok, diff = _grad_close(g_c, g_e, 1e-5)
    if not ok:
        raise AssertionError(f"{what}: compiled gradient differs from eager by up to {diff:.3g}")


def _check_unknown_param(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None,
                         **_: Any) -> None:
    what = _tag(info, "unknown_param")
    try:
        _build(name, info, info.modes[0], {**params, _UNKNOWN: 1.0}, registry)
    except LossConfigError as exc:
        if _UNKNOWN not in str(exc):
            raise AssertionError(f"{what}: the LossConfigError does not name the parameter: {exc}") from exc
        return
    except Exception as exc:
        raise AssertionError(
            f"{what}: an unknown parameter raised {type(exc).__name__}: {exc}; expected LossConfigError "
            f"(derive the params model from segloss_registry.LossParams, which forbids extra fields)"
        ) from exc
    raise AssertionError(
        f"{what}: an unknown parameter '{_UNKNOWN}' was accepted; derive the params model from "
        f"segloss_registry.LossParams (extra='forbid')"
    )


def _check_schema(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None, **_: Any) -> None:
    what = _tag(info, "schema")
    try:
        schema = info.params.model_json_schema()
        text = json.dumps(schema)
    except Exception as exc:
        raise AssertionError(
            f"{what}: {info.params.__name__}.model_json_schema() failed: {type(exc).__name__}: {exc}"
        ) from exc
    if json.loads(text).get("type") != "object":
        raise AssertionError(f"{what}: the schema is not an object schema: {text[:200]}")
    props = schema.get("properties", {})
    missing = [f for f in info.params.model_fields if f not in props]
    if missing:
        raise AssertionError(f"{what}: the schema lacks the fields {missing}")
    required = [f for f, fi in info.params.model_fields.items() if fi.is_required()]
    if required:
        raise AssertionError(f"{what}: fields without a default: {required}; give every parameter a default")


def _check_ignore_index(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None,
                        mode: str, dim: int, **_: Any) -> None:
    what = _tag(info, "ignore_index", mode, dim)
    crit = _build(name, info, mode, params, registry, ignore_index=IGNORE_INDEX)
    logits, target = make_inputs(mode, dim, seed=5)
    g = torch.Generator().manual_seed(6)
    ignored = torch.rand(target.shape, generator=g) < 0.3  # pixels (binary: (N,1,*S), multiclass: (N,*S))
    target = target.masked_fill(ignored, IGNORE_INDEX)
    # where the logits are ignored: per element of (N, C, *S); a multiclass pixel ignores all classes
    at = ignored.unsqueeze(1).expand_as(logits) if mode == "multiclass" else ignored
    v1, g1 = _value_and_grad(crit, logits, target, what)
    other = torch.where(at, 5.0 * torch.randn(logits.shape, generator=g), logits)
    v2, g2 = _value_and_grad(crit, other, target, what)
    ok, diff = _close(v2, v1, 1e-5, 1e-6)
    if not ok:
        raise AssertionError(
            f"{what}: changing the logits at ignored pixels changed the loss from {v1.item():.8g} to "
            f"{v2.item():.8g}; mask ignored pixels (inp.mask, inp.masked, inp.pixel_mean) before anything "
            f"that mixes pixels (sums, pooling, neighbours)"
        )
    leak = float(g1[at].abs().max()) if at.any() else 0.0
    if leak > 1e-7:
        raise AssertionError(f"{what}: the gradient at ignored pixels is {leak:.3g}, expected 0")
    ok, diff = _grad_close(g2[~at], g1[~at], 1e-5)
    if not ok:
        raise AssertionError(
            f"{what}: changing the logits at ignored pixels changed the gradient elsewhere by {diff:.3g}"
        )
    all_ignored = torch.full_like(target, IGNORE_INDEX)
    v0 = _value_and_grad(crit, logits, all_ignored, what + " with every pixel ignored")[0]
    if abs(v0.item()) > 1e-6:
        raise AssertionError(f"{what}: with every pixel ignored the loss is {v0.item():.6g}, expected 0")


def _check_half(name: str, info: LossInfo, params: Mapping[str, Any], registry: Registry | None,
                mode: str, dim: int, **_: Any) -> None:
    what = _tag(info, "half", mode, dim)
    crit = _build(name, info, mode, params, registry)
    logits, target = make_inputs(mode, dim, seed=7)
    for dtype in (torch.float16, torch.bfloat16):
        x = logits.to(dtype)
        t = target if mode == "multiclass" else target.to(dtype)
        v_h, g_h = _value_and_grad(crit, x, t, f"{what} {dtype}")
        t32 = target if mode == "multiclass" else t.float()
        v_f = _value_and_grad(crit, x.float(), t32, f"{what} float32")[0]
        if not _close(v_h, v_f, 1e-3, 1e-3)[0]:
            raise AssertionError(
                f"{what}: {dtype} inputs give {v_h.item():.6g}, float32 gives {v_f.item():.6g}; compute in "
                f"inp.logits' dtype (the core upcasts to float32), never in the caller's"
            )
        if g_h.dtype != dtype:
            raise AssertionError(f"{what}: the gradient for {dtype} logits has dtype {g_h.dtype}")
    v32 = _value_and_grad(crit, logits, target, f"{what} float32")[0]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        v_ac = _value_and_grad(crit, logits, target, f"{what} under autocast(bfloat16)")[0]
    if not _close(v_ac, v32, 1e-3, 1e-3)[0]:
        raise AssertionError(
            f"{what}: under autocast(bfloat16) the loss is {v_ac.item():.6g}, float32 {v32.item():.6g}"
        )


_CHECK_FNS: dict[str, Callable[..., None]] = {
    "builds": _check_builds,
    "finite": _check_finite,
    "compiled": _check_compiled,
    "unknown_param": _check_unknown_param,
    "schema": _check_schema,
    "ignore_index": _check_ignore_index,
    "half": _check_half,
}


# -- cases -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConformanceCase:
    """One check of one loss (in one mode and dimensionality where it applies); call it to run it."""

    loss: str
    check: str
    mode: str | None = None
    dim: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    registry: Registry | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        parts = [self.loss, self.check]
        if self.mode is not None:
            parts.append(self.mode)
        if self.dim is not None:
            parts.append(f"{self.dim}d")
        return "-".join(parts)

    def __call__(self) -> None:
        info = _resolve(self.loss, self.registry)
        kwargs: dict[str, Any] = {} if self.mode is None else {"mode": self.mode, "dim": self.dim}
        try:
            _CHECK_FNS[self.check](self.loss, info, self.params, self.registry, **kwargs)
        except PluginError as exc:  # the core's own check of the loss's output (shape, dtype, device, in place)
            raise AssertionError(f"{_tag(info, self.check, self.mode, self.dim)}: {exc}") from exc


def iter_cases(
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    checks: tuple[str, ...] = CHECKS,
    compile: bool = True,
    compile_all: bool = False,
    registry: Registry | None = None,
) -> Iterator[ConformanceCase]:
    """The cases of ``check_loss`` in order (see the module docstring for what each covers)."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown conformance checks {unknown}; known: {', '.join(CHECKS)}")
    info = _resolve(name, registry)
    p = dict(params or {})
    dim0 = _default_dim(info)

    def case(check: str, mode: str | None = None, dim: int | None = None) -> ConformanceCase:
        return ConformanceCase(name, check, mode, dim, p, registry)

    for check in checks:
        if check in ("builds", "unknown_param", "schema"):
            yield case(check)
        elif check == "finite":
            for mode in info.modes:
                for dim in info.dims:
                    yield case(check, mode, dim)
        elif check in ("ignore_index", "half"):
            for mode in info.modes:
                yield case(check, mode, dim0)
        elif check == "compiled" and compile:
            if compile_all:
                for mode in info.modes:
                    for dim in info.dims:
                        yield case(check, mode, dim)
            else:
                yield case(check, info.modes[0], dim0)


def conformance_cases(name: str, **options: Any) -> list[Any]:
    """``pytest.param`` objects, one per case of ``check_loss(name, **options)``; compiled ones marked ``compile``.

    ``@pytest.mark.parametrize("case", conformance_cases("my_loss"))`` and call ``case()``.
    """
    import pytest

    out = []
    for c in iter_cases(name, **options):
        marks = [pytest.mark.compile] if c.check == "compiled" else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one conformance case."""

    id: str
    check: str
    mode: str | None
    dim: int | None
    passed: bool
    message: str = ""  # the AssertionError's text when it failed
    seconds: float = 0.0

    @property
    def where(self) -> str:
        """``binary 2D``, ``multiclass``, or '' for checks that do not depend on the mode."""
        if self.mode is None:
            return ""
        return self.mode if self.dim is None else f"{self.mode} {self.dim}D"


@dataclass
class ConformanceReport:
    """What ``check_loss`` checked for one loss, and what passed.

    ``results`` holds one ``CaseResult`` per case in the order run; ``left_out`` names the checks
    not run and why (``compile=False``, a ``checks=`` subset). ``print(report)`` gives the summary.
    """

    loss: str
    qualified_name: str
    results: list[CaseResult]
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def checked(self) -> dict[str, list[str]]:
        """Check name -> where it ran (``["binary 1D", "binary 2D", ...]``, ``[""]`` for mode-free checks)."""
        out: dict[str, list[str]] = {}
        for r in self.results:
            out.setdefault(r.check, []).append(r.where)
        return out

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """One line: ``dice: 20 of 20 conformance checks passed in 3.1 s``."""
        n, bad = len(self.results), len(self.failures)
        state = f"{n} of {n} conformance checks passed" if not bad else f"{bad} of {n} conformance checks FAILED"
        return f"{self.qualified_name}: {state} in {self.seconds:.1f} s"

    def format(self) -> str:
        """The summary line, then one line per check (where it ran), each failure's message, and what was left out."""
        lines = [self.summary()]
        for check, wheres in self.checked.items():
            rows = [r for r in self.results if r.check == check]
            ok = all(r.passed for r in rows)
            places = ", ".join(w for w in wheres if w) or "once"
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {check:<13} {places}")
            for r in rows:
                if not r.passed:
                    lines.append(f"       {r.message}")
        for check, why in self.left_out.items():
            lines.append(f"  --   {check:<13} not run: {why}")
        return "\n".join(lines)

    __str__ = format

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "qualified_name": self.qualified_name,
            "passed": self.passed,
            "results": [dict(r.__dict__, where=r.where) for r in self.results],
            "left_out": dict(self.left_out),
            "seconds": self.seconds,
        }

    def raise_if_failed(self) -> ConformanceReport:
        """Raise ``ConformanceError`` (an ``AssertionError``) listing every failure; return self otherwise."""
        if self.failures:
            raise ConformanceError(self)
        return self


class ConformanceError(AssertionError):
    """``check_loss`` found failures; ``.report`` is the whole ``ConformanceReport``."""

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        bad = report.failures
        super().__init__(
            f"{report.loss}: {len(bad)} of {len(report.results)} conformance checks failed:\n  "
            + "\n  ".join(r.message for r in bad)
        )


def check_loss(
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    checks: tuple[str, ...] = CHECKS,
    compile: bool = True,
    compile_all: bool = False,
    registry: Registry | None = None,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on loss ``name`` (a name, alias or ``plugin:name``); return the report.

    ``params``: non-default parameters to check with. ``checks``: a subset of ``CHECKS``.
    ``compile=False`` skips the compiled check; ``compile_all=True`` compiles every declared
    mode and dimensionality instead of one. With ``raise_on_failure`` (the default, for use in
    tests) any failure raises one ``ConformanceError`` (an ``AssertionError``) listing every
    failed check, with the report as ``.report``; otherwise the report is returned either way.
    """
    info = _resolve(name, registry)
    cases = list(iter_cases(name, params=params, checks=checks, compile=compile, compile_all=compile_all,
                            registry=registry))
    results = []
    for c in cases:
        t0 = time.perf_counter()
        try:
            c()
        except AssertionError as exc:
            results.append(CaseResult(c.id, c.check, c.mode, c.dim, False, str(exc), time.perf_counter() - t0))
        else:
            results.append(CaseResult(c.id, c.check, c.mode, c.dim, True, "", time.perf_counter() - t0))
    left_out = {check: "not among checks=" for check in CHECKS if check not in checks}
    if "compiled" in checks and not compile:
        left_out["compiled"] = "compile=False"
    report = ConformanceReport(name, info.qualified_name, results, left_out)
    return report.raise_if_failed() if raise_on_failure else report


def check_plugin(
    plugin: str,
    *,
    compile: bool = True,
    compile_all: bool = False,
    registry: Registry | None = None,
) -> list[ConformanceReport]:
    """``check_loss`` (without raising) for every loss that ``plugin`` registers, recipes left out."""
    reg = registry or get_registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        infos = [i for i in reg.all_losses() if i.plugin == plugin and isinstance(i, LossInfo)]
    return [check_loss(i.qualified_name, compile=compile, compile_all=compile_all, registry=registry,
                       raise_on_failure=False) for i in sorted(infos, key=lambda i: i.name)]
