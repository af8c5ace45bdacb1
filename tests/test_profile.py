"""``segloss profile`` writes traces that TensorBoard's profiler plugin parses, with the labels."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast
from xml.etree import ElementTree

import pytest
import torch

from segloss_registry import SeglossError, build_loss, profiling
from segloss_registry.cli import main
from segloss_registry.profiling import OpRow, ProfileSummary, TermTime, profile_steps, render_report
from segloss_registry.scenarios import load_scenario


def _names(trace: Path) -> list[str]:
    """The event names of a Chrome trace, read with json (independent of the profiler)."""
    return [e.get("name", "") for e in json.loads(trace.read_text())["traceEvents"]]


_REPORTED: list[ProfileSummary] = []  # the summaries `segloss profile` handed to write_report in `profiled`


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One ``segloss profile`` run (eager and compiled workers) shared by the tests below."""
    out = tmp_path_factory.mktemp("traces")
    import contextlib
    import io

    real = profiling.write_report

    def spy(path: Any, runs: Any, **kw: Any) -> Path:
        _REPORTED[:] = list(runs)
        return real(path, runs, **kw)

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.MonkeyPatch.context() as mp:
        mp.setattr(profiling, "write_report", spy)
        rc = main(["profile", "bce+dice", "--shape", "2x1x32x32", "--steps", "2", "--out", str(out), "--name", "run"])
    assert rc == 0
    return out, buf.getvalue()


def test_profile_writes_one_trace_per_variant_with_labels(profiled: tuple[Path, str]) -> None:
    out, text = profiled
    eager = sorted((out / "run").glob("eager.*.pt.trace.json"))
    compiled = sorted((out / "run").glob("compiled.*.pt.trace.json"))
    assert len(eager) == 1 and len(compiled) == 1
    names = _names(eager[0])
    # the composite's eager label, one label per term, one per step (2 active steps)
    assert names.count("segloss/eager[bce + dice]") == 2
    assert names.count("segloss/bce") == 2 and names.count("segloss/dice") == 2
    assert names.count("segloss/step") == 2
    cnames = _names(compiled[0])
    assert cnames.count("segloss/compiled[bce + dice]") == 2
    assert "segloss/bce" not in cnames  # the compiled region is one graph, labelled with the spec
    # the printed summary: top operators, peak memory, how to open the trace
    assert "self ms" in text and "peak memory in a step" in text
    assert f"tensorboard --logdir {out}" in text and "perfetto" in text.lower()


def test_torch_tb_profiler_parses_the_traces(profiled: tuple[Path, str]) -> None:
    pytest.importorskip("torch_tb_profiler")
    from torch_tb_profiler import io as tb_io
    from torch_tb_profiler.profiler.loader import RunLoader

    out, _ = profiled
    cache = tb_io.Cache(tempfile.mkdtemp())
    run = RunLoader("run", str(out / "run"), cache).load()
    # the loader logs and swallows parse errors, so count what it parsed
    assert sorted(run.workers) == ["compiled", "eager"]
    profiles = list(run.get_profiles())
    assert len(profiles) == 2
    for p in profiles:
        assert {"overall", "operator", "trace"} <= {v.name for v in p.views}
        ops = {row["name"]: row for row in p.operation_table_by_name["data"]}
        assert ops, p.worker
    eager = next(p for p in profiles if p.worker == "eager")
    ops = {row["name"]: row for row in eager.operation_table_by_name["data"]}
    assert ops["aten::mul"]["calls"] >= 2  # ops from the loss, 2 active steps


def test_profile_steps_summary_counts_calls_and_peak_memory(tmp_path: Path) -> None:
    """The function other tools call: counts and memory checked against the inputs' sizes."""
    x = torch.randn(4, 1, 64, 64, requires_grad=True)
    t = (torch.rand(4, 1, 64, 64) > 0.5).float()
    crit = build_loss("bce+dice", compile=False)

    def step() -> None:
        x.grad = None
        crit(x, t).backward()

    summary = profile_steps(step, tmp_path / "r", steps=3, wait=0, warmup=1, worker="w")
    assert [p.name for p in summary.trace_files] and summary.trace_files[0].name.startswith("w.")
    labels = {r.name: r for r in summary.labels}
    assert labels["segloss/step"].calls == 3
    assert labels["segloss/bce"].calls == 3 and labels["segloss/dice"].calls == 3
    ops = [r.name for r in summary.top_ops]
    assert "aten::mul" in ops
    self_times = [r.self_us for r in summary.top_ops]
    assert self_times == sorted(self_times, reverse=True)
    # a step holds at least the gradient (N*C*H*W float32) and, eager, the sigmoid's p
    assert summary.peak_bytes is not None and summary.peak_bytes >= 2 * x.numel() * 4
    assert summary.peak_bytes < 64 * x.numel() * 4


