"""``segloss bench``: forward+backward time, memory and bandwidth of a loss against its peers.

What one run measures, for every candidate (the spec eager and compiled, the ``also`` specs,
the peers that the plugins register and that are installed, eager and wrapped in
``torch.compile``) on the same inputs: time (interleaved rounds, median, IQR, per-round ratio
to the reference, the spec compiled), the first call of compiled candidates with their cache
hits, peak memory above the inputs, and effective bandwidth. ``part`` peers (the distance maps
alone) give their share of the whole step.

Modules, one job each: ``config`` (``BenchConfig``), ``inputs`` (``make_inputs``), ``candidates``
(ours and the peers', through ``segloss_registry._peers``), ``measure`` (timing, memory),
``report`` (text, Markdown, JSON), ``run`` (``run_benchmark``), ``suites`` (per-term costs,
scaling, suites of rows from ``profiles/suites/*.toml``).

``run_benchmark(BenchConfig(...)) -> BenchReport``; ``report.format_text()``,
``format_markdown()`` and ``to_dict()`` (JSON) render it.
"""

from __future__ import annotations

from typing import Any

from .._composite import CompositeLoss
from .._peers import Peer, PeerFn, PeerPlan, PeerUnsupported, cover, list_peers
from .candidates import Candidate, library_peer
from .config import DTYPES, BenchConfig
from .inputs import make_inputs
from .measure import peak_memory_of, profiler_peak_bytes
from .report import BenchReport, Measurement
from .run import run_benchmark

__all__ = [
    "BenchConfig",
    "BenchReport",
    "Candidate",
    "Measurement",
    "run_benchmark",
    "make_inputs",
    "machine_info",
    "peak_memory_of",
    "profiler_peak_bytes",
    "DTYPES",
    "Peer",
    "PeerFn",
    "PeerPlan",
    "PeerUnsupported",
    "cover",
    "list_peers",
    "library_peer",
    "seed_peer",
    "monai_peer",
]

from .._machine import machine_info


def seed_peer(criterion: CompositeLoss) -> tuple[str, PeerFn] | str:
    """The seed's modules for ``criterion`` (name, function), or why there are none (``library_peer``)."""
    return library_peer(criterion, "seed")


def monai_peer(criterion: CompositeLoss) -> tuple[str, PeerFn, Any] | str:
    """MONAI's losses for ``criterion`` as ``(name, fn, identity adapter)`` (the old triple), or why not."""
    peer = library_peer(criterion, "MONAI")
    return peer if isinstance(peer, str) else (peer[0], peer[1], _same)


def _same(t: Any) -> Any:
    return t
