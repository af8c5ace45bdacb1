"""The compile policy and every private torch name the project touches, in one place.

Each use of a private (underscore) torch API is wrapped here with a comment saying why it is
needed and what happens when a torch release removes it: the wrapper falls back to a
behaviour that is still correct (slower, or with one more recompile), never to an error.
``tests/test_compile_internals.py`` runs every fallback with the private name removed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "is_compiling",
    "mark_dynamic",
    "no_donated_buffers",
    "allow_retained_backward",
    "fresh_function",
    "permanent_failure",
    "failure_text",
    "profiler_active",
    "SAVE_POLICIES",
    "cheap_log1p",
    "saves_softplus",
    "with_saved_softplus",
    "INDUCTOR_OPTIONS",
    "inductor_options",
]


def profiler_active() -> bool:
    """Whether a ``torch.profiler`` session records (per-term labels cost a little: only then).

    Private: ``torch.autograd.profiler._is_profiler_enabled``. Without it, the labels are always
    recorded (correct, a few microseconds per term and call).
    """
    prof = getattr(getattr(torch, "autograd", None), "profiler", None)
    flag = getattr(prof, "_is_profiler_enabled", None)
    return True if flag is None else bool(flag)


def is_compiling() -> bool:
    """True while dynamo traces the caller (a user's own ``torch.compile`` around the loss)."""
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    if fn is not None:  # public since torch 2.3
        return bool(fn())
    dynamo = getattr(torch, "_dynamo", None)  # older torch: private spelling of the same question
    old = getattr(dynamo, "is_compiling", None)
    return bool(old()) if old is not None else False


def mark_dynamic(t: Tensor, dim: int) -> None:
    """Mark axis ``dim`` of ``t`` dynamic, so that one graph serves every batch and image size.

    Private: ``torch._dynamo.maybe_mark_dynamic``. Without it every new size recompiles once
    (dynamo's automatic dynamic shapes then take over after the second size): correct, slower.
    """
    fn = getattr(getattr(torch, "_dynamo", None), "maybe_mark_dynamic", None)
    if fn is not None:
        fn(t, dim)


@contextlib.contextmanager
def no_donated_buffers() -> Iterator[None]:
    """Compile without donated buffers, so that the backward runs under ``retain_graph=True``.

    Private: ``torch._functorch.config.donated_buffer``. With dynamic sizes AOTAutograd compiles
    the backward together with the forward, and a backward with donated buffers refuses
    ``retain_graph=True`` (per-term gradients). The peak memory is the same without them
    (``segloss bench``). Without the config name (an older or newer torch), nothing is patched.
    """
    try:
        import torch._functorch.config as functorch_config
    except ImportError:  # pragma: no cover - depends on the torch build
        yield
        return
    if not hasattr(functorch_config, "donated_buffer"):
        yield
        return
    with functorch_config.patch(donated_buffer=False):
        yield


def allow_retained_backward(out: Tensor) -> None:
    """Let a compiled graph's backward run under ``retain_graph=True``.

    Private: ``grad_fn._forward_cls.metadata.bw_donated_idxs``. A graph compiled without donated
    buffers (``no_donated_buffers``) records them as "unknown" (None), and AOTAutograd then
    refuses ``retain_graph=True``; record "none" instead. When the attribute path is missing,
    nothing is changed (``retain_graph=True`` then raises torch's own error on such a torch).
    """
    meta = getattr(getattr(out.grad_fn, "_forward_cls", None), "metadata", None)
    if meta is not None and getattr(meta, "bw_donated_idxs", ()) is None:
        meta.bw_donated_idxs = []


def fresh_function(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object, so that dynamo's cache is per criterion.

    Dynamo caches compiled graphs on the code object: two criteria sharing one code object
    would share (and evict) each other's graphs and count against one recompile limit.
    ``CodeType.replace`` is public Python; if it fails (another interpreter), ``fn`` is used
    as it is, and criteria share one cache (correct, more recompiles).
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    try:
        code = fn.__code__.replace(co_name=name)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - CPython always has it
        return fn
    out = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    out.__qualname__ = name
    return out


# -- what the compiled backward saves and what it recomputes ------------------------------------------
SAVE_POLICIES = ("auto", "save", "recompute")
"""``CompositeLoss.set_save_policy``: ``"auto"`` (save for float64 on the CPU, recompute elsewhere),
``"save"`` or ``"recompute"`` on every device and dtype."""


def saves_softplus(device: torch.device, dtype: torch.dtype, policy: str) -> bool:
    """Whether a compiled graph on ``device`` for logits of ``dtype`` keeps the ``log1p`` results
    of its forward for the backward.

    Inductor's partitioner recomputes cheap elementwise work in the backward rather than save it,
    which is right where memory bandwidth is the limit (GPUs). On the CPU, SLEEF's ``log1p`` is
    the one expensive operation of a sigmoid loss: float64 keeps it and saves its result (one
    float per element of peak memory), while float32 computes it with ``_fastmath.log1p_unit``
    (``cheap_log1p``), which is cheaper to recompute than to write and read back. Measured on the
    2-core CPU side by side (``python profiles/perf_internals.py policies``, 8x1x512x512):
    recomputing with the polynomial is faster than saving SLEEF's ``log1p`` for BCE alone, the
    3- and 5-term composites and 3D focal+dice, and its peak memory is one float per element less.
    """
    if policy == "auto":
        return device.type == "cpu" and dtype == torch.float64
    return policy == "save"


def cheap_log1p(x: Tensor) -> bool:
    """Whether a compiled graph computes the sigmoid's ``log1p(exp(-|x|))`` with
    ``_fastmath.log1p_unit`` instead of ``torch.log1p``: float32 on the CPU, where SLEEF's
    ``log1p`` is the most expensive operation of a sigmoid loss (``python profiles/perf_internals.py
    log1p``). On accelerators ``log1p`` is cheap beside the memory traffic, and float64 keeps the
    library routine. Graphs that save the ``log1p`` (``saves_softplus``) keep ``torch.log1p``: the
    save policy finds it by name."""
    return is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32


def _keep_softplus(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import CheckpointPolicy

    if op is torch.ops.aten.log1p.default:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_SAVE


class _QuietSACNote(logging.Filter):
    """Drop torch's one-time note that a ``context_fn`` under torch.compile must not hold in-place ops
    (ours holds none on the caller's tensors: ``CompositeLoss`` checks their versions after each call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "context_fn is passed to torch.utils.checkpoint" not in record.getMessage()


logging.getLogger("torch._higher_order_ops.wrap").addFilter(_QuietSACNote())


def with_saved_softplus(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` under selective activation checkpointing that saves every ``log1p`` result
    (``torch.utils.checkpoint`` with ``create_selective_checkpoint_contexts``: public API; traced
    by torch.compile, where it only tags what the partitioner saves)."""
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    context = functools.partial(create_selective_checkpoint_contexts, _keep_softplus)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=context)


# -- inductor settings of the composite's own graph ------------------------------------------------
INDUCTOR_OPTIONS: dict[str, Any] = {"realize_cpu_opcount_threshold": 200}
"""Inductor settings for the composite's own ``torch.compile`` (never for a user's compile around it).

``realize_cpu_opcount_threshold``: inductor writes a pointwise result of more than this many operations
to a full-size buffer before its consumers read it (torch 2.13's CPU default is 50). A loss term is one
such expression ending in a reduction (a modulated BCE element with the sigmoid and the ``log1p``
polynomial is past 50): with the default its per-element values are written to memory in the forward
and read back by a second loop to be summed (8 MiB each way at 8x1x512x512). At 200 each term of the
composites in ``tests/test_shared_work.py`` is summed in the loop that computes it (the test also shows
that inductor's default writes one out). The setting applies
to CPU kernels only; GPU kernels keep inductor's defaults (not measured here).
``python profiles/perf_internals.py fusion`` times both.
"""


def inductor_options() -> dict[str, Any] | None:
    """``INDUCTOR_OPTIONS`` less the names this torch's inductor does not know (None when none is left).

    Private: ``torch._inductor.list_options`` and the option names, which follow inductor's config.
    Where a name is gone (an older or newer torch), it is left out and inductor's default applies:
    correct, and at worst as fast as without it.
    """
    try:
        from torch._inductor import list_options

        known = set(list_options())
    except Exception:  # noqa: BLE001 - any failure to list them means: pass none
        return None
    options = {k: v for k, v in INDUCTOR_OPTIONS.items() if k in known}
    return options or None


# -- why a compile failed ---------------------------------------------------------------------------
_PERMANENT = {
    # no working C++ compiler (inductor's CPU backend)
    "InvalidCxxCompiler": "no working C++ compiler: install gcc or clang (or pass compile=False)",
    # the inductor backend or triton cannot be imported / used on this machine
    "TritonMissing": "triton is missing for this GPU: pip install triton (or pass compile=False)",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([getattr(e, "inner_exception", None), e.__cause__, e.__context__])


def permanent_failure(exc: BaseException) -> str | None:
    """The cause and fix when ``exc`` means that compiling can never work here, else None.

    Permanent: no C++ compiler, a backend that cannot be imported. Everything else (a tensor
    subclass dynamo cannot trace, an op missing for one dtype, a shape the backend refuses)
    depends on the inputs, and falls back to eager for inputs like those only.
    """
    for e in _chain(exc):
        name = type(e).__name__
        if name in _PERMANENT:
            return _PERMANENT[name]
        if isinstance(e, ImportError) and ("triton" in str(e).lower() or "inductor" in str(e).lower()):
            return f"the compiler backend cannot be imported ({e}); install it or pass compile=False"
    return None


def failure_text(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause, at most 300 characters."""
    inner = list(_chain(exc))
    e = inner[-1] if len(inner) > 1 and str(inner[-1]).strip() else exc
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