def test_profile_reads_a_scenario_file(tmp_path: Path, capsys: Any) -> None:
    sc = tmp_path / "tiny.toml"
    sc.write_text('spec = "focal+dice"\nmode = "binary"\nshape = [2, 1, 4, 8, 8]\n'
                  "[profile]\nwait = 0\nwarmup = 1\nactive = 1\n")
    assert load_scenario(sc).shape == (2, 1, 4, 8, 8)
    rc = main(["profile", str(sc), "--variant", "eager", "--out", str(tmp_path / "traces")])
    assert rc == 0
    trace = next((tmp_path / "traces" / "tiny").glob("eager.*.pt.trace.json"))
    assert _names(trace).count("segloss/focal") == 1
    assert "focal + dice" in capsys.readouterr().out


def test_a_bad_scenario_key_is_named(tmp_path: Path) -> None:
    sc = tmp_path / "bad.toml"
    sc.write_text('spec = "dice"\nshpae = [1, 1, 4, 4]\n')
    with pytest.raises(SeglossError, match=r"unknown key 'shpae' \(did you mean 'shape'\?\)"):
        load_scenario(sc)


def test_the_committed_scenarios_load() -> None:
    root = Path(__file__).resolve().parents[1] / "profiles"
    names = {p.stem: load_scenario(p) for p in root.glob("*.toml")}
    assert {"binary_bce_dice_2d", "multiclass_ce_dice_2d", "focal_dice_3d", "large_2d"} <= names.keys()
    for sc in names.values():
        build_loss(sc.spec, mode=cast(Any, sc.mode), **sc.loss_kwargs)  # every spec builds


# -- issue 16: the offline report ------------------------------------------------------------------
class _Page(HTMLParser):
    """What the report's HTML holds: every tag with its attributes, the CSS, the numeric cells, the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.css: list[str] = []
        self.cells: list[tuple[dict[str, str], str]] = []
        self.text: list[str] = []
        self._stack: list[str] = []
        self._cell: dict[str, str] | None = None
        self._cell_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        self._stack.append(tag)
        if tag == "td" and "data-field" in a:
            self._cell, self._cell_text = a, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell, "".join(self._cell_text)))
            self._cell = None
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1] == "style":
            self.css.append(data)
        self.text.append(data)
        if self._cell is not None:
            self._cell_text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _assert_self_contained(text: str) -> _Page:
    """Nothing in the page points outside it: no http(s):, //, file: or relative references, no script/link."""
    page = _parse(text)
    refs = ("src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data", "background")
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base", "img", "audio", "video"), tag
        for name, value in attrs.items():
            if name in refs:  # only the page itself (#fragment) or inline data: no http:, //, file: or relative path
                assert value.startswith(("data:", "#")), (tag, name, value)
            assert "url(" not in value.lower() or "url(data:" in value.lower().replace(" ", ""), (tag, name, value)
            assert not re.search(r"(?<![a-z])(https?|file|ftp):", value, re.I), (tag, name, value)
            assert not name.startswith("on"), (tag, name)  # no event handlers: no code at all
        if tag == "meta":
            assert attrs.get("http-equiv", "").lower() != "refresh"
    css = "".join(page.css).lower()
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    # not even as text: nothing on the page to click that would need a network
    assert not re.search(r"https?://|(?<![a-z])file:", text, re.I)
    return page


def _ms(us: float, steps: int) -> str:
    return f"{us / steps / 1e3:.3f}"


def _expected_cells(summaries: list[ProfileSummary]) -> dict[tuple[str, ...], float]:
    """The ProfileSummary's numbers, keyed as the page's cells are (run, field, term/op/label)."""
    want: dict[tuple[str, ...], float] = {}
    for s in summaries:
        for f in ("step_us", "forward_us", "backward_us", "other_us", "step_ms", "peak_bytes",
                  "shared_forward_us", "shared_backward_us"):
            v = getattr(s, f)
            if v is not None:
                want[(s.worker, f)] = float(v)
        for t in s.terms:
            want[(s.worker, "forward_us", "term", t.name)] = t.forward_us
            want[(s.worker, "backward_us", "term", t.name)] = t.backward_us
            want[(s.worker, "calls", "term", t.name)] = t.calls
        for r in s.top_ops[:12]:
            want[(s.worker, "self_us", "op", r.name)] = r.self_us
            want[(s.worker, "total_us", "op", r.name)] = r.total_us
            want[(s.worker, "calls", "op", r.name)] = r.calls
        for r in s.labels:
            want[(s.worker, "total_us", "label", r.name)] = r.total_us
            want[(s.worker, "calls", "label", r.name)] = r.calls
    return want


