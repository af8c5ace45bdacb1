"""Peers: other libraries' code for registered losses, collected through the ``register_peers`` hook.

The core knows no loss by name. A plugin says, for the losses it knows, which other library
computes them and how to build that library's version from our validated terms::

    @hookimpl
    def register_peers(register):
        register("otherlib", "FooBarLoss", ("foo", "bar"), build_foo_bar, requires=("otherlib",))

``build(terms, mode)`` receives the composite's terms that the peer covers (in the order of
``losses``; each has ``.info.name``, ``.params`` and ``.weight``) and the mode, and returns
``fn(logits, target) -> 0-dim Tensor``: the *weighted* sum of those terms computed the peer's
way, on the benchmark's inputs (logits ``(N, C, *S)``; target of the logits' shape in binary and
multilabel mode, int64 class ids ``(N, *S)`` in multiclass mode). When the peer cannot reproduce
those parameters, ``build`` raises ``PeerUnsupported("why")`` and the benchmark prints the reason.

``cover(terms, peers)`` covers a composite's terms with one library's peers greedily: peers of
more losses first (a library's ``FooBarLoss`` before its ``FooLoss`` and ``BarLoss``), each used
as often as it fits; a peer that refuses leaves its terms to the others.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ._errors import PluginError

if TYPE_CHECKING:
    from ._composite import Term
    from ._registry import Registry

NO_COVER = "has no peer for these terms"

__all__ = ["NO_COVER", "Peer", "PeerFn", "PeerBuilder", "PeerUnsupported", "PeerPlan", "cover", "list_peers",
           "missing_modules"]

PeerFn = Callable[[Tensor, Tensor], Tensor]
PeerBuilder = Callable[[Sequence["Term"], str], PeerFn]


class PeerUnsupported(Exception):
    """Raised by a peer's ``build`` when that library cannot compute these terms (the message says why)."""


@dataclass(frozen=True)
class Peer:
    """One other library's implementation of one or more registered losses.

    - ``library``: its display name ("MONAI", "seed", "plain"); the rows of one library are summed
      into one candidate;
    - ``name``: the class or function ("FooBarLoss");
    - ``losses``: the registered loss names it computes together (``"plugin:name"`` also matches);
    - ``build(terms, mode) -> fn``: see the module docstring;
    - ``requires``: modules ``build`` imports (checked without importing; missing: "not installed");
    - ``note``: shown in the benchmark row (a difference in formula, say);
    - ``part``: set for a peer that computes only a part of its losses' step (e.g. "distance maps
      only"): it is timed beside the whole, and its row gives its share of the library's step;
    - ``engine``: what computes it, when worth saying in the row ("scipy");
    - ``compile``: whether ``torch.compile(fn)`` is a meaningful candidate too (default True).
    """

    library: str
    name: str
    losses: tuple[str, ...]
    build: PeerBuilder
    requires: tuple[str, ...] = ()
    note: str = ""
    part: str | None = None
    engine: str = ""
    compile: bool = True
    plugin: str = field(default="", compare=False)

    def matches(self, term: Term, loss: str) -> bool:
        return loss in (term.info.name, term.info.qualified_name)


def missing_modules(peer: Peer) -> list[str]:
    """The modules of ``peer.requires`` that are not importable here (found without importing them)."""
    out = []
    for mod in peer.requires:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(mod)
    return out


class _RegisterPeer:
    """The ``register`` callback handed to one plugin's ``register_peers`` hook."""

    def __init__(self, plugin: str, found: list[Peer]) -> None:
        self._plugin = plugin
        self._found = found

    def __call__(self, library: str, name: str, losses: Sequence[str], build: PeerBuilder, *,
                 requires: Sequence[str] = (), note: str = "", part: str | None = None, engine: str = "",
                 compile: bool = True) -> None:
        if not isinstance(library, str) or not library or not isinstance(name, str) or not name:
            raise PluginError(f"register_peers: library and name must be non-empty strings (got {library!r}, {name!r})")
        if isinstance(losses, str) or not losses or not all(isinstance(x, str) and x for x in losses):
            raise PluginError(f"register_peers: {library} {name}: losses must be a non-empty sequence of loss "
                              f"names, e.g. ('foo',) (got {losses!r})")
        if not callable(build):
            raise PluginError(f"register_peers: {library} {name}: build must be callable build(terms, mode)")
        if isinstance(requires, str):
            requires = (requires,)
        self._found.append(Peer(library, name, tuple(losses), build, tuple(requires), note, part, engine, compile,
                                self._plugin))


