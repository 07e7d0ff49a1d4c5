"""The plugin registry: built-in plugins, then entry-point plugins (torch-free).

Built-ins (``BUILTIN_PLUGINS``) are ordinary pluggy plugins registered by module
name; third-party plugins come from the ``gptkit`` entry-point group, sorted by
entry-point name. A plugin that fails to import, uses an unknown hook, returns a
malformed component or a name already taken is reported once on stderr and
skipped (``GPTKIT_STRICT_PLUGINS=1`` makes that an error).
``GPTKIT_LOAD_PLUGINS`` is a comma-separated allowlist of distribution names
(empty: load none). ``GPTKIT_TRACE_PLUGINS=1`` traces every hook call.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from gptkit._version import __version__
from gptkit.core import hookspecs
from gptkit.core.interfaces import (
    NAME_PATTERN,
    Component,
    ComponentBase,
    Corpus,
    Logger,
    Quantizer,
    Sampler,
    Scheduler,
    SearchStrategy,
    WeightLoader,
    class_constants,
    import_target,
)
from gptkit.errors import GptkitError, PluginError

BUILTIN_PLUGINS = (
    "gptkit.plugins.samplers",
    "gptkit.plugins.schedulers",
    "gptkit.plugins.loaders",
    "gptkit.plugins.loggers",
    "gptkit.plugins.corpora",
    "gptkit.plugins.quantizers",
)
ENTRY_POINT_GROUP = "gptkit"

# kind -> (hook name, accepted base classes, singular noun for messages)
KINDS: dict[str, tuple[str, tuple[type, ...], str]] = {
    "samplers": ("register_samplers", (Sampler, SearchStrategy), "sampler"),
    "schedulers": ("register_schedulers", (Scheduler,), "scheduler"),
    "loaders": ("register_weight_loaders", (WeightLoader,), "weight loader"),
    "loggers": ("register_loggers", (Logger,), "logger"),
    "corpora": ("register_corpora", (Corpus,), "corpus"),
    "quantizers": ("register_quantizers", (Quantizer,), "quantizer"),
}


def normalize_dist(name: str) -> str:
    """PEP 503 normalisation: ``GPTKit_Example`` -> ``gptkit-example``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class PluginLoadError:
    """One problem with one plugin, reported once."""

    plugin: str
    dist: str | None
    message: str

    def __str__(self) -> str:
        where = f"plugin {self.plugin}" + (f" ({self.dist})" if self.dist else "")
        return f"{where}: {self.message}"


@dataclass
class Entry:
    """A registered component: where it comes from and how to import it."""

    kind: str
    name: str
    summary: str
    target: str | type
    plugin: str
    dist: str | None
    _cls: type | None = field(default=None, repr=False)

    def load(self) -> type:
        """Import the component class and check it is of the right kind."""
        if self._cls is None:
            try:
                cls = (
                    import_target(self.target)
                    if isinstance(self.target, str)
                    else self.target
                )
            except Exception as exc:  # a broken plugin must not crash gptkit
                raise PluginError(
                    f"{KINDS[self.kind][2]} {self.name!r} from plugin {self.plugin}"
                    f" failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            bases = KINDS[self.kind][1]
            if not (isinstance(cls, type) and issubclass(cls, bases)):
                raise PluginError(
                    f"{KINDS[self.kind][2]} {self.name!r} from plugin {self.plugin}"
                    f" is not a {bases[0].__name__} subclass"
                )
            if getattr(cls, "name", None) != self.name:
                raise PluginError(
                    f"{KINDS[self.kind][2]} {self.name!r} from plugin {self.plugin}"
                    f" is registered under that name, but its class says"
                    f" {getattr(cls, 'name', None)!r}"
                )
            self._cls = cls
        return self._cls


class ComponentSet:
    """The components of one kind, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.noun = KINDS[kind][2]
        self.entries: dict[str, Entry] = {}

    def names(self) -> list[str]:
        """Registered names (imports nothing)."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            valid = ", ".join(self.entries) or "(none installed)"
            raise GptkitError(
                f"unknown {self.noun} {name!r}; choose one of: {valid}"
            ) from None

    def get(self, name: str) -> type:
        """The component class called ``name`` (imported now)."""
        return self.entry(name).load()

    def create(self, name: str, options: Any = None, **kwargs: Any) -> Any:
        """An instance of component ``name`` with validated options."""
        return self.get(name)(options, **kwargs)


@dataclass
class PluginInfo:
    """One registered plugin (a built-in module or an entry point)."""

    name: str
    dist: str | None
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)


