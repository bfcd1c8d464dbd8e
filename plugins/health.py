"""The `health` gate: the environment's `[health]` checks as a gate.

Every deployment runs it before a slot takes traffic (pre-traffic) and after the switch
(post-switch) from the `[health]` table; listing it under `[[gates]]` adds it to other phases
with its own paths and timeouts.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.config import Environment
from turnout.health import wait_healthy
from turnout.interfaces import GateContext, Registration
from turnout.models import Phase, Verdict

NAME = "health"


class HealthGateConfig(BaseModel):
    """`[[gates]]` settings for `kind = "health"`; unset keys come from `[health]`."""

    model_config = ConfigDict(extra="forbid")

    phases: list[Phase] = Field(default_factory=lambda: [Phase.PRE_TRAFFIC])
    paths: list[str] | None = None
    timeout: float | None = Field(None, gt=0)
    max_response_time: float | None = Field(None, gt=0)


class HealthGate:
    """Waits for every health path of the slot to pass."""

    def __init__(self, config: HealthGateConfig, environment: Environment):
        self.config = config
        self.environment = environment
        self.phases = set(config.phases)

    def evaluate(self, phase: Phase, context: GateContext) -> Verdict:
        """PASS when every path answers 2xx in time; FAIL on timeout or a stopped release."""
        h = self.environment.health
        return wait_healthy(
            context.base_urls,
            self.config.paths or h.paths,
            max_response_time=self.config.max_response_time or h.max_response_time,
            timeout=context.timeout or self.config.timeout or h.timeout,
            interval=h.interval,
            status=lambda: context.target.status(context.slot),
            phase=phase,
            gate=NAME,
        )


@turnout.hookimpl
def register_gates():
    """The health gate."""
    return [Registration(NAME, HealthGateConfig, HealthGate, "HTTP health paths must answer 2xx in time")]
