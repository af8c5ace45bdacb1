"""Spec and config fuzzing: build_loss raises only the spec/config errors, and never runs code."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segloss_registry as sr
from segloss_registry import (
    AmbiguousLossError,
    CompositeLoss,
    LossConfigError,
    SpecSyntaxError,
    UnknownLossError,
    build_loss,
)

ALLOWED = (SpecSyntaxError, UnknownLossError, LossConfigError, AmbiguousLossError)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    NAMES = sorted({n for i in sr.list_losses() for n in (i.name, *i.aliases, i.qualified_name)})
PARAMS = sorted({f for i in sr.list_losses() for f in i.params.model_fields})


def attempt(spec: object, **kw: object) -> None:
    """build_loss either builds a CompositeLoss or raises one of the allowed errors, with a message."""
    try:
        out = build_loss(spec, **kw)
    except ALLOWED as exc:
        assert str(exc).strip(), type(exc)
        return
    assert isinstance(out, CompositeLoss)
    # what was built describes itself and rebuilds from its config
    assert build_loss(out.config()).spec == out.spec


# -- arbitrary text ----------------------------------------------------------------------------------------
@SETTINGS
@given(st.text(max_size=80))
def test_arbitrary_text(spec: str) -> None:
    attempt(spec)


@SETTINGS
@given(st.text(alphabet="abcdeilou_:+*/()=,.[]{}'\"0123456789 -eE\n\t\\#@!", max_size=60))
def test_spec_alphabet_soup(spec: str) -> None:
    attempt(spec)


# -- grammar-ish specs ---------------------------------------------------------------------------------------
literals = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["True", "False", "None", "'x'", "[]", "[1.0, 2.0]", "[1, -1]", "(1,)", "{}", "{'a': 1}",
                     "1e400", "-1e400", "nan", "inf", "0x10", "1_000", "1j", "b'x'", "...", "[[1]]", "'''a'''"]),
)
names = st.one_of(st.sampled_from(NAMES), st.from_regex(r"[a-z_][a-z0-9_]{0,8}(:[a-z_]{1,6})?", fullmatch=True))
kwargs = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), st.from_regex(r"[a-z_]{1,6}", fullmatch=True)),
                            literals), max_size=3)


@st.composite
def terms(draw: st.DrawFn) -> str:
    name = draw(names)
    kw = draw(kwargs)
    call = f"{name}({', '.join(f'{k}={v}' for k, v in kw)})" if kw or draw(st.booleans()) else name
    factor = draw(st.one_of(st.none(), literals))
    if factor is None:
        return call
    return draw(st.sampled_from([f"{factor}*{call}", f"{call}*{factor}", f"{call}/{factor}", f"{factor} * {call}"]))


@SETTINGS
@given(st.lists(terms(), min_size=1, max_size=4), st.sampled_from(["+", " + ", "-", "*", "+ +", ","]))
def test_grammar_like_specs(parts: list[str], joiner: str) -> None:
    attempt(joiner.join(parts))


@SETTINGS
@given(st.lists(terms(), min_size=1, max_size=3).map("+".join),
       st.sampled_from(["binary", "multiclass", "multilabel", "Binary", "softmax", 3, None]),
       st.one_of(st.none(), st.integers(-3, 300), st.floats(), st.booleans(), st.just("255")),
       st.sampled_from(["first", "always", "never", "sometimes", True]))
def test_specs_with_options(spec: str, mode: object, ignore_index: object, check: object) -> None:
    attempt(spec, mode=mode, ignore_index=ignore_index, check_inputs=check)


# -- nested configs ------------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**400), 10**400), st.floats(), st.text(max_size=12),
    st.sampled_from(NAMES), st.sampled_from(PARAMS), st.binary(max_size=4),
)
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.sampled_from(NAMES + PARAMS + ["weight", "params", "loss", "plugin", "terms",
                                                                   "mode"]), st.text(max_size=8), st.integers()),
                        inner, max_size=4),
    ),
    max_leaves=12,
)


@SETTINGS
@given(nested)
def test_nested_configs(config: object) -> None:
    attempt(config)


@SETTINGS
@given(st.dictionaries(st.sampled_from(NAMES), nested, min_size=1, max_size=3))
def test_named_term_configs(config: dict) -> None:
    attempt(config)


@SETTINGS
@given(st.sampled_from(NAMES), nested, nested, st.dictionaries(st.sampled_from([*PARAMS, "smoth", "x"]), nested,
                                                                max_size=3))
def test_weights_params_and_keywords(name: str, weights: object, params: object, kw: dict) -> None:
    attempt(name, weights=weights, params=params, **kw)


@SETTINGS
@given(st.fixed_dictionaries({"terms": nested}, optional={
    "mode": nested, "from_logits": nested, "ignore_index": nested, "check_inputs": nested, "compile": nested}))
def test_config_shaped_dicts(config: dict) -> None:
    attempt(config)


@pytest.mark.parametrize("spec", [
    "dice(smooth=1" + "0" * 5000 + ")",
    "(" * 200 + "dice" + ")" * 200,
    "+".join(["dice"] * 1500),
    "dice(smooth=" + "[" * 100 + "]" * 100 + ")",
    "dice(smooth=9" * 300,
    "\x00dice",
    "dice\u200b",
    "ｄｉｃｅ",  # full-width letters: Python's parser normalises identifiers (NFKC)
    "dice(smooth=1)(gamma=2)",
    "dice.smooth",
    "lambda: dice",
    "[dice for dice in ()]",
    "dice if True else bce",
    "dice @ bce",
    "dice ** 2",
    "-dice",
    "not dice",
    "dice; bce",
    "f'{dice}'",
])
def test_known_nasty_specs(spec: str) -> None:
    attempt(spec)


@pytest.mark.parametrize("config", [
    {"dice": {"params": 5}},
    {"dice": {"params": [("smooth", 0.0)]}},
    {"terms": 5},
    {"terms": None},
    {"terms": "dice"},
    {"terms": [{"loss": "dice", "weight": 10**400}]},
    {"terms": [{"loss": "dice", "params": {"smooth": 10**400}}]},
    {"dice": 10**400},
    {"dice": float("nan")},
    [("dice", 10**400)],
    [("dice", {"weight": [1]})],
    {"terms": [{"loss": ["dice"]}]},
    {"terms": [{"loss": "dice"}], "mode": ["binary"]},
    {"terms": [{"loss": "dice"}], "compile": {}},
    {"terms": [{"loss": "dice"}], "ignore_index": 1.5},
    {"0.5*dice": {"smooth": 0.0}},
    {"dice+bce": 1.0},
    {"__import__('os')": 1.0},
    {1: 1.0},
    {"dice": {1: 2}},
])
def test_known_nasty_configs(config: object) -> None:
    attempt(config)


def test_weights_keywords_edge_cases() -> None:
    for weights in (10**400, [10**400], {"dice": 10**400}, {"dice": math.inf}, {3: 1.0}, "1", [[1.0]], {None: 1}):
        attempt("dice", weights=weights)
    for params in (5, [1], {"dice": 5}, {"dice": {"smooth": 10**400}}, {None: {}}):
        attempt("dice", params=params)


# -- never run code -----------------------------------------------------------------------------------------
def _evil(marker: Path) -> list[object]:
    cmd = f"touch {marker}"
    code = f"__import__('os').system('{cmd}')"
    return [
        code,
        f"dice + {code}",
        f"dice(smooth={code})",
        f"{code}*dice",
        f"dice(smooth=(lambda: {code})())",
        f"dice(smooth=[{code}])",
        f"dice(smooth={{'a': {code}}})",
        f"exec(\"{code}\")",
        f"eval(\"{code}\")",
        f"__builtins__.__import__('os').system('{cmd}')",
        f"dice(smooth=__import__('os').system('{cmd}') or 1)",
        f"os:system(smooth='{cmd}')",
        f"subprocess:run(args='{cmd}')",
        {code: 1.0},
        {"dice": {"smooth": code}},
        {"terms": [{"loss": code, "plugin": "os"}]},
        [code],
        [(code, 1.0)],
    ]


def test_specs_never_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for spec in _evil(marker):
        attempt(spec)
        assert not marker.exists(), spec
    for kw in ({"smooth": f"__import__('os').system('touch {marker}')"},
               {"params": {"dice": {"smooth": f"__import__('os').system('touch {marker}')"}}}):
        attempt("dice", **kw)
    assert not marker.exists()


def test_specs_never_import_modules() -> None:
    # a qualified name is looked up among loaded plugins, never imported
    code = (
        "import sys, segloss_registry as s\n"
        "before = set(sys.modules)\n"
        "for spec in ['antigravity:fly', 'this:x', 'webbrowser:open', 'os.path:join', 'turtle']:\n"
        "    try: s.build_loss(spec)\n"
        "    except s.SeglossError: pass\n"
        "odd = {'antigravity', 'this', 'webbrowser', 'turtle'}\n"
        "new = {m for m in set(sys.modules) - before if m.split('.')[0] in odd}\n"
        "print(sorted(new))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