def _cell_key(a: dict[str, str]) -> tuple[str, ...]:
    extra = next(((k, a[f"data-{k}"]) for k in ("term", "op", "label") if f"data-{k}" in a), None)
    return (a["data-run"], a["data-field"]) + (extra or ())


def test_the_report_opens_offline_and_shows_the_summaries_numbers(profiled: tuple[Path, str]) -> None:
    out, text = profiled
    report = out / "run" / "report.html"
    assert f"offline (one self-contained page, no network): {report}" in text
    html = report.read_text(encoding="utf-8")
    page = _assert_self_contained(html)
    summaries = _REPORTED
    assert [s.worker for s in summaries] == ["eager", "compiled"]
    want = _expected_cells(summaries)
    shown = {_cell_key(a): (a["data-value"], t) for a, t in page.cells}
    assert want.keys() <= shown.keys(), sorted(want.keys() - shown.keys())
    steps = {s.worker: s.steps for s in summaries}
    for key, value in want.items():
        raw, visible = shown[key]
        assert float(raw) == value, key
        run, field = key[0], key[1]
        if field == "calls":
            assert visible == str(int(value)), key
        elif field == "peak_bytes":
            assert visible == f"{value / 2**20:.3f}", key
        elif field == "step_ms":
            assert visible == f"{value:.3f}", key
        else:
            assert visible == _ms(value, steps[run]), key
    # the per-term labels are on the page (tables and the SVG chart), the compiled run says why it has none
    words = "".join(page.text)
    eager, compiled = summaries
    assert sorted(t.name for t in eager.terms) == ["bce", "dice"] and not compiled.terms
    for term in ("bce", "dice"):
        assert ("eager", "forward_us", "term", term) in shown
        assert re.search(rf"<text[^>]*><title>{term}</title>{term}</text>", html)
    assert "segloss/eager[bce + dice]" in words and "segloss/compiled[bce + dice]" in words
    assert "one fused graph" in words and "eager vs compiled" in words
    assert any(str(a.get("data-op")).startswith("aten::") for a, _ in page.cells)  # the operator table
    # the inline SVG charts are well-formed XML
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    assert len(svgs) >= 4
    for svg in svgs:
        ElementTree.fromstring(svg)


def _trace_split(trace: Path) -> tuple[dict[str, float], dict[str, float], float, float, float]:
    """Per-term forward and backward, total forward, backward and step, from the Chrome trace alone.

    Forward: the ranges' durations. Backward: the autograd engine's outermost
    ``evaluate_function`` events, each given to the term whose range holds the last forward op
    with its sequence number.
    """
    ev = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X"]
    terms = [e for e in ev if e["name"].startswith("segloss/") and e["name"] != "segloss/step"
             and not e["name"].startswith(("segloss/eager[", "segloss/compiled["))]
    bwd_events = [e for e in ev if e["name"].startswith("autograd::engine::evaluate_function:")]

    def inside(e: dict[str, Any], r: dict[str, Any]) -> bool:
        return bool(r["ts"] <= e["ts"] and e["ts"] + e.get("dur", 0) <= r["ts"] + r["dur"])

    outer_bwd = [b for b in bwd_events if not any(o is not b and inside(b, o) for o in bwd_events)]
    owner: dict[int, str | None] = {}
    for e in sorted(ev, key=lambda e: e["ts"]):
        seq = e.get("args", {}).get("Sequence number")
        if e.get("cat") != "cpu_op" or seq is None or any(inside(e, b) for b in bwd_events):
            continue
        owner[seq] = next((r["name"][len("segloss/"):] for r in terms if inside(e, r)), None)
    fwd = {r["name"][len("segloss/"):]: 0.0 for r in terms}
    bwd = dict.fromkeys(fwd, 0.0)
    for r in terms:
        fwd[r["name"][len("segloss/"):]] += r["dur"]
    for b in outer_bwd:
        key = owner.get(b["args"].get("Sequence number", -1))  # AccumulateGrad has none
        if key is not None:
            bwd[key] += b["dur"]
    total_fwd = sum(e["dur"] for e in ev if e["name"].startswith(("segloss/eager[", "segloss/compiled[")))
    step = sum(e["dur"] for e in ev if e["name"] == "segloss/step")
    return fwd, bwd, total_fwd, sum(b["dur"] for b in outer_bwd), step


