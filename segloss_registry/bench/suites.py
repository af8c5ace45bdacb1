"""Beyond one run: what each term adds (``per_term``), how time grows with the data (``scaling``),
and suites of rows read from a TOML file (``run_suite``; ``profiles/suites/*.toml``).

The core names no loss: the specs live in the suite files and scenarios.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from .._composite import build_loss
from .._errors import SeglossError, did_you_mean
from .._machine import machine_info
from .._options import LossOptions
from .candidates import OURS, Candidate
from .config import BenchConfig, numel
from .inputs import make_inputs
from .measure import measure
from .report import BenchReport, markdown_table, text_table
from .run import run_benchmark

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["PerTerm", "per_term", "Scaling", "scaling", "Suite", "load_suite", "run_suite", "shrink_shape"]

Log = Callable[[str], None]


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# -- per term ---------------------------------------------------------------------------------------
@dataclass
class PerTerm:
    """What each term adds to a composite: the composite minus the composite without it, per round."""

    config: BenchConfig
    full_ms: dict[str, float | None]  # "compiled" / "eager" -> median of the whole composite
    rows: list[dict[str, Any]]  # term, without (its spec), added_ms[kind], share[kind], error[kind]

    def _table(self) -> tuple[list[str], list[list[str]]]:
        kinds = list(self.full_ms)
        head = ["term", *[f"{k} adds ms (share)" for k in kinds], "composite without it"]
        rows = [["(whole composite)", *[_ms(self.full_ms[k]) for k in kinds], self.config.spec]]
        for r in self.rows:
            cells = []
            for k in kinds:
                add, share = r["added_ms"].get(k), r["share"].get(k)
                cells.append(r["error"].get(k) or ("-" if add is None else f"{add:+.2f} ({100 * share:.0f}%)"))
            rows.append([r["term"], *cells, r["without"] or "(nothing)"])
        return head, rows

    def format_text(self) -> str:
        return "\n".join([f"per-term cost of {self.config.spec!r}: median over rounds of (composite - "
                          f"composite without the term)", *text_table(*self._table())])

    def format_markdown(self) -> str:
        return "\n".join(markdown_table(*self._table()))

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.config.spec, "full_ms": self.full_ms, "rows": self.rows}


def _common_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The build_loss options that apply to every term (mode, ignore_index, ...), not per-loss parameters."""
    return {k: v for k, v in kwargs.items() if k in LossOptions.model_fields}


def per_term(cfg: BenchConfig, log: Log | None = None) -> PerTerm:
    """Time the composite and, for each term, the composite without it (interleaved, same inputs)."""
    crit = build_loss(cfg.spec, mode=cast(Any, cfg.mode), compile=False, **cfg.loss_kwargs)
    terms = crit.terms
    if len(terms) < 2:
        raise SeglossError(f"bench --per-term: {cfg.spec!r} has one term; give a composite such as 'a+b'")
    common = _common_kwargs(cfg.loss_kwargs)
    logits, target = make_inputs(cfg.mode, cfg.shape, cfg.dtype, cfg.device, cfg.seed)
    kinds = [k for k, on in (("compiled", cfg.compiled), ("eager", cfg.eager)) if on]
    if not kinds:
        raise SeglossError("bench: nothing to measure (both --no-eager and --no-compiled)")
    withouts = [" + ".join(u.spec() for u in terms if u is not t) for t in terms]
    cands: list[Candidate] = []
    index: dict[tuple[int, str], int] = {}
    for j, spec in enumerate([cfg.spec, *withouts]):
        for kind in kinds:
            kw = cfg.loss_kwargs if j == 0 else common
            c = build_loss(spec, mode=cast(Any, cfg.mode), compile=kind == "compiled", **kw)
            index[(j, kind)] = len(cands)
            cands.append(Candidate(f"{OURS} {kind} {c.spec}", OURS, c, target, kind == "compiled", reference=not cands))
    results, _ = measure(cands, logits, cfg.steps, cfg.warmup, cfg.progress, log)
    full = {k: results[index[(0, k)]] for k in kinds}
    rows = []
    for i, t in enumerate(terms):
        row: dict[str, Any] = {"term": t.spec(), "without": withouts[i], "added_ms": {}, "share": {}, "error": {}}
        for k in kinds:
            whole, rest = full[k], results[index[(i + 1, k)]]
            if whole.error or rest.error:
                row["error"][k] = whole.error or rest.error
                continue
            row["added_ms"][k] = statistics.median(a - b for a, b in zip(whole.times_ms, rest.times_ms))
            row["share"][k] = row["added_ms"][k] / whole.median_ms
        rows.append(row)
    return PerTerm(cfg, {k: (full[k].median_ms if full[k].times_ms else None) for k in kinds}, rows)


