"""The watch after a promotion: the rules that turn one measurement of the live slot into a rollback.

Plain Python, no Prefect. The `[rollback]` table sets every limit:

- 5xx rate above `max_error_rate` (default 5 %),
- p95 latency above `max_p95_latency` (default 3 s),
- availability below `min_availability` (default 95 %),
- health checks failing without a break for longer than `health_failing_for` (default 2 min),
- the release's process no longer running (at once: nothing to wait for).

A measurement with fewer than `min_requests` requests says nothing about the metrics (it is not a
pass either); a watch in which no measurement had enough traffic ends *inconclusive*: the release
stays live, but it is not made the last known good and the previous slot is kept warm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from turnout.config import RollbackConfig
from turnout.metrics import SlotMetrics

__all__ = ["metric_trigger", "HealthClock", "WatchResult"]


def metric_trigger(m: SlotMetrics, cfg: RollbackConfig) -> str | None:
    """The first rollback rule `m` breaks, as a sentence; None when it breaks none or has too little data."""
    if m.requests < cfg.min_requests:
        return None
    if (m.error_rate or 0.0) > cfg.max_error_rate:
        return f"5xx rate {m.error_rate:.2%} > {cfg.max_error_rate:.2%} ({m.errors:g} of {m.requests:g} requests)"
    if m.p95 is not None and m.p95 > cfg.max_p95_latency:
        return f"p95 latency {m.p95:.3f}s > {cfg.max_p95_latency:g}s"
    if m.availability is not None and m.availability < cfg.min_availability:
        return f"availability {m.availability:.2%} < {cfg.min_availability:.2%}"
    return None


@dataclass
class HealthClock:
    """How long health checks have been failing without a break."""

    limit: float
    failing_since: float | None = None
    last_reason: str = ""

    def observe(self, ok: bool, now: float, reason: str = "") -> str | None:
        """Record one round of checks at `now`; the trigger sentence once failing lasts past `limit`."""
        if ok:
            self.failing_since, self.last_reason = None, ""
            return None
        if self.failing_since is None:
            self.failing_since = now
        self.last_reason = reason or self.last_reason
        failing_for = now - self.failing_since
        if failing_for > self.limit:
            return f"health checks failing for {failing_for:.0f}s > {self.limit:g}s: {self.last_reason}"
        return None


@dataclass
class WatchResult:
    """How a watch ended: `trigger` (roll back), or clean / inconclusive after its full length."""

    trigger: str | None = None
    seconds: float = 0.0
    measurements: int = 0
    conclusive: int = 0
    errors: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """No trigger and at least one measurement with enough traffic to judge."""
        return self.trigger is None and self.conclusive > 0

    def summary(self) -> str:
        """One line for the report and the CLI."""
        if self.trigger:
            return f"watch triggered after {self.seconds:.1f}s: {self.trigger}"
        verdict = "clean" if self.clean else "inconclusive (no measurement had enough traffic)"
        return (
            f"watch {verdict} over {self.seconds:.0f}s: {self.measurements} measurement(s), "
            f"{self.conclusive} with enough traffic, {self.errors} error(s)"
        )
