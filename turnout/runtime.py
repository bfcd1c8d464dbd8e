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

from turnout.addresses import same_socket
from turnout.config import DEFAULT_JUDGE, Environment, load_environment
from turnout.errors import ConfigError
from turnout.interfaces import DeployTarget, Gate, MetricsProvider, Notifier, TrafficRouter
from turnout.ledger import Ledger
from turnout.models import DeploymentEvent, Phase, RouterState
from turnout.registry import Registry, get_registry

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
    _metrics: MetricsProvider | None = field(default=None, repr=False)

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened on first use (validation and dry runs never create it)."""
        if self._ledger is None:
            self._ledger = Ledger(self.environment.effective_ledger_url, state_dir=self.environment.state_dir)
        return self._ledger

    def existing_ledger(self) -> Ledger | None:
        """The ledger when one was ever written, else None; creates nothing (for commands that only read)."""
        if self._ledger is None:
            self._ledger = Ledger.open_existing(
                self.environment.effective_ledger_url, state_dir=self.environment.state_dir
            )
        return self._ledger

    def check_storage(self) -> None:
        """Raise ConfigError when the state directory cannot take a run's writes (read-only, full). Writes nothing."""
        from turnout.storage import storage_problem

        problem = storage_problem(self.environment.state_dir)
        if problem:
            raise ConfigError(
                f"state_dir {self.environment.state_dir}: {problem}: free some space or make it "
                "writable (or point state_dir elsewhere); nothing was touched"
            )

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

    def router_state(self) -> RouterState:
        """What the router really serves now (`TrafficRouter.observe`).

        A router that cannot tell (no `observe`, or it returns None) is described by what turnout last
        wrote, marked `known=False`, so nothing that needs certainty acts on it.
        """
        observe = getattr(self.router, "observe", None)
        state = observe() if observe is not None else None
        if state is None:
            written = self.router.get_split()
            return RouterState(
                serving=True,
                split=written,
                configured=written,
                known=False,
                detail=f"the {self.environment.router.kind} router cannot report what it has loaded",
            )
        return state

    @property
    def metrics(self) -> MetricsProvider:
        """The `[metrics]` provider, as `router` is the router: built and validated once, on first use."""
        if self._metrics is None:
            self._metrics = self.metrics_provider()
        return self._metrics

    def watch_seconds(self, asked: float | None) -> float:
        """How long to watch a promoted release: `asked` (a run's option), else `[rollback] watch`."""
        return self.environment.rollback.watch if asked is None else asked

    def metrics_provider(self) -> Any:
        """A new `[metrics]` provider (default: scrape), validated against its backend (`metrics` keeps one)."""
        from turnout.config import PluginTable

        table = self.environment.metrics or PluginTable(kind="scrape")
        provider = self.registry.create("metrics", table, self.environment, f"deployments/{self.name}.toml: metrics")
        provider.validate()
        return provider

    def health_gate(self, phase: Phase) -> Gate:
        """The `[health]` checks as a gate for `phase`: core, whatever plugins are loaded."""
        from turnout.health import HealthGate, HealthGateConfig

        return HealthGate(HealthGateConfig(phases=[phase]), self.environment)

    def judge(self) -> Any:
        """A fresh `turnout.interfaces.Judge` for a canary, as `[canary.judge]` names it."""
        return self.registry.create(
            "judge", self.environment.canary.judge, self.environment, f"deployments/{self.name}.toml: canary.judge"
        )

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
    notifiers = [
        (t.kind, registry.create("notifier", t, env, f"{src}: notifiers[{i}]")) for i, t in enumerate(env.notifiers)
    ]
    if env.metrics is not None:
        registry.validate_settings("metrics", env.metrics, f"{src}: metrics")
    judge = env.canary.judge
    # the default judge left implicit must not break blue-green when TURNOUT_LOAD_PLUGINS leaves it out;
    # a judge the file names is checked now (the canary builds it again before traffic moves)
    if judge.kind in registry.names("judge") or judge.kind != DEFAULT_JUDGE or judge.settings():
        registry.validate_settings("judge", judge, f"{src}: canary.judge")
    if check:
        router.validate()
        target.validate()
        _check_slots_apart_from_router(router, target, src)
    return Runtime(env, registry, router, target, gates, notifiers)


def _check_slots_apart_from_router(router: TrafficRouter, target: DeployTarget, src: str) -> None:
    # A slot on the router's own address would make the router proxy to itself (or fail to bind).
    # Routers that listen themselves (managed NGINX) say where; others (external, cloud) have no such attribute.
    listen = getattr(router, "listen_address", None)
    if not listen:
        return
    for slot in ("blue", "green"):
        for address in target.endpoints(slot):
            if same_socket(address, listen):
                raise ConfigError(
                    f"{src}: target.slots.{slot}: {address} is the router's listen address "
                    f"(router.listen = {listen}); give the slot a port of its own"
                )


def validate_environment(name: str, config_dir: str | Path | None = None) -> Environment:
    """Validate an environment completely; return it or raise ConfigError."""
    rt = open_runtime(name, config_dir)
    rt.close()
    return rt.environment
