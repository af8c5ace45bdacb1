"""Side-by-side measurements of the loss internals (issue 16): eager and compiled, against peers.

Every candidate of one case runs on the same inputs; rounds are interleaved (each round runs
``--steps`` forward+backward steps of every candidate, in a rotating order), so a machine shared
with other work slows all alike. A candidate's ratio to the reference is the median of its
per-round ratios. Peak memory is what one step allocates above the inputs (the gradient
included), from ``segloss_registry.bench.peak_memory_of``, as a multiple of the logits' bytes.

    python profiles/perf_internals.py eager            # eager: ours vs MONAI (time, peak memory)
    python profiles/perf_internals.py compiled         # compiled: composites vs BCE alone and peers
    python profiles/perf_internals.py ops              # count transcendental ops in BCE's graphs
    python profiles/perf_internals.py masks            # min(p, t) as torch.minimum vs (p + t - |p - t|) / 2
    python profiles/perf_internals.py log1p            # compiled BCE forward: torch.log1p vs _fastmath.log1p_unit
    python profiles/perf_internals.py policies         # compiled, float32: log1p saved vs the polynomial recomputed
    python profiles/perf_internals.py fusion           # compiled: _compile.INDUCTOR_OPTIONS vs inductor's defaults
    python profiles/perf_internals.py dots             # eager sum(p t) per sample and class: dot per row, bmm, mul+sum

Options: ``--rounds`` (default 7), ``--steps`` per round (default 3), ``--device`` (cpu).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "plugins")]

from segloss_registry import build_loss  # noqa: E402

try:  # the seed's modules, verbatim (their home moved with the peers plugin)
    from segloss_peers.seed_reference import DiceBCELoss, DiceLoss, FocalLoss, IoULoss
except ImportError:  # pragma: no cover - older layout
    from segloss_registry._seed_reference import DiceBCELoss, DiceLoss, FocalLoss, IoULoss  # type: ignore


LossFn = Callable[[Tensor, Tensor], Tensor]


def make_inputs(mode: str, shape: list[int], device: str = "cpu", seed: int = 0) -> tuple[Tensor, Tensor]:
    """Logits ~ 2 N(0, 1) (a leaf that requires grad); binary: 0/1 target (30 % ones); multiclass: ids."""
    g = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(shape, generator=g)).to(device).requires_grad_(True)
    if mode == "multiclass":
        return x, torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g).to(device)
    return x, (torch.rand(shape, generator=g) < 0.3).float().to(device)


def peak_memory_of(fn: LossFn, x: Tensor, t: Tensor) -> int | None:
    """Bytes one step allocates above what lived before it (the gradient included)."""
    x.grad = None
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(fn, x, t)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(fn, x, t)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
                    if e.name() == "[memory]" and "cpu" in str(e.device_type()).lower())
    running = low = peak = 0
    for _, n in events:
        running += n
        low = min(low, running)
        peak = max(peak, running - low)
    return peak or None


def monai_peer(spec: str, mode: str) -> tuple[str, LossFn] | None:
    """MONAI's modules for the cases measured here (same hyperparameters), or None."""
    try:
        import monai.losses as ml
    except ImportError:
        return None
    if mode == "multiclass" and spec == "ce+dice":
        m = ml.DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0, batch=True)
        return "MONAI DiceCELoss", lambda a, b: m(a, b.unsqueeze(1))
    terms = spec.split("+")
    if mode != "binary" or not {"dice", "focal"} <= set(terms) or not set(terms) <= {"bce", "dice", "focal"}:
        return None
    df = ml.DiceFocalLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, batch=True, gamma=2.0, alpha=0.25)
    if "bce" in terms:
        bce = nn.BCEWithLogitsLoss()
        return "MONAI DiceFocalLoss + BCEWithLogits", lambda a, b: df(a, b) + bce(a, b)
    return "MONAI DiceFocalLoss", df


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _step(fn: LossFn, x: Tensor, t: Tensor) -> None:
    x.grad = None
    fn(x, t).backward()


