"""The small interfaces a plugin's object implements, one per kind of plugin.

A factory registered through a hook (see `turnout.hookspecs`) returns an object of one of these
shapes. Something a backend cannot do is said by returning `None`, never by a surprise exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel

from turnout.metrics import SlotMetrics
from turnout.models import DeploymentEvent, Phase, SlotStatus, Split, Verdict

if TYPE_CHECKING:
    from turnout.config import Environment

__all__ = [
    "Registration",
    "TrafficRouter",
    "DeployTarget",
    "GateContext",
    "Gate",
    "Notifier",
    "MetricsProvider",
    "PLUGIN_KINDS",
]

#: The kinds of plugin, in the order `turnout plugins` lists them.
PLUGIN_KINDS = ("router", "target", "metrics", "gate", "notifier")


@dataclass(frozen=True)
class Registration:
    """What a registration hook returns: a named factory and the model that validates its table.

    `factory(config, environment)` receives the validated `config_model` instance and the
    `turnout.config.Environment`, and returns the plugin object.
    """

    name: str
    config_model: type[BaseModel]
    factory: Callable[[Any, "Environment"], Any]
    description: str = ""


@runtime_checkable
class TrafficRouter(Protocol):
    """Moves traffic between the two slots. Every method is idempotent."""

    def validate(self) -> None:
        """Check prerequisites (binaries, paths, permissions); raise ConfigError naming what is missing."""

    def get_split(self) -> Split | None:
        """The split currently in force, or None when this router has never routed traffic."""

    def plan(self, split: Split, backends: dict[str, list[str]]) -> str:
        """A human-readable diff of what `apply` would change; changes nothing."""

    def apply(self, split: Split, backends: dict[str, list[str]]) -> None:
        """Put `split` in force atomically; on any failure the previous routing stays in force."""

    def verify(self, split: Split, backends: dict[str, list[str]], timeout: float) -> dict[str, Any]:
        """Confirm `split` really took effect; return evidence, raise BackendError if it did not."""

    def stop(self) -> None:
        """Stop anything this router started itself (a managed proxy); None when it starts nothing."""


@runtime_checkable
class DeployTarget(Protocol):
    """Runs releases in slots."""

    def validate(self) -> None:
        """Check prerequisites; raise ConfigError naming what is missing."""

    def endpoints(self, slot: str) -> list[str]:
        """The `host:port` addresses a slot serves on (a list: a slot may have several replicas)."""

    def describe_start(self, slot: str, release: str) -> list[str]:
        """Human-readable lines saying what `start` would run (for --dry-run)."""

    def start(self, slot: str, release: str) -> list[str]:
        """Start `release` in `slot` (stopping what was there); return its base URLs."""

    def stop(self, slot: str) -> None:
        """Stop whatever runs in `slot`; a no-op when nothing does."""

    def status(self, slot: str) -> SlotStatus:
        """What runs in `slot` right now."""

    def logs(self, slot: str, lines: int = 100) -> str:
        """The last `lines` lines of the slot's output ("" when there are none)."""


@dataclass
class GateContext:
    """What a gate may look at: the environment, the slot under test and its target."""

    environment: "Environment"
    slot: str
    release: str
    base_urls: list[str]
    target: DeployTarget
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Gate(Protocol):
    """Decides whether a deployment may go on at a phase."""

    phases: set[Phase]

    def evaluate(self, phase: Phase, context: GateContext) -> Verdict:
        """Pass, fail, inconclusive or error, with evidence."""


@runtime_checkable
class Notifier(Protocol):
    """Receives every deployment event; its failures are logged, never fail a deployment."""

    def notify(self, event: DeploymentEvent) -> None:
        """Deliver one event."""


@runtime_checkable
class MetricsProvider(Protocol):
    """Measures a slot's traffic over a window: requests, 5xx, latency histogram."""

    def validate(self) -> None:
        """Check the provider's settings against its backend (e.g. queries parse); raise ConfigError."""

    def begin(self, slot: str, endpoints: list[str]) -> None:
        """Start a measurement window for `slot` now."""

    def measure(self, slot: str, endpoints: list[str]) -> "SlotMetrics":
        """The slot's traffic since `begin`; raise BackendError when the source cannot answer."""
