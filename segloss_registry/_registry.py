"""The registry: plugins found through entry points and pluggy, and the losses they register."""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.metadata as md
import inspect
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pluggy

from . import _hookspecs
from ._errors import AmbiguousLossError, PluginError, UnknownLossError, did_you_mean
from ._params import MODES, LossParams, NoParams

if TYPE_CHECKING:
    from torch import Tensor

    from ._inputs import Inputs

__all__ = [
    "LossInfo", "RecipeInfo", "Registered", "PluginInfo", "Registry", "PluginWarning", "get_registry", "natural_key",
]

ENTRY_POINT_GROUP = "segloss_registry"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginWarning(UserWarning):
    """A plugin failed to load or registered something invalid; the others still load."""


@dataclass(frozen=True)
class _Registered:
    """What a loss and a recipe both have: names, where they come from, what they support."""

    name: str
    plugin: str
    aliases: tuple[str, ...] = field(default=(), kw_only=True)
    summary: str = field(default="", kw_only=True)
    modes: tuple[str, ...] = field(default=MODES, kw_only=True)
    dims: tuple[int, ...] = field(default=(1, 2, 3), kw_only=True)
    hints: Mapping[str, str] = field(default_factory=dict, hash=False, kw_only=True)  # unsupported mode -> advice
    distribution: str | None = field(default=None, kw_only=True)
    version: str | None = field(default=None, kw_only=True)

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"


@dataclass(frozen=True)
class LossInfo(_Registered):
    """One registered loss: ``fn(inputs, params)`` computes it from the normalised ``Inputs`` and
    a validated instance of ``params``."""

    fn: Callable[[Inputs, Any], Tensor]
    params: type[LossParams]
    recipe: ClassVar[None] = None  # a loss is no recipe: ``info.recipe is None`` tells the two apart


@dataclass(frozen=True)
class RecipeInfo(_Registered):
    """One registered recipe: a name for the spec string ``spec`` (``dice_bce`` = ``"bce+dice"``),
    expanded into its terms when a loss is built. Its ``modes`` and ``dims`` are those all its
    terms support."""

    spec: str

    @property
    def recipe(self) -> str:
        """The spec string (the name ``LossInfo.recipe`` had before recipes were their own type)."""
        return self.spec

    @property
    def params(self) -> type[LossParams]:
        """A recipe has no parameters of its own (keywords go to the terms that accept them)."""
        return NoParams


Registered = LossInfo | RecipeInfo  # what the registry lists and resolves