class Registry:
    """All components, by kind, plus the plugins and the problems met."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.samplers = ComponentSet("samplers")
        self.schedulers = ComponentSet("schedulers")
        self.loaders = ComponentSet("loaders")
        self.loggers = ComponentSet("loggers")
        self.corpora = ComponentSet("corpora")
        self.quantizers = ComponentSet("quantizers")
        self.plugins: list[PluginInfo] = []
        self.errors: list[PluginLoadError] = []

    def kind(self, kind: str) -> ComponentSet:
        return getattr(self, kind)

    def plugin_objects(self) -> list[tuple[PluginInfo, Any]]:
        return [(info, self.pm.get_plugin(info.name)) for info in self.plugins]


def _env_allowlist() -> set[str] | None:
    value = os.environ.get("GPTKIT_LOAD_PLUGINS")
    if value is None:
        return None
    return {normalize_dist(v) for v in value.split(",") if v.strip()}


def strict_mode() -> bool:
    return os.environ.get("GPTKIT_STRICT_PLUGINS", "") not in ("", "0", "false")


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _register(reg: Registry, plugin: Any, info: PluginInfo) -> bool:
    try:
        reg.pm.register(plugin, name=info.name)
    except Exception as exc:
        reg.errors.append(
            PluginLoadError(info.name, info.dist, f"{type(exc).__name__}: {exc}")
        )
        return False
    try:
        reg.pm.check_pending()  # rejects misspelled hook names
    except pluggy.PluginValidationError as exc:
        reg.pm.unregister(name=info.name)
        reg.errors.append(PluginLoadError(info.name, info.dist, f"invalid hook: {exc}"))
        return False
    info.hooks = sorted(caller.name for caller in reg.pm.get_hookcallers(plugin) or [])
    reg.plugins.append(info)
    return True


def _as_entry(item: Any, kind: str, info: PluginInfo) -> Entry:
    noun = KINDS[kind][2]
    if isinstance(item, str):
        # "module:Class": name and summary come from the class's source, so
        # listing components imports nothing; else from the class, imported.
        found = class_constants(item, ("name", "summary"))
        if "name" in found:
            item = Component(found["name"], item, found.get("summary", ""))
        else:
            item = import_target(item)
    if isinstance(item, Component):
        name, summary, target = item.name, item.summary, item.target
    elif isinstance(item, type) and issubclass(item, ComponentBase):
        name, summary, target = item.name, item.summary, item
    else:
        raise TypeError(f"a {noun} must be a class or a Component, got {item!r}")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"{noun} name {name!r} is not lowercase letters, digits and dashes"
        )
    return Entry(kind, name, summary, target, info.name, info.dist)


def _collect(reg: Registry, info: PluginInfo, plugin: Any) -> None:
    trace = os.environ.get("GPTKIT_TRACE_PLUGINS", "") not in ("", "0")
    for kind, (hook_name, _, noun) in KINDS.items():
        caller = getattr(reg.pm.hook, hook_name)
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
        for impl in impls:
            if trace:
                sys.stderr.write(f"gptkit: calling {info.name}.{hook_name}()\n")
            try:
                items = impl.function() or []
                entries = [_as_entry(item, kind, info) for item in items]
            except Exception as exc:
                reg.errors.append(
                    PluginLoadError(
                        info.name,
                        info.dist,
                        f"{hook_name} failed: {type(exc).__name__}: {exc}",
                    )
                )
                continue
            components = reg.kind(kind)
            for entry in entries:
                if entry.name in components.entries:
                    first = components.entries[entry.name]
                    first_where = first.plugin + (
                        f" ({first.dist})" if first.dist else ""
                    )
                    reg.errors.append(
                        PluginLoadError(
                            info.name,
                            info.dist,
                            f"{noun} name {entry.name!r} is already registered by"
                            f" plugin {first_where}; keeping the first",
                        )
                    )
                    continue
                components.entries[entry.name] = entry
                info.provides.setdefault(kind, []).append(entry.name)


def build_registry(
    *,
    entry_points: bool = True,
    allow: set[str] | None = None,
    extra_plugins: dict[str, Any] | None = None,
) -> Registry:
    """Build a registry: built-ins, then ``extra_plugins`` (name -> module/object,
    for tests), then entry points (allowlist ``allow`` or ``GPTKIT_LOAD_PLUGINS``)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("GPTKIT_TRACE_PLUGINS", "") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    reg = Registry(pm)
    version = __version__
    candidates: list[tuple[PluginInfo, Any]] = []
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(module_name, "gptkit", version, builtin=True)
        candidates.append((info, importlib.import_module(module_name)))
    for name, plugin in (extra_plugins or {}).items():
        candidates.append((PluginInfo(name, None, None, builtin=False), plugin))
    allowed = allow if allow is not None else _env_allowlist()
    if entry_points:
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist is not None else None
            if allowed is not None and (
                dist is None or normalize_dist(dist) not in allowed
            ):
                continue
            info = PluginInfo(
                ep.name, dist, ep.dist.version if ep.dist else None, builtin=False
            )
            try:
                plugin = ep.load()
            except Exception as exc:
                reg.errors.append(
                    PluginLoadError(
                        ep.name, dist, f"failed to load: {type(exc).__name__}: {exc}"
                    )
                )
                continue
            candidates.append((info, plugin))
    for info, plugin in candidates:
        if _register(reg, plugin, info):
            _collect(reg, info, plugin)
    return reg


def report_errors(reg: Registry) -> None:
    """Print each plugin problem once; in strict mode raise the first."""
    if not reg.errors:
        return
    if strict_mode():
        raise PluginError(f"{reg.errors[0]} (GPTKIT_STRICT_PLUGINS is set)")
    for error in reg.errors:
        sys.stderr.write(f"gptkit: {error} (skip it with GPTKIT_LOAD_PLUGINS)\n")


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    reg = build_registry()
    report_errors(reg)
    return reg


def reset_registry() -> None:
    """Forget the cached registry (tests; after installing a plugin)."""
    get_registry.cache_clear()


def add_plugin_commands(reg: Registry, cli: Any) -> None:
    """Call every plugin's ``register_commands(cli)`` once; a failing plugin is
    reported (or raised in strict mode) and the others still run."""
    caller = reg.pm.hook.register_commands
    errors: list[PluginLoadError] = []
    for info, plugin in reg.plugin_objects():
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            try:
                impl.function(**{a: cli for a in impl.argnames if a == "cli"})
            except Exception as exc:
                errors.append(
                    PluginLoadError(
                        info.name,
                        info.dist,
                        f"register_commands failed: {type(exc).__name__}: {exc}",
                    )
                )
    reg.errors.extend(errors)
    if errors:
        probe = Registry(reg.pm)
        probe.errors = errors
        report_errors(probe)