def list_peers(registry: Registry | None = None) -> list[Peer]:
    """Every peer the loaded plugins register. A plugin whose hook raises is skipped with a warning."""
    from ._registry import PluginWarning, get_registry

    reg = registry or get_registry()
    peers: list[Peer] = []
    for plugin, hook in reg.peer_hooks():
        found: list[Peer] = []
        try:
            hook(register=_RegisterPeer(plugin, found))
        except Exception as exc:  # noqa: BLE001 - one broken plugin never breaks the others
            warnings.warn(f"segloss plugin '{plugin}': its register_peers hook raised {type(exc).__name__}: {exc}; "
                          f"its peers are left out", PluginWarning, stacklevel=2)
            continue
        peers.extend(found)
    return peers


@dataclass
class PeerPlan:
    """One library's cover of a composite: the peers used, the terms each computes, and their functions."""

    library: str
    parts: list[tuple[Peer, tuple[Term, ...], PeerFn]]

    @property
    def name(self) -> str:
        return f"{self.library} " + " + ".join(p.name for p, _, _ in self.parts)

    @property
    def note(self) -> str:
        return "; ".join(dict.fromkeys(p.note for p, _, _ in self.parts if p.note))

    @property
    def compile(self) -> bool:
        return all(p.compile for p, _, _ in self.parts)

    @property
    def engine(self) -> str:
        return ", ".join(dict.fromkeys(p.engine for p, _, _ in self.parts if p.engine))

    def fn(self) -> PeerFn:
        fns = [f for _, _, f in self.parts]

        def total(logits: Tensor, target: Tensor) -> Tensor:
            out = fns[0](logits, target)
            for f in fns[1:]:
                out = out + f(logits, target)
            return out

        return fns[0] if len(fns) == 1 else total


def _take(peer: Peer, remaining: list[Term]) -> tuple[Term, ...] | None:
    """The terms of ``remaining`` that ``peer.losses`` names, one each in its order, or None."""
    left = list(remaining)
    chosen = []
    for loss in peer.losses:
        hit = next((t for t in left if peer.matches(t, loss)), None)
        if hit is None:
            return None
        left.remove(hit)
        chosen.append(hit)
    return tuple(chosen)


def cover(terms: Sequence[Term], peers: Sequence[Peer], mode: str, partial: bool = False) -> PeerPlan | str:
    """Cover ``terms`` with ``peers`` (one library's) greedily, multi-loss peers first.

    Returns the plan, or why no cover exists (the reason of the last peer that refused the first
    uncovered term, else "no peer for 'term'"). ``partial``: cover what can be covered (for the
    ``part`` peers, which time a part of some terms) and fail only when nothing is covered.
    """
    if not peers:
        return "no peers registered"
    library = peers[0].library
    remaining = list(terms)
    parts: list[tuple[Peer, tuple[Term, ...], PeerFn]] = []
    why: dict[str, str] = {}
    for peer in sorted(peers, key=lambda p: -len(p.losses)):  # stable: registration order among equals
        while remaining:
            chosen = _take(peer, remaining)
            if chosen is None:
                break
            try:
                fn = peer.build(chosen, mode)
            except PeerUnsupported as exc:
                for t in chosen:
                    why[t.key] = f"{library} {peer.name}: {exc}"
                break
            parts.append((peer, chosen, fn))
            for t in chosen:
                remaining.remove(t)
    if partial and not parts and not why:
        return f"{library} {NO_COVER}"
    if remaining and not (partial and parts):
        t = remaining[0]
        return why.get(t.key, f"{library} has no peer for '{t.spec()}'")
    return PeerPlan(library, parts)


def by_library(peers: Sequence[Peer], part: bool) -> dict[str, list[Peer]]:
    """Peers grouped by library (first registration order), whole-loss peers or ``part`` peers."""
    out: dict[str, list[Peer]] = {}
    for p in peers:
        if (p.part is not None) == part:
            out.setdefault(p.library if not part else f"{p.library}\0{p.part}", []).append(p)
    return out


def describe(peers: Sequence[Peer]) -> list[dict[str, Any]]:
    """The peers as JSON-able rows (for ``segloss bench --list-peers``)."""
    return [{"library": p.library, "name": p.name, "losses": list(p.losses), "requires": list(p.requires),
             "part": p.part, "plugin": p.plugin, "installed": not missing_modules(p)} for p in peers]
