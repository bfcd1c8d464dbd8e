"""The plugin manager: loads built-in and third-party plugins and builds them by name.

Plugins come from the entry-point group `turnout` (the built-ins in `plugins/` are registered
there by turnout's own `pyproject.toml`, exactly as a third-party package would) and from the
comma-separated module names in `TURNOUT_PLUGIN_MODULES`.

Environment variables:
    TURNOUT_LOAD_PLUGINS    comma-separated entry-point names: load only these ("" loads none)
    TURNOUT_PLUGIN_MODULES  comma-separated importable modules to register as extra plugins
    TURNOUT_TRACE_HOOKS     "1" prints every hook call to stderr
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import ValidationError

from turnout import hookspecs
from turnout.config import PluginTable, format_validation_error
from turnout.errors import ConfigError
from turnout.interfaces import PLUGIN_KINDS, Registration
from turnout.models import DeploymentEvent

if TYPE_CHECKING:
    from turnout.config import Environment

__all__ = ["PluginInfo", "Registry", "get_registry", "reset_registry"]

log = logging.getLogger("turnout.registry")

_HOOK_BY_KIND = {
    "router": "register_routers",
    "target": "register_targets",
    "metrics": "register_metrics_providers",
    "gate": "register_gates",
    "notifier": "register_notifiers",
    "judge": "register_judges",
}


@dataclass(frozen=True)
class PluginInfo:
    """One registered name and where it came from (for `turnout plugins`)."""

    kind: str
    name: str
    source: str
    description: str


def _csv_env(var: str) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


class Registry:
    """Every plugin that loaded, indexed by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, sources: dict[str, str] | None = None):
        self.pm = pm
        self._sources = sources or {}
        self._regs: dict[str, dict[str, tuple[Registration, str]]] = {k: {} for k in PLUGIN_KINDS}
        self._trace = os.environ.get("TURNOUT_TRACE_HOOKS") == "1"
        for kind, hook in _HOOK_BY_KIND.items():
            for plugin, answer in self._call_each(hook):
                source = self._source_of(plugin)
                for reg in [r for regs in answer for r in regs or []]:
                    if not isinstance(reg, Registration):
                        raise ConfigError(f"plugin {source}: {hook}() must return Registration objects, got {reg!r}")
                    if reg.name in self._regs[kind]:
                        other = self._regs[kind][reg.name][1]
                        raise ConfigError(
                            f"two plugins register the {kind} {reg.name!r}: {other} and {source}; "
                            "uninstall one or restrict loading with TURNOUT_LOAD_PLUGINS"
                        )
                    self._regs[kind][reg.name] = (reg, source)

    def _callers(self, hook: str) -> list[tuple[Any, Any]]:
        """(plugin, hook caller restricted to that plugin's implementation) per implementing plugin.

        pluggy makes the call, so an implementation receives only the arguments it declares and
        every wrapper (`wrapper=True`) runs around it; restricting each call to one plugin is what
        attributes an answer to the plugin that gave it.
        """
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        callers = []
        for impl in impls:
            others = [i.plugin for i in impls if i is not impl]
            callers.append((impl.plugin, self.pm.subset_hook_caller(hook, remove_plugins=others)))
        return callers

    def _call_each(self, hook: str, **kwargs: Any) -> list[tuple[Any, Any]]:
        """Call `hook` once per implementing plugin: (plugin, pluggy's list of non-None results)."""
        answers = []
        for plugin, caller in self._callers(hook):
            if self._trace:
                sys.stderr.write(f"  {hook} [{self.pm.get_name(plugin)}]\n")
            answers.append((plugin, caller(**kwargs)))
        return answers

    def _source_of(self, plugin: Any) -> str:
        name = getattr(plugin, "__name__", None) or type(plugin).__module__
        return self._sources.get(name) or f"module {name}"

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self._regs[kind])

    def describe(self) -> list[PluginInfo]:
        """Everything registered, kind by kind."""
        return [
            PluginInfo(kind, name, src, reg.description)
            for kind in PLUGIN_KINDS
            for name, (reg, src) in sorted(self._regs[kind].items())
        ]

    def registration(self, kind: str, name: str, where: str) -> Registration:
        """The registration for `name`, or ConfigError listing the valid names."""
        try:
            return self._regs[kind][name][0]
        except KeyError:
            known = ", ".join(self.names(kind)) or "(none loaded)"
            raise ConfigError(f"{where}: unknown {kind} kind {name!r}; known: {known}") from None

    def validate_settings(self, kind: str, table: PluginTable, where: str) -> Any:
        """Validate a plugin table against the plugin's own model; return the model instance."""
        reg = self.registration(kind, table.kind, f"{where}.kind")
        try:
            return reg.config_model.model_validate(table.settings())
        except ValidationError as e:
            source, _, key = where.rpartition(": ")
            raise ConfigError(format_validation_error(source or where, e, f"{key}." if source else "")) from None

    def create(self, kind: str, table: PluginTable, environment: Environment, where: str) -> Any:
        """Build the plugin object an environment table names."""
        reg = self.registration(kind, table.kind, f"{where}.kind")
        config = self.validate_settings(kind, table, where)
        return reg.factory(config, environment)

    def broadcast(self, event: DeploymentEvent) -> None:
        """Deliver an event to every plugin's `deployment_event`; failures are logged, not raised."""
        # one call per plugin, so a plugin that raises keeps the event from no other plugin
        for plugin, caller in self._callers("deployment_event"):
            if self._trace:
                sys.stderr.write(f"  deployment_event [{self.pm.get_name(plugin)}] {event.kind}\n")
            try:
                caller(event=event)
            except Exception as e:  # a plugin must never break a deployment
                log.warning("plugin %s failed on event %s: %s", self._source_of(plugin), event.kind, e)


def _build_manager() -> tuple[pluggy.PluginManager, dict[str, str]]:
    pm = pluggy.PluginManager("turnout")
    sources: dict[str, str] = {}  # plugin module name -> where it came from
    pm.add_hookspecs(hookspecs)
    only = _csv_env("TURNOUT_LOAD_PLUGINS")
    for ep in importlib.metadata.entry_points(group="turnout"):
        if only is not None and ep.name not in only:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
        pm.register(plugin, name=ep.name)
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
        sources[getattr(plugin, "__name__", ep.value)] = f"{dist} (entry point {ep.name} = {ep.value})"
    for modname in _csv_env("TURNOUT_PLUGIN_MODULES") or []:
        try:
            module = importlib.import_module(modname)
        except ImportError as e:
            raise ConfigError(f"TURNOUT_PLUGIN_MODULES: cannot import {modname!r}: {e}") from e
        if pm.get_plugin(modname) is None:
            pm.register(module, name=modname)
            sources[modname] = f"module {modname} (TURNOUT_PLUGIN_MODULES)"
    try:
        pm.check_pending()  # a misspelled hook name fails here, not silently
    except pluggy.PluginValidationError as e:
        raise ConfigError(f"a plugin implements an unknown hook: {e}") from e
    if os.environ.get("TURNOUT_TRACE_HOOKS") == "1":  # pluggy prints every call, arguments and answers
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm, sources


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return Registry(*_build_manager())


def reset_registry() -> None:
    """Forget the loaded plugins (tests change TURNOUT_* variables between cases)."""
    get_registry.cache_clear()
