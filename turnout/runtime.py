"""Everything one environment's deployment needs, built from its file and the loaded plugins.

`open_runtime` validates the whole environment (every plugin table against its plugin's model,
every prerequisite the plugins check) before anything is touched, so a bad file is exit 2 with
nothing started, written or reloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turnout.config import Environment, load_environment
from turnout.interfaces import DeployTarget, Gate, Notifier, TrafficRouter
from turnout.ledger import Ledger
from turnout.models import DeploymentEvent, Phase
from turnout.plugins import Registry, get_registry

__all__ = ["Runtime", "open_runtime", "validate_environment"]

log = logging.getLogger("turnout")


@dataclass
class Runtime:
    """One environment's plugins and ledger."""

    environment: Environment
    registry: Registry
    router: TrafficRouter
    target: DeployTarget
    gates: list[tuple[str, Gate]]
    notifiers: list[tuple[str, Notifier]]
    _ledger: Ledger | None = field(default=None, repr=False)

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened on first use (validation and dry runs never create it)."""
        if self._ledger is None:
            self._ledger = Ledger(self.environment.effective_ledger_url)
        return self._ledger

    @property
    def name(self) -> str:
        """The environment's name."""
        return self.environment.name

    def backends(self) -> dict[str, list[str]]:
        """Every slot's addresses, as the router needs them."""
        return {slot: self.target.endpoints(slot) for slot in ("blue", "green")}

    def gates_at(self, phase: Phase) -> list[tuple[str, Gate]]:
        """The configured gates that run at `phase`."""
        return [(n, g) for n, g in self.gates if phase in g.phases]

    def emit(self, kind: str, deployment_id: int | None = None, **fields: Any) -> DeploymentEvent:
        """Broadcast an event to every plugin and every configured notifier; never raises."""
        event = DeploymentEvent(kind=kind, environment=self.name, deployment_id=deployment_id, **fields)
        self.registry.broadcast(event)
        for name, notifier in self.notifiers:
            try:
                notifier.notify(event)
            except Exception as e:  # notifying must never fail a deployment
                log.warning("notifier %s failed on %s: %s", name, kind, e)
        return event

    def metrics_provider(self) -> Any:
        """The `[metrics]` provider (default: scrape), validated against its backend."""
        from turnout.config import PluginTable

        table = self.environment.metrics or PluginTable(kind="scrape")
        provider = self.registry.create("metrics", table, self.environment, f"deployments/{self.name}.toml: metrics")
        provider.validate()
        return provider

    def close(self) -> None:
        """Release the ledger's connections."""
        if self._ledger is not None:
            self._ledger.close()


def open_runtime(name: str, config_dir: str | Path | None = None, *, check: bool = True) -> Runtime:
    """Load `deployments/<name>.toml`, build its plugins, and (with `check`) validate prerequisites."""
    env = load_environment(name, config_dir)
    registry = get_registry()
    src = f"deployments/{name}.toml"
    router = registry.create("router", env.router, env, f"{src}: router")
    target = registry.create("target", env.target, env, f"{src}: target")
    gates = [(t.kind, registry.create("gate", t, env, f"{src}: gates[{i}]")) for i, t in enumerate(env.gates)]
    notifiers = [(t.kind, registry.create("notifier", t, env, f"{src}: notifiers[{i}]"))
                 for i, t in enumerate(env.notifiers)]
    if env.metrics is not None:
        registry.validate_settings("metrics", env.metrics, f"{src}: metrics")
    if check:
        router.validate()
        target.validate()
    return Runtime(env, registry, router, target, gates, notifiers)


def validate_environment(name: str, config_dir: str | Path | None = None) -> Environment:
    """Validate an environment completely; return it or raise ConfigError."""
    rt = open_runtime(name, config_dir)
    rt.close()
    return rt.environment
