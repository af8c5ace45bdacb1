"""The conformance kit: every registered loss passes it, and it catches the faults it names.

The first test is parametrised over ``list_losses()`` at collection time (recipes left out),
so a loss added by any plugin of the project is checked without editing this file. The
compiled check runs for one mode and one dimensionality per loss (the kit's default).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ConfigDict, Field

from segloss_registry import (
    Inputs,
    LossConfigError,
    LossParams,
    NoParams,
    build_loss,
    get_registry,
    hookimpl,
    list_losses,
)
from segloss_registry.testing import (
    CHECKS,
    ConformanceCase,
    check_loss,
    conformance_cases,
    iter_cases,
    make_inputs,
    registered_plugin,
)


def _registered_cases() -> list[Any]:
    names = [info.qualified_name for info in list_losses() if info.recipe is None]
    return [case for name in names for case in conformance_cases(name)]


@pytest.mark.parametrize("case", _registered_cases())
def test_every_loss_conforms(case: ConformanceCase) -> None:
    case()


# -- what the kit covers ---------------------------------------------------------------------------
def test_cases_cover_every_declared_mode_and_dim_and_compile_once() -> None:
    info = get_registry().resolve("active_contour")  # dims (2, 3), all three modes
    cases = list(iter_cases("active_contour"))
    by_check: dict[str, list[ConformanceCase]] = {}
    for c in cases:
        by_check.setdefault(c.check, []).append(c)
    assert set(by_check) == set(CHECKS)
    assert {(c.mode, c.dim) for c in by_check["finite"]} == {(m, d) for m in info.modes for d in info.dims}
    assert [(c.mode, c.dim) for c in by_check["compiled"]] == [("binary", 2)]
    assert {c.mode for c in by_check["ignore_index"]} == set(info.modes)
    every = list(iter_cases("active_contour", compile_all=True, checks=("compiled",)))
    assert {(c.mode, c.dim) for c in every} == {(m, d) for m in info.modes for d in info.dims}
    assert list(iter_cases("active_contour", compile=False, checks=("compiled",))) == []
    ids = [p.id for p in conformance_cases("ce")]
    assert "segloss_ce:ce-compiled-multiclass-2d" not in ids and "ce-compiled-multiclass-2d" in ids
    assert "ce-finite-multiclass-1d" in ids and not any("binary" in i for i in ids)


def test_recipes_and_unknown_checks_are_refused() -> None:
    with pytest.raises(LossConfigError, match=r"recipe \('bce\+dice'\).*check_loss\('bce'\), check_loss\('dice'\)"):
        check_loss("dice_bce")
    with pytest.raises(ValueError, match="unknown conformance checks"):
        check_loss("dice", checks=("finit",))


def test_make_inputs_follow_the_mode_conventions() -> None:
    x, t = make_inputs("binary", 3)
    assert x.shape == (2, 1, 4, 8, 8) and t.shape == x.shape and set(t.unique().tolist()) <= {0.0, 1.0}
    x, t = make_inputs("multiclass", 2)
    assert x.shape == (2, 3, 8, 8) and t.shape == (2, 8, 8) and t.dtype == torch.int64
    x, t = make_inputs("multilabel", 1, empty=True)
    assert x.shape == (2, 3, 16) and t.shape == x.shape and t.sum() == 0


# -- the kit catches faulty losses ---------------------------------------------------------------------
class _Plugin:
    """A plugin object registering one loss ``fn`` under ``name``."""

    def __init__(self, name: str, fn: Any, params: type[LossParams] = NoParams, **kw: Any) -> None:
        self.name, self.fn, self.params, self.kw = name, fn, params, kw

    @hookimpl
    def register_losses(self, register: Any) -> None:
        register(self.name, self.fn, params=self.params, summary="a test loss", **self.kw)


def _failures(fn: Any, checks: tuple[str, ...], params: type[LossParams] = NoParams, **kw: Any) -> str:
    with registered_plugin(_Plugin("kit_probe", fn, params, **kw), "kit_probe_plugin"), \
            pytest.raises(AssertionError) as info:
        check_loss("kit_probe", checks=checks)
    return str(info.value)


def _brier(inp: Inputs, params: Any) -> torch.Tensor:
    return inp.pixel_mean((inp.prob - inp.target) ** 2)


@pytest.mark.compile
def test_a_correct_loss_passes_everything_including_the_compiled_check() -> None:
    with registered_plugin(_Plugin("kit_probe", _brier, modes=("binary", "multilabel"), dims=(2,)), "kit_probe_plugin"):
        check_loss("kit_probe")
        x, t = make_inputs("binary", 2)
        expected = ((torch.sigmoid(x) - t) ** 2).mean()
        torch.testing.assert_close(build_loss("kit_probe", compile=False)(x, t), expected)


def test_nan_on_an_empty_target_fails_finite() -> None:
    def recall(inp: Inputs, params: Any) -> torch.Tensor:
        return 1 - (inp.prob * inp.target).sum() / inp.target.sum()  # 0/0 on an empty target

    text = _failures(recall, ("finite",), modes=("binary",), dims=(2,))
    assert "finite [binary, 2D] on an empty target" in text and "not finite" in text


def test_a_non_scalar_loss_fails_finite() -> None:
    text = _failures(lambda inp, p: (inp.prob - inp.target) ** 2, ("finite",), modes=("binary",), dims=(2,))
    assert "finite [binary, 2D]" in text and "0-dim tensor" in text  # the kit's or the core's output check


def test_a_loss_that_ignores_the_mask_fails_ignore_index() -> None:
    def unmasked(inp: Inputs, params: Any) -> torch.Tensor:
        return ((inp.prob - inp.target) ** 2).mean()  # ignored pixels are averaged in

    text = _failures(unmasked, ("ignore_index",), modes=("binary", "multiclass"), dims=(2,))
    assert "2 of 2 conformance checks failed" in text
    assert "ignore_index [binary, 2D]: changing the logits at ignored pixels changed the loss" in text
    assert "ignore_index [multiclass, 2D]" in text


def test_a_loss_that_is_not_zero_when_all_is_ignored_fails() -> None:
    def one_minus_dice(inp: Inputs, params: Any) -> torch.Tensor:
        i, p, t = inp.region_stats()
        return (1 - 2 * i / (p + t + 1e-6)).mean()  # 1, not 0, when nothing is valid

    text = _failures(one_minus_dice, ("ignore_index",), modes=("binary",), dims=(2,))
    assert "with every pixel ignored the loss is 1, expected 0" in text


@pytest.mark.compile
def test_a_graph_break_fails_the_compiled_check() -> None:
    def data_dependent(inp: Inputs, params: Any) -> torch.Tensor:
        if float(inp.prob.mean()) > 0.5:  # Python branching on a tensor value: a graph break
            return inp.pixel_mean(inp.prob)
        return inp.pixel_mean(1 - inp.prob)

    text = _failures(data_dependent, ("compiled",), modes=("binary",), dims=(1,))
    assert "torch.compile(fullgraph=True) failed and the loss fell back to eager" in text


def test_a_params_model_without_defaults_fails_builds_and_schema() -> None:
    class Required(LossParams):
        scale: float = Field(..., gt=0, description="no default")

    text = _failures(lambda inp, p: inp.pixel_mean(inp.prob) * p.scale, ("builds", "schema"), Required,
                     modes=("binary",), dims=(2,))
    assert "2 of 2 conformance checks failed" in text
    assert "build_loss failed with defaults" in text and "fields without a default: ['scale']" in text


def test_a_params_model_that_ignores_unknown_names_fails_unknown_param() -> None:
    class Lenient(LossParams):
        model_config = ConfigDict(extra="ignore", frozen=True)  # a misspelt name would be silently dropped
        scale: float = Field(1.0, gt=0)

    text = _failures(lambda inp, p: inp.pixel_mean(inp.prob) * p.scale, ("unknown_param",), Lenient,
                     modes=("binary",), dims=(2,))
    assert "an unknown parameter 'no_such_parameter_xyz' was accepted" in text


# -- check_loss returns a report ---------------------------------------------------------------------
def test_check_loss_returns_a_report_of_what_it_checked() -> None:
    from segloss_registry.testing import ConformanceReport

    probe = _Plugin("kit_probe", _brier, modes=("binary", "multilabel"), dims=(1, 2))
    with registered_plugin(probe, "kit_probe_plugin"):
        report = check_loss("kit_probe", compile=False)
        cases = list(iter_cases("kit_probe", compile=False))
    assert isinstance(report, ConformanceReport) and report.passed and bool(report)
    assert report.qualified_name == "kit_probe_plugin:kit_probe" and report.failures == []
    # one result per case, in order: 3 mode-free checks, finite per mode x dim, ignore_index and half per mode
    assert [r.id for r in report.results] == [c.id for c in cases]
    assert len(report.results) == 3 + 2 * 2 + 2 + 2
    assert report.checked["finite"] == ["binary 1D", "binary 2D", "multilabel 1D", "multilabel 2D"]
    assert report.checked["half"] == ["binary 2D", "multilabel 2D"] and report.checked["schema"] == [""]
    assert report.left_out == {"compiled": "compile=False"} and "compiled" not in report.checked
    text = str(report)
    assert text.splitlines()[0].startswith("kit_probe_plugin:kit_probe: 11 of 11 conformance checks passed in ")
    assert "  ok   finite        binary 1D, binary 2D, multilabel 1D, multilabel 2D" in text
    assert "  --   compiled      not run: compile=False" in text
    d = report.to_dict()
    assert d["passed"] is True and len(d["results"]) == 11 and d["results"][0]["check"] == "builds"


def test_a_failing_loss_gives_a_report_with_the_failures() -> None:
    from segloss_registry.testing import ConformanceError

    def unmasked(inp: Inputs, params: Any) -> torch.Tensor:
        return ((inp.prob - inp.target) ** 2).mean()  # ignored pixels are averaged in

    with registered_plugin(_Plugin("kit_probe", unmasked, modes=("binary",), dims=(2,)), "kit_probe_plugin"):
        report = check_loss("kit_probe", compile=False, raise_on_failure=False)
        with pytest.raises(ConformanceError) as info:
            check_loss("kit_probe", checks=("ignore_index", "schema"))
    assert not report.passed and [r.check for r in report.failures] == ["ignore_index"]
    assert "changing the logits at ignored pixels changed the loss" in report.failures[0].message
    assert "1 of 6 conformance checks FAILED" in report.summary()
    assert "FAIL ignore_index  binary 2D" in str(report)
    raised = info.value.report
    assert isinstance(info.value, AssertionError)
    assert [r.check for r in raised.results] == ["ignore_index", "schema"]  # as given
    assert raised.left_out == {c: "not among checks=" for c in CHECKS if c not in ("ignore_index", "schema")}
    assert "1 of 2 conformance checks failed" in str(info.value)