@dataclass
class PluginInfo:
    """What ``segloss plugins`` shows: one plugin, where it comes from and how it loaded."""

    name: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | failed | blocked
    losses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def natural_key(s: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", s)]


def _strict() -> bool:
    """``SEGLOSS_STRICT_PLUGINS=1`` (or true/yes/on): any plugin problem is a ``PluginError``."""
    return os.environ.get("SEGLOSS_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name.strip().lower())


def _disabled() -> set[str]:
    """``SEGLOSS_DISABLE_PLUGINS=a,b``: plugin (entry-point) or distribution names never imported."""
    return {_norm(p) for p in os.environ.get("SEGLOSS_DISABLE_PLUGINS", "").split(",") if p.strip()}


class Registry:
    """Loss plugins and their losses. ``get_registry()`` gives the process-wide one."""

    def __init__(self, entry_point_group: str | None = ENTRY_POINT_GROUP) -> None:
        self._group = entry_point_group
        self._pm = pluggy.PluginManager(_hookspecs.PROJECT)
        self._pm.add_hookspecs(_hookspecs)
        self._lock = threading.RLock()
        self._loaded = False
        self._loading = False
        self._error: PluginError | None = None  # strict mode: raised on every use
        self._plugins: dict[str, PluginInfo] = {}
        self._losses: dict[str, list[Registered]] = {}  # plugin name -> its losses
        self._warned: set[str] = set()

    # -- loading -----------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._loaded:
            with self._lock:
                # _loading: a plugin that uses the registry while it is being loaded sees a partial one
                if not self._loaded and not self._loading:
                    self._loading = True
                    try:
                        if self._group:
                            self._load_entry_points()
                        self._finish_recipes()
                        self._report_ambiguities()
                        self._raise_if_strict()
                    except BaseException:  # KeyboardInterrupt: nothing stays half-loaded; the next use loads again
                        self._reset()
                        raise
                    else:
                        self._loaded = True
                    finally:
                        self._loading = False
        if self._error is not None:
            raise self._error

    def _reset(self) -> None:
        for name in list(self._plugins):
            if self._pm.has_plugin(name):
                self._pm.unregister(name=name)
        self._plugins.clear()
        self._losses.clear()
        self._error = None

    def _finish_recipes(self) -> None:
        """A recipe's modes and dims are those that all of its terms support (the intersection)."""
        from ._spec import parse_spec

        for losses in self._losses.values():
            for i, loss in enumerate(losses):
                if not isinstance(loss, RecipeInfo):
                    continue
                modes, dims = set(loss.modes), set(loss.dims)
                for term in parse_spec(loss.spec):
                    hits = self._find(term.name)
                    if len(hits) == 1 and isinstance(hits[0], LossInfo):
                        modes &= set(hits[0].modes)
                        dims &= set(hits[0].dims)
                losses[i] = dataclasses.replace(
                    loss, modes=tuple(m for m in MODES if m in modes), dims=tuple(sorted(dims))
                )

    def _find(self, name: str) -> list[Registered]:
        key = name.strip().lower()
        if ":" in key:
            plugin, _, short = key.partition(":")
            return [x for x in self._losses.get(plugin, []) if short == x.name or short in x.aliases]
        return [x for ls in self._losses.values() for x in ls if key == x.name or key in x.aliases]

    def _raise_if_strict(self) -> None:
        if not _strict():
            return
        lines = [f"{self._where(p)}: {m}" for p in self.plugins_unchecked() for m in p.problems]
        if lines:
            self._error = PluginError(
                f"{len(lines)} plugin problem(s) and SEGLOSS_STRICT_PLUGINS is set:\n  " + "\n  ".join(lines)
                + "\nfix or uninstall the plugin, block it with SEGLOSS_DISABLE_PLUGINS=<name>, "
                "or unset SEGLOSS_STRICT_PLUGINS to load the others with a warning"
            )

    def _load_entry_points(self) -> None:
        disabled = _disabled()
        matched: set[str] = set()
        try:
            providers = md.packages_distributions()
        except Exception:  # noqa: BLE001 - broken metadata of some other distribution: skip the ownership check
            providers = {}
        for ep in sorted(md.entry_points(group=self._group or ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist else None, dist.version if dist else None)
            first = self._plugins.get(ep.name)
            if first is not None:
                where = f" from {info.distribution} {info.version}" if info.distribution else ""
                self._problem(first, f"a second entry point named '{ep.name}' ({ep.value}{where}) was skipped; "
                                     f"rename one of them")
                continue
            self._plugins[ep.name] = info
            names = {_norm(ep.name)} | ({_norm(info.distribution)} if info.distribution else set())
            if names & disabled:
                matched |= names & disabled
                info.status = "blocked"
                continue
            foreign = _foreign_module(ep, info.distribution, providers)
            if foreign:
                info.status = "failed"
                self._problem(info, foreign)
                continue
            try:
                obj = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - one broken plugin never breaks the others
                info.status = "failed"
                self._problem(info, f"import of '{ep.value}' failed: {type(exc).__name__}: {exc}")
                continue
            self._add(obj, info)
        unknown = sorted(disabled - matched)
        if unknown:
            self._warn(f"SEGLOSS_DISABLE_PLUGINS names {', '.join(unknown)}, which match no installed plugin; "
                       f"plugins: {', '.join(sorted(self._plugins))}")

    def _add(self, obj: object, info: PluginInfo) -> None:
        if not _NAME.match(info.name):
            info.status = "failed"
            self._problem(info, "a plugin name must be lower-case letters, digits and '_'")
            return
        try:
            self._pm.register(obj, name=info.name)
        except Exception as exc:  # noqa: BLE001 - pluggy's validation errors, duplicate names
            info.status = "failed"
            self._problem(info, f"{type(exc).__name__}: {exc}")
            return
        self._plugins[info.name] = info
        self._collect(info)

    def _collect(self, info: PluginInfo) -> None:
        impls = [i for i in self._pm.hook.register_losses.get_hookimpls() if i.plugin_name == info.name]
        found: list[Registered] = []
        if not impls and not any(i.plugin_name == info.name for i in self._pm.hook.register_peers.get_hookimpls()):
            info.status = "failed"
            self._problem(info, "it has no register_losses hook (a function decorated with "
                                "@segloss_registry.hookimpl), so it registers no loss")
        register = _Register(self, info, found)
        for impl in impls:
            try:
                impl.function(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - all or nothing per plugin
                info.status = "failed"
                self._problem(info, f"its register_losses hook raised {type(exc).__name__}: {exc}")
                found.clear()
                if self._pm.has_plugin(info.name):
                    self._pm.unregister(name=info.name)
                break
        self._losses[info.name] = found
        info.losses = [loss.name for loss in found]

    @staticmethod
    def _where(info: PluginInfo) -> str:
        dist = f" ({info.distribution} {info.version})" if info.distribution else ""
        return f"segloss plugin '{info.name}'{dist}"

    def _problem(self, info: PluginInfo, message: str, warn: bool = True) -> None:
        """Record a problem of one plugin (``segloss plugins`` shows it) and warn once, unless strict."""
        if message in info.problems:
            return
        info.problems.append(message)
        if warn and not _strict():
            self._warn(f"{self._where(info)}: {message}")

    def _warn(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            warnings.warn(text, PluginWarning, stacklevel=5)

    def _report_ambiguities(self) -> None:
        """A name (or alias) that two plugins register: one warning naming both, a problem of each."""
        owners: dict[str, set[str]] = {}
        for plugin, losses in self._losses.items():
            for loss in losses:
                for n in (loss.name, *loss.aliases):
                    owners.setdefault(n, set()).add(plugin)
        for n, plugins in sorted(owners.items()):
            if len(plugins) > 1:
                fixes = " or ".join(f"'{p}:{n}'" for p in sorted(plugins))
                msg = (f"loss name '{n}' is registered by {len(plugins)} plugins ({', '.join(sorted(plugins))}); "
                       f"the short name is ambiguous: write {fixes}")
                for i, p in enumerate(sorted(plugins)):
                    self._problem(self._plugins[p], msg, warn=i == 0)

    def plugins_unchecked(self) -> list[PluginInfo]:
        """``plugins()`` without loading or raising (for error messages)."""
        return sorted(self._plugins.values(), key=lambda p: natural_key(p.name))

    # -- plugins registered by code (tests, notebooks) ----------------------------------
    def register_plugin(self, obj: object, name: str, version: str | None = None) -> PluginInfo:
        """Register a plugin object (module or instance with a ``register_losses`` hookimpl)."""
        self._ensure_loaded()
        with self._lock:
            if name in self._plugins and self._plugins[name].status == "loaded":
                raise PluginError(f"a plugin named '{name}' is already registered; unregister it or pick another name")
            info = PluginInfo(name, None, version)
            self._add(obj, info)
            if info.status != "loaded":
                self.unregister_plugin(name)
                raise PluginError(f"plugin '{name}' failed: {'; '.join(info.problems)}")
            self._report_ambiguities()
            if _strict() and info.problems:
                self.unregister_plugin(name)
                raise PluginError(f"plugin '{name}': {'; '.join(info.problems)} [SEGLOSS_STRICT_PLUGINS is set]")
            return info

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            if self._pm.has_plugin(name):
                self._pm.unregister(name=name)
            self._plugins.pop(name, None)
            self._losses.pop(name, None)
            for info in self._plugins.values():  # ambiguities that involved it are gone with it
                info.problems = [m for m in info.problems if "the short name is ambiguous" not in m]
            self._report_ambiguities()

    @contextmanager
    def plugin(self, obj: object, name: str) -> Iterator[PluginInfo]:
        """Register ``obj`` as plugin ``name`` for the duration of a ``with`` block."""
        info = self.register_plugin(obj, name)
        try:
            yield info
        finally:
            self.unregister_plugin(name)

    # -- queries -------------------------------------------------------------------------
    def plugins(self) -> list[PluginInfo]:
        """Every plugin found and how it loaded; lists them even in strict mode (``segloss plugins``)."""
        try:
            self._ensure_loaded()
        except PluginError:
            if self._error is None:
                raise
        return sorted(self._plugins.values(), key=lambda p: natural_key(p.name))

    def peer_hooks(self) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, hook function) of each loaded plugin's ``register_peers`` (``_peers.list_peers``)."""
        self._ensure_loaded()
        return [(i.plugin_name, i.function) for i in self._pm.hook.register_peers.get_hookimpls()]

    def all_losses(self) -> list[Registered]:
        self._ensure_loaded()
        return [loss for losses in self._losses.values() for loss in losses]

    def list(self, pattern: str = "*") -> list[Registered]:
        """Losses whose name or alias matches the wildcard ``pattern``, naturally sorted."""
        pat = pattern.lower()
        hits = [
            loss
            for loss in self.all_losses()
            if any(fnmatch.fnmatchcase(n, pat) for n in (loss.name, loss.qualified_name, *loss.aliases))
        ]
        return sorted(hits, key=lambda loss: (natural_key(loss.name), loss.plugin))

    def resolve(self, name: str) -> Registered:
        """The loss or recipe for ``name``, an alias, or a qualified ``plugin:name``."""
        self._ensure_loaded()
        if not isinstance(name, str):
            raise UnknownLossError(f"a loss name must be a string (got {name!r})")
        key = name.strip().lower()
        if ":" in key:
            plugin, _, short = key.partition(":")
            losses = self._losses.get(plugin)
            if losses is None:
                known = sorted(self._losses)
                raise UnknownLossError(
                    f"unknown plugin '{plugin}' in '{name}'{did_you_mean(plugin, known)}; plugins: {', '.join(known)}"
                )
            hits = [loss for loss in losses if short == loss.name or short in loss.aliases]
            if not hits:
                names = sorted(n for loss in losses for n in (loss.name, *loss.aliases))
                raise UnknownLossError(
                    f"plugin '{plugin}' has no loss '{short}'{did_you_mean(short, names)}; it has: {', '.join(names)}"
                )
            return hits[0]
        hits = [loss for loss in self.all_losses() if key == loss.name or key in loss.aliases]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            options = " or ".join(f"'{h.plugin}:{h.name}'" for h in sorted(hits, key=lambda h: h.plugin))
            raise AmbiguousLossError(
                f"loss name '{name}' is registered by {len(hits)} plugins "
                f"({', '.join(sorted(h.plugin for h in hits))}); write {options}"
            )
        names = sorted({n for loss in self.all_losses() for n in (loss.name, *loss.aliases)}, key=natural_key)
        raise UnknownLossError(f"unknown loss '{name}'{did_you_mean(key, names)}; available: {', '.join(names)}"
                               + self._not_loaded_hint())

    def _not_loaded_hint(self) -> str:
        blocked = [p.name for p in self._plugins.values() if p.status == "blocked"]
        failed = [p.name for p in self._plugins.values() if p.status == "failed"]
        hint = ""
        if blocked:
            hint += f"; blocked by SEGLOSS_DISABLE_PLUGINS: {', '.join(sorted(blocked))}"
        if failed:
            hint += f"; failed to load (see `segloss plugins`): {', '.join(sorted(failed))}"
        return hint


class _Register:
    """The ``register`` callback handed to one plugin's hook."""

    def __init__(self, registry: Registry, info: PluginInfo, found: list[Registered]) -> None:
        self._registry = registry
        self._info = info
        self._found = found

    def __call__(
        self,
        name: str,
        fn: Callable[..., Any] | str,
        *,
        params: type[LossParams] | None = None,
        aliases: Sequence[str] = (),
        summary: str = "",
        modes: Sequence[str] = MODES,
        dims: Sequence[int] = (1, 2, 3),
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Register loss ``name`` computed by ``fn(inputs, params)``; a spec string makes a named recipe."""
        problem = self._check(name, fn, params, aliases, modes, dims) or _check_hints(hints)
        if problem:
            self._registry._problem(self._info, f"loss {name!r} was not registered: {problem}")
            return
        common: dict[str, Any] = {
            "aliases": tuple(aliases),
            "summary": summary.strip().splitlines()[0] if summary.strip() else "",
            "modes": tuple(modes),
            "dims": tuple(sorted(dims)),
            "hints": dict(hints or {}),
            "distribution": self._info.distribution,
            "version": self._info.version,
        }
        if isinstance(fn, str):
            self._found.append(RecipeInfo(name, self._info.name, spec=fn, **common))
        else:
            self._found.append(LossInfo(name, self._info.name, fn=fn, params=params or NoParams, **common))

    def _check(self, name: Any, fn: Any, params: Any, aliases: Any, modes: Any, dims: Any) -> str | None:
        if not isinstance(name, str) or not _NAME.match(name):
            return "a loss name must be lower-case letters, digits and '_', starting with a letter"
        if isinstance(fn, str):
            if params is not None:
                return "a recipe (spec string) takes no params model"
            from ._errors import SeglossError
            from ._spec import parse_spec

            try:
                parse_spec(fn)
            except SeglossError as exc:
                return f"its recipe does not parse: {exc}"
        else:
            if not callable(fn):
                return f"fn must be callable fn(inputs, params) or a spec string (got {type(fn).__name__})"
            try:
                inspect.signature(fn).bind(None, None)
            except TypeError:
                return f"fn must accept two arguments fn(inputs, params) (got {getattr(fn, '__name__', fn)!r})"
            except ValueError:  # no signature (some builtins): accept
                pass
            if not (isinstance(params, type) and issubclass(params, LossParams)):
                return (f"params must be a subclass of segloss_registry.LossParams, NoParams for a loss without "
                        f"any (got {params!r})")
        if isinstance(aliases, str) or not all(isinstance(a, str) and _NAME.match(a) for a in aliases):
            return f"aliases must be a sequence of valid names (got {aliases!r})"
        if isinstance(modes, str) or not modes or not set(modes) <= set(MODES):
            return f"modes must be a non-empty subset of {MODES} (got {modes!r})"
        if isinstance(dims, int) or not dims or not set(dims) <= {1, 2, 3}:
            return f"dims must be a non-empty subset of (1, 2, 3) (got {dims!r})"
        taken = {n for loss in self._found for n in (loss.name, *loss.aliases)}
        for n in (name, *aliases):
            if n in taken:
                return f"'{n}' is registered twice by this plugin"
        return None


def _check_hints(hints: Any) -> str | None:
    if hints is None:
        return None
    if not isinstance(hints, Mapping) or not all(k in MODES and isinstance(v, str) for k, v in hints.items()):
        return f"hints must map modes ({', '.join(MODES)}) to advice strings (got {hints!r})"
    return None


def _foreign_module(ep: Any, distribution: str | None, providers: Mapping[str, list[str]]) -> str | None:
    """Why entry point ``ep`` of ``distribution`` points at a module that is not its own, or None.

    ``segloss new-plugin dice`` once wrote a package ``segloss_dice``: installed, its entry
    point imported the built-in's module name, and one silently replaced the other.
    """
    if distribution is None:
        return None
    top = str(ep.value).split(":")[0].split(".")[0].strip()
    owners = providers.get(top)
    if not owners:  # no metadata says who provides it (a plain sys.path module): nothing to check
        return None
    mine = _norm(distribution)
    normed = [_norm(o) for o in owners]
    others = sorted({o for o, n in zip(owners, normed) if n != mine})
    if mine not in normed:
        return (f"its entry point '{ep.name} = {ep.value}' names module '{top}', which distribution "
                f"{', '.join(others)} provides, not {distribution}; rename the plugin's package (e.g. "
                f"'{top}_{mine}') so that it cannot shadow another plugin")
    if others:
        return (f"its module '{top}' is provided by {distribution} and by {', '.join(others)}: one install "
                f"overwrote the other's files, so the code loaded may not be {distribution}'s; uninstall one "
                f"and rename its package")
    return None


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (plugins load on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        with _REGISTRY_LOCK:
            if _REGISTRY is None:
                _REGISTRY = Registry()
    return _REGISTRY