def test_the_forward_backward_split_matches_the_trace(profiled: tuple[Path, str]) -> None:
    """The summary's split recomputed from the written Chrome trace with json only."""
    for s in _REPORTED:
        (trace,) = s.trace_files
        fwd, bwd, total_fwd, total_bwd, step = _trace_split(trace)
        def approx(v: float) -> Any:
            return pytest.approx(v, rel=1e-6, abs=0.01)  # the trace rounds to ns

        assert s.step_us is not None and s.forward_us is not None and s.backward_us is not None
        assert s.step_us == approx(step) and s.forward_us == approx(total_fwd) and s.backward_us == approx(total_bwd)
        assert 0 < s.forward_us < s.step_us and 0 < s.backward_us < s.step_us
        assert s.forward_us + s.backward_us + (s.other_us or 0.0) == pytest.approx(s.step_us)
        assert {t.name: t.forward_us for t in s.terms} == {k: approx(v) for k, v in fwd.items()}
        assert {t.name: t.backward_us for t in s.terms} == {k: approx(v) for k, v in bwd.items()}
        if s.worker == "eager":
            assert all(t.calls == s.steps and t.backward_us > 0 for t in s.terms)
            assert sum(t.forward_us for t in s.terms) <= s.forward_us


def test_the_report_escapes_every_label_and_needs_no_matplotlib(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails: the report must not need it
    evil = '<script src="https://example.com/x.js"></script>'
    s = ProfileSummary(
        out_dir=tmp_path / '"><img src=x>', trace_files=[tmp_path / "a.pt.trace.json"], worker='w"<b>&', steps=2,
        top_ops=[OpRow(evil, 400.0, 500.0, 4)], labels=[OpRow("segloss/" + evil, 100.0, 900.0, 2)],
        peak_bytes=3 * 2**20, peak_method="x", step_ms=1.0, step_us=2000.0, forward_us=900.0, backward_us=600.0,
        terms=[TermTime(evil, 2, 500.0, 300.0)])
    html = profiling.write_report(tmp_path / "r" / "report.html", [s], title=evil,
                                  context={"spec": "url(file:///etc/passwd)"}).read_text(encoding="utf-8")
    page = _parse(html)
    assert "<script" not in html and "<b>" not in html and "<img" not in html
    assert not any(t in ("script", "img", "b") for t, _ in page.tags)
    words = "".join(page.text)
    assert evil in words and 'w"<b>&' in words  # shown as text, escaped in the markup
    cells = {_cell_key(a): t for a, t in page.cells}
    assert cells[('w"<b>&', "forward_us", "term", evil)] == "0.250"
    assert cells[('w"<b>&', "shared_forward_us")] == "0.200"  # 900 - 500 us over 2 steps
    assert cells[('w"<b>&', "shared_backward_us")] == "0.150"
    assert cells[('w"<b>&', "other_us")] == "0.250"  # 2000 - 900 - 600
    assert cells[('w"<b>&', "peak_bytes")] == "3.000"
    with pytest.raises(SeglossError, match="at least one run"):
        render_report([])


def test_profile_report_path_and_no_report(tmp_path: Path, capsys: Any) -> None:
    base = ["profile", "dice", "--shape", "1x1x8x8", "--steps", "1", "--variant", "eager", "--out", str(tmp_path)]
    assert main([*base, "--name", "a", "--report", str(tmp_path / "elsewhere" / "p.html")]) == 0
    html = (tmp_path / "elsewhere" / "p.html").read_text(encoding="utf-8")
    _assert_self_contained(html)
    assert ">dice</text>" in html and not (tmp_path / "a" / "report.html").exists()
    assert main([*base, "--name", "b", "--no-report"]) == 0
    assert not (tmp_path / "b" / "report.html").exists() and list((tmp_path / "b").glob("eager.*.pt.trace.json"))
    assert "offline" not in capsys.readouterr().out.split("[eager]")[-1].split("open it with")[-1]
    assert main([*base, "--name", "c", "--top", "0"]) == 1
    assert "--top must be >= 1" in capsys.readouterr().err