# -- scaling ----------------------------------------------------------------------------------------
@dataclass
class Scaling:
    """Time against the data size: per shape, each candidate's median and its growth against the data."""

    name: str
    config: BenchConfig
    shapes: list[tuple[int, ...]]
    times: dict[str, list[float | None]]  # candidate -> median ms per shape
    errors: dict[str, str] = field(default_factory=dict)

    def growth(self, name: str) -> list[float | None]:
        """Per shape after the first: (time ratio) / (size ratio) to the previous shape; > 1 grows faster."""
        ts, out = self.times[name], []
        for i in range(1, len(self.shapes)):
            a, b = ts[i - 1], ts[i]
            size = numel(self.shapes[i]) / numel(self.shapes[i - 1])
            out.append(None if a is None or b is None or a <= 0 else (b / a) / size)
        return out

    def exponent(self, name: str) -> float | None:
        """k in time ~ size^k from the first to the last shape measured (1: linear in the data)."""
        pairs = [(numel(s), t) for s, t in zip(self.shapes, self.times[name]) if t]
        if len(pairs) < 2 or pairs[-1][0] == pairs[0][0]:
            return None
        return math.log(pairs[-1][1] / pairs[0][1]) / math.log(pairs[-1][0] / pairs[0][0])

    def _table(self) -> tuple[list[str], list[list[str]]]:
        names = list(self.times)
        head = ["shape", "elements", *[f"{n} ms (growth)" for n in names]]
        rows = []
        for i, s in enumerate(self.shapes):
            cells = []
            for n in names:
                t = self.times[n][i]
                g = self.growth(n)[i - 1] if i else None
                flag = " faster than data" if g is not None and g > 1.15 else ""
                cells.append("-" if t is None else f"{t:.2f}" + (f" ({g:.2f}{flag})" if g is not None else ""))
            rows.append(["x".join(map(str, s)), str(numel(s)), *cells])
        exps = [self.exponent(n) for n in names]
        rows.append(["time ~ size^k", "k =", *["-" if e is None else f"{e:.2f}" for e in exps]])
        return head, rows

    def format_text(self) -> str:
        return "\n".join([f"scaling '{self.name}': {self.config.spec!r} {self.config.mode}; growth = time ratio / size "
                          f"ratio to the previous row (> 1: the cost grows faster than the data)",
                          *text_table(*self._table())])

    def format_markdown(self) -> str:
        return "\n".join(markdown_table(*self._table()))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.config.spec, "mode": self.config.mode,
                "shapes": [list(s) for s in self.shapes], "times_ms": self.times, "errors": self.errors,
                "growth": {n: self.growth(n) for n in self.times},
                "exponent": {n: self.exponent(n) for n in self.times}}


def _short(name: str) -> str:
    """A candidate's column name: ours by kind, a peer by library and kind."""
    if name.startswith(f"{OURS} compiled"):
        return f"{OURS} compiled"
    if name.startswith(f"{OURS} eager"):
        return f"{OURS} eager"
    lib = name.split(" ", 1)[0]
    return f"{lib} ({name.rsplit('(', 1)[-1].rstrip(')')})" if "(" in name else lib


def scaling(name: str, cfg: BenchConfig, shapes: Sequence[tuple[int, ...]], log: Log | None = None) -> Scaling:
    """``run_benchmark`` at each shape (same spec, no ``also``, no parts); medians per candidate."""
    times: dict[str, list[float | None]] = {}
    errors: dict[str, str] = {}
    for i, shape in enumerate(shapes):
        if log:
            log(f"scaling {name}: {'x'.join(map(str, shape))}")
        rep = run_benchmark(replace(cfg, shape=tuple(shape), also=()), log=None)
        for m in rep.results:
            if "% of '" in m.note:
                continue
            key = _short(m.name)
            times.setdefault(key, [None] * len(shapes))
            if m.error:
                errors[key] = m.error
            elif m.times_ms:
                times[key][i] = m.median_ms
    times = {k: v for k, v in times.items() if any(t is not None for t in v)}
    return Scaling(name, cfg, [tuple(s) for s in shapes], times, errors)


