"""The small interfaces a plugin's object implements, one per kind of plugin.

A factory registered through a hook (see `turnout.hookspecs`) returns an object of one of these
shapes. Something a backend cannot do is said by returning `None`, never by a surprise exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from turnout.metrics import SlotMetrics
from turnout.models import DeploymentEvent, Phase, RouterState, SlotStatus, Split, Verdict

if TYPE_CHECKING:
    from turnout.config import Environment
    from turnout.measurement import StageMeasurement

__all__ = [
    "Registration",
    "TrafficRouter",
    "DeployTarget",
    "GateContext",
    "Gate",
    "Notifier",
    "MetricsProvider",
    "Judge",
    "PLUGIN_KINDS",
]

#: The kinds of plugin, in the order `turnout plugins` lists them.
PLUGIN_KINDS = ("router", "target", "metrics", "gate", "notifier", "judge")


@dataclass(frozen=True)
class Registration:
    """What a registration hook returns: a named factory and the model that validates its table.

    `factory(config, environment)` receives the validated `config_model` instance and the
    `turnout.config.Environment`, and returns the plugin object.
    """

    name: str
    config_model: type[BaseModel]
    factory: Callable[[Any, Environment], Any]
    description: str = ""


@runtime_checkable
class TrafficRouter(Protocol):
    """Moves traffic between the two slots. Every method is idempotent."""

    def validate(self) -> None:
        """Check prerequisites (binaries, paths, permissions); raise ConfigError naming what is missing."""

    def get_split(self) -> Split | None:
        """The split turnout last wrote (its file or API object), or None when it never routed traffic.

        A cheap read for plans; what the router really serves is `observe`.
        """

    def observe(self) -> RouterState | None:
        """What the running router serves now, read from the router itself (its loaded state or requests
        through the data path), never from a file turnout wrote; None when the backend cannot tell.

        Recovery decides on this before it stops any slot.
        """

    def plan(self, split: Split, backends: dict[str, list[str]]) -> str:
        """A human-readable diff of what `apply` would change; changes nothing."""

    def apply(self, split: Split, backends: dict[str, list[str]]) -> None:
        """Put `split` in force atomically; on any failure the previous routing stays in force."""

    def verify(self, split: Split, backends: dict[str, list[str]], timeout: float | None = None) -> dict[str, Any]:
        """Confirm `split` really took effect (within `timeout` s, None: the router's own setting); return
        evidence, raise BackendError if it did not."""

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

    environment: Environment
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

    def check_series(self, slot: str, endpoints: list[str], fresh: bool = False) -> None:
        """Before traffic moves: every configured series exists for `slot`; ConfigError naming what is
        missing and what was found instead (a renamed metric must not read as "0 requests").

        `fresh`: the slot has just started (a source that scrapes on its own schedule may skip it).
        """

    def begin(self, slot: str, endpoints: list[str]) -> None:
        """Start a measurement window for `slot` now."""

    def measure(self, slot: str, endpoints: list[str]) -> SlotMetrics:
        """The slot's traffic since `begin`; raise BackendError when the source cannot answer."""


@runtime_checkable
class Judge(Protocol):
    """Decides, measurement by measurement, whether a canary is worse than stable (`[canary.judge] kind`).

    One judge object serves a whole canary; `begin_stage` is called when each stage's traffic has
    moved. `judge` is then called once per measurement with the window just measured and the
    stage's cumulative counts (`turnout.measurement.StageMeasurement`). PASS means "nothing
    crossed so far": the stage limits (`turnout.judge.decide_stage`) pass a stage only when its
    duration is over and its last measurement passed. The shared rules in `turnout.judge`
    (`too_little`, `hard_limits`) keep every judge inconclusive on too little data and failing on
    the fixed limits. An exception makes that measurement an ERROR.
    """

    name: str

    def begin_stage(self, weight: int) -> None:
        """A new stage starts at `weight`% of traffic: forget the previous stage's evidence."""

    def judge(self, m: StageMeasurement) -> Verdict:
        """PASS, FAIL or INCONCLUSIVE, with the numbers and the rule that decided in its evidence."""
