"""``segloss bench SPEC_OR_SCENARIO`` (or ``--suite NAME``): forward+backward time, memory and bandwidth
against the peers that the plugins register, eager and compiled; ``--per-term``: what each term adds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="time forward+backward of a loss, eager and compiled, beside MONAI and the seed's modules",
        description="Time forward+backward of a loss spec (or a profiles/*.toml scenario), eager and compiled, "
        "beside the peers that are installed, on the same inputs. Flags override the scenario.",
    )
    p.add_argument("spec", nargs="?", default=None,
                   help="a loss spec ('a+b', names from `segloss list`) or a scenario (profiles/NAME.toml, or NAME); "
                        "not with --suite")
    p.add_argument("--mode", default=None, help="binary, multiclass or multilabel (default binary)")
    p.add_argument("--shape", default=None, help="logits shape N x C x *S, e.g. 8x1x512x512 (default)")
    p.add_argument("--dtype", default=None, help="float32 (default), float64, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--steps", type=int, default=None, help="timed steps per candidate (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before timing (default 3)")
    p.add_argument("--threads", default="auto",
                   help="torch threads: 'auto' (default) times a few eager steps of the spec with one thread and "
                        "with one per core, now, and keeps the faster (small inputs and busy machines favour 1); "
                        "N sets N")
    p.add_argument("--also", action="append", default=[], metavar="SPEC",
                   help="another spec to time beside it (repeatable), e.g. one term of the composite")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the peers the plugins register (MONAI, the seed's modules, plain formulas...)")
    p.add_argument("--compiled-peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also time each peer wrapped in torch.compile, as a user would (default on)")
    p.add_argument("--unchecked", action="store_true",
                   help="also time ours compiled with check_inputs='never' (what the every-call value checks cost)")
    p.add_argument("--save-policies", action="store_true",
                   help="also time ours compiled with the other save policy (default: recompute log1p in the "
                        "backward, with a cheap polynomial on float32 CPU graphs; float64 on the CPU: keep it); "
                        "the rows give time and peak memory of both")
    p.add_argument("--library", action="append", default=None, metavar="LIB",
                   help="only this peer library (repeatable), e.g. --library MONAI")
    p.add_argument("--list-peers", action="store_true", help="list the registered peers and exit")
    p.add_argument("--per-term", action="store_true",
                   help="what each term adds: the composite minus the composite without it, compiled and eager")
    p.add_argument("--suite", default=None, metavar="NAME",
                   help="run a suite of rows and scaling series (profiles/suites/NAME.toml: gpu, readme, scaling)")
    p.add_argument("--out", default=None, metavar="DIR", help="--suite: write DIR/NAME.json and DIR/NAME.md")
    p.add_argument("--shrink", type=int, default=None, metavar="K",
                   help="--suite: divide every spatial size by K and the batch to <= 2 (a quick check on a CPU)")
    p.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True, help="time the eager loss")
    p.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True, help="time the compiled loss")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (tqdm)")
    p.set_defaults(func=run)


def choose_bench_threads(spec: str, mode: str, shape: Sequence[int], dtype: str, device: str,
                         loss_kwargs: dict[str, Any], rounds: int = 7) -> tuple[int, str]:
    """``--threads auto``: time eager forward+backward steps of ``spec`` on the benchmark's inputs with
    one thread and with one per core, alternating, and keep the faster median.

    Measured, not guessed from the load average: whether a second thread pays depends on the
    input size (below torch's grain size of 32768 elements an elementwise kernel runs on one
    thread anyway, and the threads only synchronise) and on whether other processes hold the
    cores right now (``demo.train.faster_threads``). On an accelerator, or with one core, one
    per core.
    """
    import torch

    from .. import build_loss
    from ..bench import make_inputs
    from ..demo.train import available_cores, faster_threads, probe_note

    cores = min(available_cores(), torch.get_num_threads())
    if cores <= 1 or torch.device(device).type != "cpu":
        return cores, f"one per core ({cores})"
    logits, target = make_inputs(mode, shape, dtype, device)
    criterion = build_loss(spec, mode=mode,  # type: ignore[arg-type]
                           compile=False, **loss_kwargs)

    def step() -> None:
        logits.grad = None
        criterion(logits, target).backward()

    best, med = faster_threads(step, cores, rounds)
    return best, probe_note(best, med, f"eager {spec} forward+backward")


def run(args: argparse.Namespace) -> int:
    import torch

    from .._errors import SeglossError

    if args.list_peers:
        return _list_peers(args)
    if args.suite:
        return _run_suite(args)
    if not args.spec:
        raise SeglossError(
            "bench: give a loss spec or a scenario (segloss bench SPEC; names from segloss list), or --suite NAME"
        )
    cfg = _config(args)
    n, note = _threads(args, cfg)
    torch.set_num_threads(n)
    log = _logger(args)
    log(f"threads: {n} ({note})")
    if args.per_term:
        from ..bench.suites import per_term

        pt = per_term(cfg, log=log)
        print(json.dumps(pt.to_dict(), indent=2) if args.json else
              pt.format_markdown() if args.markdown else pt.format_text())
        return 0
    from ..bench import run_benchmark

    report = run_benchmark(cfg, log=log)
    if args.json:
        print(json.dumps({**report.to_dict(), "threads_chosen_by": note}, indent=2))
    elif args.markdown:
        print(report.format_markdown())
    else:
        print(report.format_text())
    return 0


def _logger(args: argparse.Namespace) -> Any:
    def log(msg: str) -> None:
        if not args.json:
            print(f"  {msg}", file=sys.stderr, flush=True)

    return log


def _config(args: argparse.Namespace) -> Any:
    from ..bench import BenchConfig
    from ..scenarios import Scenario, find_scenario, load_scenario, parse_shape

    path = find_scenario(args.spec)
    base = load_scenario(path) if path else Scenario(name="cli", spec=args.spec, shape=(8, 1, 512, 512))
    sc = base.with_overrides(mode=args.mode, shape=parse_shape(args.shape) if args.shape else None,
                             dtype=args.dtype, device=args.device, steps=args.steps, warmup=args.warmup)
    cfg = BenchConfig(
        spec=sc.spec, mode=sc.mode, shape=sc.shape, dtype=sc.dtype, device=sc.device, steps=sc.steps,
        warmup=sc.warmup, peers=args.peers, also=tuple(args.also), eager=args.eager, compiled=args.compiled,
        loss_kwargs=sc.loss_kwargs, progress=not args.no_progress and not args.json, name=sc.name,
        compiled_peers=args.compiled_peers, libraries=tuple(args.library) if args.library else None,
        unchecked=args.unchecked, save_policies=args.save_policies,
    )
    return cfg


def _threads(args: argparse.Namespace, cfg: Any) -> tuple[int, str]:
    from .demo import parse_threads

    threads = parse_threads(args.threads, "bench")
    if threads == "auto":
        n, note = choose_bench_threads(cfg.spec, cfg.mode, cfg.shape, cfg.dtype, cfg.device, cfg.loss_kwargs)
    else:
        n, note = int(threads), "--threads"
    return n, note


def _list_peers(args: argparse.Namespace) -> int:
    from .._peers import describe, list_peers

    rows = describe(list_peers())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        part = f" [{r['part']}]" if r["part"] else ""
        state = "" if r["installed"] else f"  (not installed: {', '.join(r['requires'])})"
        print(f"{r['library']:8} {r['name']}{part}: {' + '.join(r['losses'])}  (plugin {r['plugin']}){state}")
    return 0


def _run_suite(args: argparse.Namespace) -> int:
    import torch

    from ..bench.suites import run_suite, write_suite

    if args.threads != "auto":
        from .demo import parse_threads

        torch.set_num_threads(int(parse_threads(args.threads, "bench")))
    res = run_suite(args.suite, log=_logger(args), device=args.device, steps=args.steps, warmup=args.warmup,
                    eager=None if args.eager else False, compiled=None if args.compiled else False,
                    compiled_peers=None if args.compiled_peers else False, peers=None if args.peers else False,
                    shrink=args.shrink)
    if args.out:
        j, m = write_suite(res, args.out)
        print(f"  wrote {j} and {m}", file=sys.stderr)
    print(json.dumps(res.to_dict(), indent=2, default=str) if args.json else res.format_markdown())
    return 0