# -- suites -----------------------------------------------------------------------------------------
_ROW_KEYS = ("name", "spec", "mode", "shape", "dtype", "dtypes", "also", "libraries", "compiled_peers", "per_term",
             "loss", "steps", "warmup", "eager", "compiled", "peers", "unchecked", "save_policies")
_SCALING_KEYS = ("name", "spec", "mode", "shapes", "dtype", "libraries", "compiled_peers", "loss", "steps", "warmup",
                 "eager", "compiled")
_TOP_KEYS = ("description", "time_limit_s", "defaults", "row", "scaling")


@dataclass
class Suite:
    """Rows (one ``run_benchmark`` each, per dtype, optionally with ``per_term``) and scaling series."""

    name: str
    description: str
    time_limit_s: float | None
    defaults: dict[str, Any]
    rows: list[dict[str, Any]]
    scalings: list[dict[str, Any]]


def _check_keys(where: str, data: dict[str, Any], allowed: Sequence[str]) -> None:
    for k in data:
        if k not in allowed:
            raise SeglossError(f"suite {where}: unknown key '{k}'{did_you_mean(k, list(allowed))}; "
                               f"keys: {', '.join(allowed)}")


def find_suite(name_or_path: str) -> Path:
    """A suite file: a path, or NAME in ``profiles/suites/`` (here or the repository's)."""
    from ..scenarios import scenario_dirs

    p = Path(name_or_path)
    if p.suffix == ".toml":
        if not p.is_file():
            raise SeglossError(f"suite file {p} does not exist")
        return p
    found = [d / "suites" / f"{name_or_path}.toml" for d in scenario_dirs()]
    for f in found:
        if f.is_file():
            return f
    known = sorted({f.stem for d in scenario_dirs() for f in (d / "suites").glob("*.toml")})
    raise SeglossError(f"unknown suite '{name_or_path}'{did_you_mean(name_or_path, known)}; suites: "
                       f"{', '.join(known) or '(none found in profiles/suites/)'}")


def load_suite(name_or_path: str) -> Suite:
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SeglossError(f"suite {path}: cannot read it ({exc})") from None
    _check_keys(str(path), data, _TOP_KEYS)
    rows, scal = list(data.get("row", [])), list(data.get("scaling", []))
    for r in rows:
        _check_keys(f"{path} [[row]]", r, _ROW_KEYS)
        if not isinstance(r.get("spec"), str):
            raise SeglossError(f"suite {path}: every [[row]] needs spec = \"...\" (a loss spec)")
    for s in scal:
        _check_keys(f"{path} [[scaling]]", s, _SCALING_KEYS)
        if not isinstance(s.get("spec"), str) or not s.get("shapes"):
            raise SeglossError(f"suite {path}: every [[scaling]] needs spec and shapes = [[N, C, ...], ...]")
    limit = data.get("time_limit_s")
    return Suite(path.stem, str(data.get("description", "")), None if limit is None else float(limit),
                 dict(data.get("defaults", {})), rows, scal)


