"""What to time: our spec (compiled and eager), the ``also`` specs, and the peers the plugins register.

The peers come from the ``register_peers`` hook (``segloss_registry._peers``): for each library the
composite's terms are covered greedily by that library's peers (multi-loss peers first), and the
covering peers' functions are summed into one candidate, eager and (``compiled_peers``) wrapped in
``torch.compile`` the way a user would. A library that cannot cover the terms is a row that says why.
``part`` peers (e.g. distance maps only) are timed beside the whole, and their note gives their share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from .._compile import saves_softplus
from .._composite import CompositeLoss, build_loss
from .._errors import SeglossError
from .._peers import NO_COVER, Peer, PeerPlan, by_library, cover, list_peers, missing_modules
from .config import DTYPES, BenchConfig
from .report import Measurement

__all__ = ["Candidate", "LossFn", "our_candidates", "peer_candidates", "library_peer", "note_shares", "OURS"]

LossFn = Callable[[Tensor, Tensor], Tensor]
OURS = "segloss"  # the library name of our own candidates (and of our own ``part`` peers)
EAGER, COMPILED = "eager", "torch.compile"


@dataclass
class Candidate:
    """One thing to time: ``fn(logits, target)`` -> 0-dim loss."""

    name: str
    group: str  # the library: "segloss" for ours, else the peer's library
    fn: LossFn
    target: Tensor
    compiled: bool = False
    reference: bool = False
    note: str = ""
    share_of: str | None = None  # a part of another candidate's step (that candidate's name)


UNCHECKED = "check_inputs=never"


def our_candidates(cfg: BenchConfig, target: Tensor) -> tuple[list[Candidate], CompositeLoss]:
    """``cfg.spec`` and each ``cfg.also`` spec, compiled and/or eager; the first compiled one is the reference."""
    cands: list[Candidate] = []
    main: CompositeLoss | None = None
    for spec in (cfg.spec, *cfg.also):
        for compiled, wanted in ((True, cfg.compiled), (False, cfg.eager)):
            if not wanted:
                continue
            crit = build_loss(spec, mode=cast(Any, cfg.mode), compile=compiled, **cfg.loss_kwargs)
            main = main or crit
            kind = "compiled" if compiled else "eager"
            cands.append(Candidate(f"{OURS} {kind} {crit.spec}", OURS, crit, target, compiled,
                                   reference=not cands))
        if cfg.unchecked and cfg.compiled:
            crit = build_loss(spec, mode=cast(Any, cfg.mode), compile=True,
                              **{"check_inputs": "never", **cfg.loss_kwargs})
            cands.append(Candidate(f"{OURS} compiled {crit.spec} ({UNCHECKED})", OURS, crit, target, True,
                                   note="no value checks: what a peer does"))
        if cfg.save_policies and cfg.compiled:
            crit = build_loss(spec, mode=cast(Any, cfg.mode), compile=True, **cfg.loss_kwargs)
            default = "save" if saves_softplus(torch.device(cfg.device), DTYPES[cfg.dtype], "auto") else "recompute"
            other = "recompute" if default == "save" else "save"
            crit.set_save_policy(other)
            cands.append(Candidate(f"{OURS} compiled {crit.spec} (save_policy={other})", OURS, crit, target, True,
                                   note=f"this device's default: {default}"))
    if main is None:
        raise SeglossError("bench: nothing to measure (both --no-eager and --no-compiled)")
    return cands, main


def _refusal(criterion: CompositeLoss) -> str | None:
    opts = criterion.options
    if opts.ignore_index is not None or not opts.from_logits:
        return "peers are compared on logits without ignore_index"
    return None


def _plan(criterion: CompositeLoss, peers: Sequence[Peer], partial: bool = False) -> PeerPlan | str:
    """One library's cover of ``criterion``'s terms with the peers whose modules are installed."""
    why = _refusal(criterion)
    if why:
        return why
    usable = [p for p in peers if not missing_modules(p)]
    plan = cover(criterion.terms, usable, criterion.options.mode, partial) if usable else "nothing installed"
    if isinstance(plan, str) and len(usable) < len(peers):
        missing = sorted({m for p in peers for m in missing_modules(p)})
        return f"{peers[0].library}: not installed (pip install {' '.join(missing)})"
    return plan


def library_peer(criterion: CompositeLoss, library: str, peers: Sequence[Peer] | None = None
                 ) -> tuple[str, LossFn] | str:
    """``library``'s version of ``criterion`` (its name and function), or why there is none."""
    group = by_library(list_peers() if peers is None else peers, part=False).get(library)
    if not group:
        return f"no plugin registers peers of library '{library}'"
    plan = _plan(criterion, group)
    return plan if isinstance(plan, str) else (plan.name, plan.fn())


