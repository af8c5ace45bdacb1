"""``run_benchmark(cfg)``: inputs, candidates, measurement, report."""

from __future__ import annotations

from collections.abc import Callable

from .._errors import SeglossError
from .._machine import machine_info
from .._peers import list_peers
from .candidates import OURS, note_shares, note_values, our_candidates, part_candidates, peer_candidates
from .config import BenchConfig
from .inputs import make_inputs
from .measure import measure
from .report import BenchReport, Measurement

__all__ = ["run_benchmark"]


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> BenchReport:
    """Measure every candidate of ``cfg`` on one set of inputs (see ``segloss_registry.bench``)."""
    if cfg.steps < 1 or cfg.warmup < 0:
        raise SeglossError(f"bench: steps must be >= 1 and warmup >= 0 (got {cfg.steps}, {cfg.warmup})")
    logits, target = make_inputs(cfg.mode, cfg.shape, cfg.dtype, cfg.device, cfg.seed)
    cands, main = our_candidates(cfg, target)
    skipped: list[Measurement] = []
    if cfg.peers:
        peers = list_peers()
        more, skipped = peer_candidates(cfg, main, target, peers)
        cands += more
    else:
        peers = [p for p in list_peers() if p.library == OURS]
    parts, missing = part_candidates(cfg, main, target, peers, cands)
    cands += parts
    results, method = measure(cands, logits, cfg.steps, cfg.warmup, cfg.progress, log)
    note_shares(cands, results)
    note_values(results)
    moved = logits.numel() * logits.element_size() * 2 + target.numel() * target.element_size()
    return BenchReport(cfg, machine_info(cfg.device), moved, method, results + skipped + missing)
