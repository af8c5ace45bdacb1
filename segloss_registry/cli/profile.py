"""``segloss profile SCENARIO_OR_SPEC``: a torch.profiler trace of a few steps, for TensorBoard,
and an offline HTML report of it (``report.html`` next to the traces)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .._options import Mode

DEFAULT_OUT = Path("profiles") / "traces"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="record a few forward+backward steps with torch.profiler into profiles/traces/<name>/",
        description="Record a few forward+backward steps of a loss with torch.profiler, in the layout "
        "TensorBoard's profiler plugin (torch-tb-profiler) reads: profiles/traces/<name>/<variant>.*.pt.trace.json. "
        "Eager steps carry one record_function label per term; the compiled region is labelled with the spec. "
        "It also writes profiles/traces/<name>/report.html: per-term time, forward/backward split, top operators, "
        "peak memory, eager vs compiled, as one self-contained page that opens from disk without a network.",
    )
    p.add_argument("spec", help="a scenario (profiles/NAME.toml, or NAME) or a loss spec ('bce+dice')")
    p.add_argument("--variant", choices=("eager", "compiled", "both"), default="both",
                   help="which path to record (default both: two workers of one run)")
    p.add_argument("--mode", default=None, help="binary, multiclass or multilabel (default binary)")
    p.add_argument("--shape", default=None, help="logits shape, e.g. 8x1x256x256 (default)")
    p.add_argument("--dtype", default=None, help="float32 (default), float64, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--steps", type=int, default=None, help="active (recorded) steps (default 3)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="trace root (default profiles/traces)")
    p.add_argument("--name", default=None, help="run name (default: the scenario's name, or the spec)")
    p.add_argument("--top", type=int, default=12, help="operators in the summary (default 12)")
    p.add_argument("--report", default=None, metavar="PATH",
                   help="where to write the offline HTML report (default <out>/<name>/report.html)")
    p.add_argument("--no-report", action="store_true", help="write the traces only, no HTML report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import SeglossError, build_loss
    from ..bench import make_inputs
    from ..profiling import ProfileSummary, open_command, profile_steps, safe_run_name, write_report
    from ..scenarios import Scenario, find_scenario, load_scenario, parse_shape

    path = find_scenario(args.spec)
    base = load_scenario(path) if path else Scenario(name=safe_run_name(args.spec), spec=args.spec)
    sc = base.with_overrides(mode=args.mode, shape=parse_shape(args.shape) if args.shape else None,
                             dtype=args.dtype, device=args.device, profile_active=args.steps)
    if args.top < 1:
        raise SeglossError(f"segloss profile: --top must be >= 1 (got {args.top})")
    name = safe_run_name(args.name or sc.name)
    out_dir = Path(args.out) / name
    variants = ("eager", "compiled") if args.variant == "both" else (args.variant,)
    logits, target = make_inputs(sc.mode, sc.shape, sc.dtype, sc.device)
    print(f"segloss profile: {sc.spec!r} mode={sc.mode} logits {'x'.join(map(str, sc.shape))} {sc.dtype} "
          f"on {sc.device}; schedule wait={sc.profile_wait} warmup={sc.profile_warmup} active={sc.profile_active}")
    summaries: list[ProfileSummary] = []
    for variant in variants:
        criterion = build_loss(sc.spec, mode=cast("Mode", sc.mode), compile=variant == "compiled", **sc.loss_kwargs)

        def step(criterion: Any = criterion) -> None:
            logits.grad = None
            criterion(logits, target).backward()

        if variant == "compiled":
            print("  compiling (first call, not recorded) ...", file=sys.stderr, flush=True)
        step()  # checks and compilation stay out of the trace
        summary = profile_steps(step, out_dir, steps=sc.profile_active, wait=sc.profile_wait,
                                warmup=sc.profile_warmup, worker=variant, device=sc.device)
        print(f"\n[{variant}] {criterion.spec}")
        print(summary.format(top=args.top))
        summaries.append(summary)
    print(f"\nopen it with:\n  {open_command(out_dir)}")
    if not args.no_report:
        context = {"spec": sc.spec, "mode": sc.mode, "logits": "x".join(map(str, sc.shape)), "dtype": sc.dtype,
                   "device": sc.device, "schedule": f"wait={sc.profile_wait} warmup={sc.profile_warmup} "
                   f"active={sc.profile_active}"}
        report = write_report(Path(args.report) if args.report else out_dir / "report.html", summaries,
                              title=f"{sc.spec} ({name})", context=context, top=args.top)
        print(f"  or, offline (one self-contained page, no network): {report}")
    return 0
