"""A composite does its shared work once: one sigmoid (or softmax) per call, forward and backward.

Shown two ways: counting aten ops dispatched by the eager composite, and counting the
transcendental ops in the forward and backward graphs that AOTAutograd hands the compiler
for the compiled composite (the graphs torch.compile fuses).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segloss_registry import build_loss

TRANSCENDENTAL = ("exp", "log1p", "log", "sigmoid", "_log_softmax", "_softmax", "log_sigmoid_forward", "tanh")


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _transcendental(counts: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k in TRANSCENDENTAL}


def _eager_counts(spec: str, mode: str):
    C = 1 if mode == "binary" else 3
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    t = torch.randint(0, C, (2, 8, 8)) if mode == "multiclass" else (torch.rand(2, C, 8, 8) > 0.5).float()
    crit = build_loss(spec, mode=mode, compile=False)
    with _CountOps() as fwd:
        loss = crit(x, t)
    with _CountOps() as bwd:
        loss.backward()
    return _transcendental(fwd.counts), _transcendental(bwd.counts)


def test_binary_composite_runs_one_sigmoid_pass():
    single_f, single_b = _eager_counts("bce", "binary")
    multi_f, multi_b = _eager_counts("bce + dice + iou + focal", "binary")
    # p by torch.sigmoid, log1p(exp(-|x|)) for the logs: a select on x >= 0 instead of the sigmoid
    # reads a bool mask, which the CPU kernels run ~15x slower than the float passes
    assert single_f == {"exp": 1, "log1p": 1, "sigmoid": 1}
    assert multi_f == single_f  # dice, iou and focal reuse bce's sigmoid
    assert multi_b == single_b == {}  # the backward needs no transcendental op at all


def test_multiclass_composite_runs_one_softmax():
    f, _ = _eager_counts("ce + dice + iou + focal", "multiclass")
    assert f == {"_log_softmax": 1, "exp": 1}


def test_region_sums_are_shared_between_dice_and_iou():
    x = torch.randn(2, 1, 8, 8)
    t = (torch.rand(2, 1, 8, 8) > 0.5).float()
    with _CountOps() as one:
        build_loss("dice", compile=False)(x, t)
    with _CountOps() as two:
        build_loss("dice + iou", compile=False)(x, t)
    assert two.counts["sum"] == one.counts["sum"]


@pytest.mark.compile
def test_compiled_graphs_hold_one_sigmoid_pass_forward_and_none_backward():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs: dict[str, Counter[str]] = {}

    def record(name):
        def compiler(gm, example_inputs):
            c: Counter[str] = Counter()
            for node in gm.graph.nodes:
                if node.op == "call_function":
                    c[getattr(node.target, "__name__", str(node.target)).split(".")[0]] += 1
            graphs[name] = c
            return make_boxed_func(gm.forward)

        return compiler

    backend = aot_autograd(fw_compiler=record("fw"), bw_compiler=record("bw"))
    results = {}
    for dtype in (torch.float32, torch.float64):
        for spec in ("bce", "bce + dice + focal"):
            crit = build_loss(spec, compile=False)
            fn = torch.compile(crit._compute, backend=backend, fullgraph=True)
            x = torch.randn(2, 1, 8, 8, dtype=dtype, requires_grad=True)
            t = (torch.rand(2, 1, 8, 8) > 0.5).to(dtype)
            w = torch.ones(len(crit.terms), dtype=dtype)
            total, _, _ = fn(x, t, None, w, False, False, False, False)
            total.backward()
            results[spec, dtype] = (_transcendental(graphs["fw"]), _transcendental(graphs["bw"]))
    # float32 on the CPU: log1p(exp(-|x|)) by _fastmath's polynomial (no log1p op); float64: torch.log1p
    assert results["bce", torch.float32] == ({"exp": 1}, {})
    assert results["bce", torch.float64] == ({"exp": 1, "log1p": 1}, {})
    for dtype in (torch.float32, torch.float64):
        assert results["bce + dice + focal", dtype] == results["bce", dtype]


def _compiled_code(spec: str, options: dict[str, object] | None) -> tuple[list[str], list[str]]:
    """The C++ of ``spec``'s own compiled graph on the CPU (forward, backward), compiled afresh
    with ``_compile.INDUCTOR_OPTIONS`` set to ``options`` (None: the project's)."""
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code

    from segloss_registry import _compile

    crit = build_loss(spec, compile=True)
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    t = (torch.rand(2, 1, 32, 32) > 0.5).float()

    def step() -> None:
        crit(x, t).backward()

    saved = _compile.INDUCTOR_OPTIONS
    if options is not None:
        _compile.INDUCTOR_OPTIONS = options
    try:
        with inductor_config.patch(force_disable_caches=True):
            _, codes = run_and_get_code(step)
    finally:
        _compile.INDUCTOR_OPTIONS = saved
    return [c for c in codes if "tangents_" not in c], [c for c in codes if "tangents_" in c]


@pytest.mark.compile
def test_compiled_cpu_forward_sums_every_term_in_the_loop_that_computes_it():
    """The forward of a compiled composite returns scalars only: no per-element tensor is written
    to memory and read back. With inductor's CPU default (realize_cpu_opcount_threshold = 50) the
    focal element (past 50 operations) is written out and summed by a second loop; the project's
    ``INDUCTOR_OPTIONS`` keep it in registers (``profiles/perf_internals.py fusion`` times both)."""
    for spec in ("bce + dice + focal", "focal + dice + iou + tversky"):
        fw, bw = _compiled_code(spec, None)
        assert len(fw) == 1 and len(bw) == 1, (len(fw), len(bw))
        assert ".store(" not in fw[0], f"{spec}: the compiled forward writes a per-element tensor"
        assert ".store(" in bw[0]  # the gradient: the one per-element tensor a step writes
    fw, _ = _compiled_code("bce + dice + focal", {})  # inductor's defaults: what the option is for
    assert ".store(" in fw[0]