def _label(kind: str, engine: str) -> str:
    return f"({engine}, {kind})" if engine else f"({kind})"


def peer_candidates(cfg: BenchConfig, criterion: CompositeLoss, target: Tensor, peers: Sequence[Peer]
                    ) -> tuple[list[Candidate], list[Measurement]]:
    """Each library's cover of the terms, eager and compiled; a library without one is a row saying why."""
    cands: list[Candidate] = []
    skipped: list[Measurement] = []
    for lib, group in by_library(peers, part=False).items():
        if cfg.libraries is not None and lib not in cfg.libraries:
            continue
        plan = _plan(criterion, group)
        if isinstance(plan, str):
            skipped.append(Measurement(lib, lib, False, error=plan))
            continue
        fn = plan.fn()
        cands.append(Candidate(f"{plan.name} {_label(EAGER, plan.engine)}", lib, fn, target, note=plan.note))
        if cfg.compiled_peers and plan.compile:
            cands.append(Candidate(f"{plan.name} {_label(COMPILED, plan.engine)}", lib, torch.compile(fn), target,
                                   compiled=True, note=plan.note))
    return cands, skipped


def part_candidates(cfg: BenchConfig, criterion: CompositeLoss, target: Tensor, peers: Sequence[Peer],
                    wholes: Sequence[Candidate]) -> tuple[list[Candidate], list[Measurement]]:
    """The ``part`` peers that cover some of the terms: timed alone, as a share of their library's step."""
    cands: list[Candidate] = []
    skipped: list[Measurement] = []
    for group in by_library(peers, part=True).values():
        lib, part = group[0].library, group[0].part
        if cfg.libraries is not None and lib not in (*cfg.libraries, OURS):
            continue
        plan = _plan(criterion, group, partial=True)
        if isinstance(plan, str):
            if not plan.endswith(NO_COVER):
                skipped.append(Measurement(f"{lib} {part}", lib, False, error=plan))
            continue
        fn = plan.fn()
        kinds = [(False, EAGER, fn)]
        if plan.compile and (cfg.compiled if lib == OURS else cfg.compiled_peers):
            kinds.insert(0, (True, COMPILED if lib != OURS else "compiled", torch.compile(fn)))
        for compiled, kind, f in kinds:
            whole = next((w.name for w in wholes if w.group == lib and w.compiled == compiled), None)
            label = _label(kind if lib != OURS else ("compiled" if compiled else EAGER), plan.engine)
            cands.append(Candidate(f"{lib} {part} {label}", lib, f, target, compiled, note=plan.note, share_of=whole))
    return cands, skipped


def note_shares(cands: Sequence[Candidate], results: Sequence[Measurement]) -> None:
    """For a candidate that times a part of another's step: its median as a share of that step's median."""
    by_name = {m.name: m for m in results}
    for c, m in zip(cands, results):
        whole = by_name.get(c.share_of or "")
        if whole is None or not m.times_ms or not whole.times_ms:
            continue
        share = f"{100 * m.median_ms / whole.median_ms:.0f}% of '{whole.name}' (no backward)"
        m.note = f"{share}; {m.note}" if m.note else share


def note_values(results: Sequence[Measurement], rtol: float = 1e-3) -> None:
    """A peer whose loss value differs from ours (the first of our rows) says so in its note."""
    ours = next((m for m in results if m.group == OURS and m.value is not None), None)
    if ours is None or ours.value is None:
        return
    for m in results:
        if m.group == OURS or m.value is None or "% of '" in m.note:
            continue
        if abs(m.value - ours.value) > rtol * max(abs(ours.value), 1e-12):
            diff = f"value {m.value:.4g} (ours {ours.value:.4g})"
            m.note = f"{m.note}; {diff}" if m.note else diff