def shrink_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """``(N, C, *S)`` -> ``(min(N, 2), C, *max(2, s // factor))`` (a quick check of a suite on a CPU)."""
    if factor <= 1:
        return tuple(shape)
    return (min(shape[0], 2), shape[1], *(max(2, s // factor) for s in shape[2:]))


def _cfg(entry: dict[str, Any], defaults: dict[str, Any], over: dict[str, Any], dtype: str | None = None
         ) -> BenchConfig:
    merged = {**defaults, **entry}
    kw: dict[str, Any] = {k: merged[k] for k in ("mode", "steps", "warmup", "eager", "compiled", "peers",
                                                 "compiled_peers", "device", "unchecked", "save_policies")
                                if k in merged}
    kw.update({k: v for k, v in over.items() if v is not None and k != "shrink"})
    if "libraries" in merged:
        kw["libraries"] = tuple(merged["libraries"])
    shape = tuple(merged.get("shape", (8, 1, 256, 256)))
    return BenchConfig(spec=merged["spec"], shape=shrink_shape(shape, over.get("shrink") or 1),
                       dtype=dtype or merged.get("dtype", "float32"), also=tuple(merged.get("also", ())),
                       loss_kwargs=dict(merged.get("loss", {})), name=merged.get("name"), progress=False, **kw)


@dataclass
class SuiteResult:
    suite: Suite
    machine: dict[str, Any]
    reports: list[tuple[str, BenchReport]] = field(default_factory=list)
    per_terms: list[tuple[str, PerTerm]] = field(default_factory=list)
    scalings: list[Scaling] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite.name, "description": self.suite.description, "machine": self.machine,
                "elapsed_s": self.elapsed_s, "skipped": self.skipped,
                "rows": [{"name": n, **r.to_dict()} for n, r in self.reports],
                "per_term": [{"name": n, **p.to_dict()} for n, p in self.per_terms],
                "scaling": [s.to_dict() for s in self.scalings]}

    def format_markdown(self) -> str:
        out = [f"# suite {self.suite.name}: {self.suite.description}", "",
               f"machine: {self.machine['machine']}; torch {self.machine['torch']}, {self.machine['threads']} threads; "
               f"{self.elapsed_s:.0f} s", ""]
        for n, r in self.reports:
            c = r.config
            out += [f"## {n}: `{c.spec}` {c.mode} {'x'.join(map(str, c.shape))} {c.dtype} on {c.device}", "",
                    r.format_markdown(), ""]
        for n, p in self.per_terms:
            out += [f"## per term: {n}", "", p.format_markdown(), ""]
        for s in self.scalings:
            out += [f"## scaling: {s.name} (`{s.config.spec}` {s.config.mode})", "", s.format_markdown(), ""]
        if self.skipped:
            out += ["## skipped (time limit)", "", *[f"- {s}" for s in self.skipped], ""]
        return "\n".join(out)


def run_suite(name_or_path: str, log: Log | None = None, **overrides: Any) -> SuiteResult:
    """Every row (per dtype) and scaling series of a suite; stops starting new ones past ``time_limit_s``.

    ``overrides``: device, steps, warmup, eager, compiled, compiled_peers, peers (None: the suite's),
    ``shrink`` (``shrink_shape``).
    """
    suite = load_suite(name_or_path)
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    device = overrides.get("device") or suite.defaults.get("device", "cpu")
    res = SuiteResult(suite, machine_info(device))

    def over_time(what: str) -> bool:
        if suite.time_limit_s is not None and time.perf_counter() - t0 > suite.time_limit_s:
            res.skipped.append(what)
            return True
        return False

    for row in suite.rows:
        for dtype in row.get("dtypes", [row.get("dtype", suite.defaults.get("dtype", "float32"))]):
            name = f"{row.get('name', row['spec'])} {dtype}"
            if over_time(name):
                continue
            cfg = _cfg(row, suite.defaults, overrides, dtype)
            say(f"row {name}")
            res.reports.append((name, run_benchmark(cfg)))
            if row.get("per_term") and not over_time(f"per term {name}"):
                say(f"per term {name}")
                res.per_terms.append((name, per_term(replace(cfg, also=()))))
    for s in suite.scalings:
        name = str(s.get("name", s["spec"]))
        if over_time(f"scaling {name}"):
            continue
        entry = {k: v for k, v in s.items() if k != "shapes"}
        cfg = _cfg(entry, suite.defaults, overrides)
        shapes = [shrink_shape(tuple(x), overrides.get("shrink") or 1) for x in s["shapes"]]
        res.scalings.append(scaling(name, cfg, shapes, say))
    res.elapsed_s = time.perf_counter() - t0
    return res


def write_suite(res: SuiteResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``<out>/<suite>.json`` and ``<out>/<suite>.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / f"{res.suite.name}.json", out / f"{res.suite.name}.md"
    j.write_text(json.dumps(res.to_dict(), indent=2, default=str), encoding="utf-8")
    m.write_text(res.format_markdown(), encoding="utf-8")
    return j, m