def compare(title: str, cands: list[tuple[str, LossFn]], x: Tensor, t: Tensor, rounds: int, steps: int,
            memory: bool = True) -> dict[str, dict[str, float]]:
    """Interleaved timing of ``cands`` (the first is the reference); prints a table, returns it."""
    dev = x.device
    for _, fn in cands:  # warm-up (compiles)
        for _ in range(2):
            _step(fn, x, t)
    _sync(dev)
    times: dict[str, list[float]] = {n: [] for n, _ in cands}
    for r in range(rounds):
        order = cands[r % len(cands):] + cands[:r % len(cands)]
        for name, fn in order:
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                _step(fn, x, t)
            _sync(dev)
            times[name].append((time.perf_counter() - t0) * 1e3 / steps)
    ref = cands[0][0]
    nbytes = x.numel() * x.element_size()
    out: dict[str, dict[str, float]] = {}
    print(f"\n== {title}  logits {tuple(x.shape)} {x.dtype} on {dev}; {rounds} rounds x {steps} steps")
    print(f"{'candidate':58s} {'median ms':>9s} {'x ref':>7s} {'peak x logits':>13s}")
    for name, fn in cands:
        ratio = statistics.median(a / b for a, b in zip(times[name], times[ref]))
        peak = peak_memory_of(fn, x, t) if memory else None
        row = {"ms": statistics.median(times[name]), "ratio": ratio,
               "peak_x": float("nan") if peak is None else peak / nbytes}
        out[name] = row
        print(f"{name:58s} {row['ms']:9.2f} {ratio:7.3f} {row['peak_x']:13.2f}")
    return out


# -- the same formulas written plainly ---------------------------------------------------------------
def plain_bce(x: Tensor, t: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(x, t)


def plain_dice(x: Tensor, t: Tensor) -> Tensor:
    p = torch.sigmoid(x)
    return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


def plain_iou(x: Tensor, t: Tensor) -> Tensor:
    p = torch.sigmoid(x)
    i = (p * t).sum()
    return 1 - (i + 1) / (p.sum() + t.sum() - i + 1)


def plain_tversky(x: Tensor, t: Tensor) -> Tensor:
    p = torch.sigmoid(x)
    i = (p * t).sum()
    return 1 - (i + 1) / (i + 0.3 * (p.sum() - i) + 0.7 * (t.sum() - i) + 1)


def plain_focal(x: Tensor, t: Tensor) -> Tensor:
    p = torch.sigmoid(x)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    a = 0.25 * t + 0.75 * (1 - t)
    return (a * (1 - pt) ** 2 * bce).mean()


PLAIN = {"bce": plain_bce, "dice": plain_dice, "focal": plain_focal, "iou": plain_iou, "tversky": plain_tversky}
SEED = {"dice": DiceLoss, "iou": IoULoss, "focal": FocalLoss}


def plain_sum(names: list[str]) -> LossFn:
    def fn(x: Tensor, t: Tensor) -> Tensor:
        return sum((PLAIN[n](x, t) for n in names), torch.zeros((), device=x.device))  # type: ignore[return-value]
    return fn


class SeedSum(nn.Module):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        rest = list(names)
        mods: list[nn.Module] = []
        if "bce" in rest and "dice" in rest:
            mods.append(DiceBCELoss())
            rest.remove("bce")
            rest.remove("dice")
        for n in rest:
            if n == "bce":
                mods.append(nn.BCEWithLogitsLoss())
            elif n == "tversky":
                raise KeyError(n)
            else:
                mods.append(SEED[n]())
        self.mods = nn.ModuleList(mods)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return sum((m(x, t) for m in self.mods), torch.zeros((), device=x.device))  # type: ignore[return-value]


# -- parts ---------------------------------------------------------------------------------------------
def eager_part(args: argparse.Namespace) -> None:
    cases = [("bce+dice+focal", "binary", [8, 1, 256, 256]),
             ("ce+dice", "multiclass", [8, 4, 256, 256]),
             ("focal+dice", "binary", [2, 1, 64, 128, 128])]
    for spec, mode, shape in cases:
        x, t = make_inputs(mode, shape, device=args.device)
        ours = build_loss(spec, mode=mode, compile=False)
        cands: list[tuple[str, LossFn]] = [(f"segloss eager {spec}", ours)]
        if args.checks_off:
            cands.append((f"segloss eager {spec} check_inputs=never",
                          build_loss(spec, mode=mode, compile=False, check_inputs="never")))
        peer = monai_peer(spec, mode)
        if peer is not None:
            cands.append((peer[0] + " (eager)", peer[1]))
        compare(f"eager {spec} ({mode})", cands, x, t, args.rounds, args.steps)


def compiled_part(args: argparse.Namespace) -> None:
    shape = [8, 1, 256, 256]
    x, t = make_inputs("binary", shape, device=args.device)
    checks = "never" if not args.checks else "auto"
    for names in (["bce", "dice", "focal"], ["bce", "dice", "focal", "iou", "tversky"]):
        spec = "+".join(names)
        cands: list[tuple[str, LossFn]] = [
            ("segloss compiled bce (alone)", build_loss("bce", compile=True, check_inputs=checks)),
            (f"segloss compiled {spec}", build_loss(spec, compile=True, check_inputs=checks)),
            (f"plain formulas compiled {spec}", torch.compile(plain_sum(names), fullgraph=True)),
        ]
        try:
            cands.append((f"torch.compile(seed modules) {spec}", torch.compile(SeedSum(names), fullgraph=True)))
        except KeyError as exc:
            print(f"(no seed module for {exc})")
        peer = monai_peer(spec, "binary")
        if peer is not None:
            cands.append((f"torch.compile({peer[0]})", torch.compile(peer[1])))
        else:
            print(f"(MONAI has no module for {spec})")
        compare(f"compiled {spec} (check_inputs={checks})",
                cands, x, t, args.rounds, args.steps)


def ops_part(args: argparse.Namespace) -> None:
    """Count exp/log/log1p/sigmoid/div calls in the forward and backward graphs AOTAutograd builds."""
    from torch._functorch.aot_autograd import aot_function
    from torch._functorch.partitioners import min_cut_rematerialization_partition


    x, t = make_inputs("binary", [2, 1, 8, 8], device=args.device)
    names = ("exp", "log", "log1p", "sigmoid", "div", "reciprocal", "pow", "tanh", "expm1")

    def counter(tag: str) -> Any:
        def compiler(gm: torch.fx.GraphModule, _: Any) -> Any:
            c: dict[str, int] = {}
            for n in gm.graph.nodes:
                if n.op == "call_function":
                    base = str(n.target).split(".")[1] if str(n.target).startswith("aten.") else str(n.target)
                    if base in names:
                        c[base] = c.get(base, 0) + 1
            print(f"  {tag:9s} graph: {dict(sorted(c.items())) or 'none'}")
            return gm
        return compiler

    for spec in ("bce", "bce+dice+focal"):
        crit = build_loss(spec, compile=False, check_inputs="never")
        fn = crit._compute
        w = crit._weights_on(x.device, x.dtype)
        print(f"{spec}:")
        f = aot_function(lambda a, b, fn=fn, w=w: fn(a, b, None, w, False, False, False, "off")[0],
                         fw_compiler=counter("forward"), bw_compiler=counter("backward"),
                         partition_fn=min_cut_rematerialization_partition)
        f(x, t).backward()


def _soft_dice(minimum: Callable[[Tensor, Tensor], Tensor]) -> LossFn:
    def fn(x: Tensor, t: Tensor) -> Tensor:
        p = torch.sigmoid(x)
        dims = (0, *range(2, x.dim()))
        i, ps, ts = minimum(p, t).sum(dims), p.sum(dims), t.sum(dims)
        return (1 - (2 * i + 1) / (ps + ts + 1)).mean()
    return fn


def masks_part(args: argparse.Namespace) -> None:
    """A soft Dice (``sum(min(p, t))``) compiled two ways: inductor saves ``torch.minimum``'s comparison
    masks as bool tensors for the backward, and its CPU kernels store bool tensors slowly."""
    from segloss_registry._inputs import soft_minimum

    x, t = make_inputs("binary", [8, 1, 512, 512], device=args.device)
    cands: list[tuple[str, LossFn]] = [
        ("compiled soft Dice, (p + t - |p - t|) / 2", torch.compile(_soft_dice(soft_minimum), dynamic=True)),
        ("compiled soft Dice, torch.minimum", torch.compile(_soft_dice(torch.minimum), dynamic=True)),
        ("compiled hard Dice, p * t (no minimum)", torch.compile(_soft_dice(torch.mul), dynamic=True)),
    ]
    compare("min(p, t) in a compiled graph", cands, x, t, args.rounds, args.steps)


def _interleaved(title: str, rows: list[tuple[str, Callable[[], Any]]], rounds: int, reps: int,
                 dev: torch.device, digits: int = 2) -> None:
    """Time zero-argument ``rows`` interleaved (``reps`` calls a round, rotating order) and print the
    median time of each and its median per-round ratio to the first."""
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    for r in range(rounds):
        for name, fn in rows[r % len(rows):] + rows[:r % len(rows)]:
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(dev)
            times[name].append((time.perf_counter() - t0) * 1e3 / reps)
    print(f"\n== {title}; {rounds} rounds")
    ref = rows[0][0]
    for name, _ in rows:
        ratio = statistics.median(a / b for a, b in zip(times[name], times[ref]))
        print(f"{name:58s} {statistics.median(times[name]):9.{digits}f} ms {ratio:7.3f}")


def log1p_part(args: argparse.Namespace) -> None:
    """The forward of a BCE compiled with ``torch.log1p`` (SLEEF on the CPU) and with
    ``_fastmath.log1p_unit``, under ``no_grad`` (one fused loop each; the finite check included as in
    the loss's graph)."""
    from segloss_registry._fastmath import log1p_unit

    def bce(log1p: Callable[[Tensor], Tensor]) -> LossFn:
        def fn(x: Tensor, t: Tensor) -> Tensor:
            ok = torch.isfinite(x).all() & torch.isfinite(t).all()
            loss = (log1p(torch.exp(-x.abs())) + x.clamp_min(0) - t * x).mean()
            return loss + torch.where(ok, 0.0, float("nan"))
        return fn

    x, t = make_inputs("binary", [8, 1, 512, 512], device=args.device)
    x = x.detach()
    cands = [("compiled BCE forward, torch.log1p", torch.compile(bce(torch.log1p), dynamic=True)),
             ("compiled BCE forward, log1p_unit", torch.compile(bce(log1p_unit), dynamic=True))]
    with torch.no_grad():
        for _, fn in cands:
            fn(x, t)
        rows = [(name, lambda fn=fn: fn(x, t)) for name, fn in cands]
        _interleaved(f"log1p in a compiled forward  logits {tuple(x.shape)} on {x.device}", rows, args.rounds,
                     args.steps * 3, x.device)


def policies_part(args: argparse.Namespace) -> None:
    """Ours compiled in float32 with ``set_save_policy("save")`` (SLEEF's log1p, kept for the backward)
    and ``"recompute"`` (the polynomial, recomputed: the CPU default), BCE alone and composites."""
    cases = [("bce", [8, 1, 512, 512]), ("bce+dice+focal", [8, 1, 512, 512]),
             ("bce+dice+focal+iou+tversky", [8, 1, 512, 512]), ("focal+dice", [2, 1, 64, 128, 128])]
    for spec, shape in cases:
        x, t = make_inputs("binary", shape, device=args.device)
        cands: list[tuple[str, LossFn]] = []
        for policy in ("save", "recompute"):
            crit = build_loss(spec, compile=True, check_inputs="never")
            crit.set_save_policy(policy)
            cands.append((f"segloss compiled {spec} save_policy={policy}", crit))
        compare(f"save policies, {spec}", cands, x, t, args.rounds, args.steps)


class _CompiledWith:
    """A criterion whose own graph is compiled with ``INDUCTOR_OPTIONS`` set to ``options`` (its first call
    compiles; later calls run that graph whatever the setting is then)."""

    def __init__(self, spec: str, mode: str, options: dict[str, Any]) -> None:
        self.crit = build_loss(spec, mode=mode, compile=True, check_inputs="never")
        self.options = options
        self.compiled = False

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.compiled:
            return self.crit(x, t)  # type: ignore[no-any-return]
        from segloss_registry import _compile

        saved, _compile.INDUCTOR_OPTIONS = _compile.INDUCTOR_OPTIONS, self.options
        try:
            out = self.crit(x, t)
        finally:
            _compile.INDUCTOR_OPTIONS = saved
        self.compiled = True
        return out  # type: ignore[no-any-return]


def fusion_part(args: argparse.Namespace) -> None:
    """Ours compiled with the project's inductor settings (``_compile.INDUCTOR_OPTIONS``: CPU terms are
    summed in the loop that computes them) and with inductor's defaults, which write a term of more than
    50 operations (focal) to memory and sum it in a second loop."""
    from segloss_registry import _compile

    cases = [("bce", "binary", [8, 1, 512, 512]), ("bce+dice+focal", "binary", [8, 1, 512, 512]),
             ("bce+dice+focal+iou+tversky", "binary", [8, 1, 512, 512]), ("focal+dice", "binary", [2, 1, 64, 128, 128]),
             ("ce+dice", "multiclass", [8, 4, 256, 256])]
    for spec, mode, shape in cases:
        x, t = make_inputs(mode, shape, device=args.device)
        cands: list[tuple[str, LossFn]] = [
            (f"segloss compiled {spec}, INDUCTOR_OPTIONS", _CompiledWith(spec, mode, dict(_compile.INDUCTOR_OPTIONS))),
            (f"segloss compiled {spec}, inductor defaults", _CompiledWith(spec, mode, {})),
        ]
        compare(f"inductor settings, {spec}", cands, x, t, args.rounds, args.steps, memory=False)


def _dot_forms(p: Tensor, t: Tensor) -> list[tuple[str, Callable[[], Tensor]]]:
    from segloss_registry import _autograd

    n, c = p.shape[:2]
    return [
        ("torch.dot per row (_row_dots)", lambda: _autograd._row_dots(p, t)),
        ("torch.bmm", lambda: torch.bmm(p.view(n * c, 1, -1), t.view(n * c, -1, 1)).view(n, c)),
        ("(p * t).sum(spatial)", lambda: (p * t).sum(tuple(range(2, p.dim())))),
    ]


def dots_part(args: argparse.Namespace) -> None:
    """The hard Dice intersection of eager multiclass, ``sum(p t)`` over the spatial axes per sample and
    class, three ways: one ``torch.dot`` per row (``_autograd._row_dots``), one ``torch.bmm``, and the
    product tensor summed (forward only, no gradient: the op itself)."""
    for shape in ([8, 4, 256, 256], [2, 16, 128, 128], [2, 150, 128, 128]):
        g = torch.Generator().manual_seed(0)
        p = torch.rand(shape, generator=g).to(args.device)
        t = (torch.rand(shape, generator=g) < 1 / shape[1]).float().to(args.device)
        _interleaved(f"sum(p t) per sample and class, {tuple(shape)} on {p.device}", _dot_forms(p, t),
                     args.rounds, args.steps * 3, p.device, digits=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["eager", "compiled", "ops", "masks", "log1p", "policies", "fusion", "dots", "all"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checks", action="store_true", help="compiled: keep the value checks on (default: never)")
    ap.add_argument("--checks-off", action="store_true", help="eager: also time check_inputs='never'")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("eager", "all"):
        eager_part(args)
    if args.part in ("compiled", "all"):
        compiled_part(args)
    if args.part in ("ops", "all"):
        ops_part(args)
    if args.part in ("masks", "all"):
        masks_part(args)
    if args.part in ("log1p", "all"):
        log1p_part(args)
    if args.part in ("policies", "all"):
        policies_part(args)
    if args.part in ("fusion", "all"):
        fusion_part(args)
    if args.part in ("dots", "all"):
        dots_part(args)


if __name__ == "__main__":
    main()
