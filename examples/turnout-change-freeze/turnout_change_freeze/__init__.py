"""A turnout gate: while the freeze file exists, every deployment is refused before it starts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.interfaces import GateContext, Registration
from turnout.models import DeploymentEvent, Outcome, Phase, Verdict

NAME = "change-freeze"


class FreezeConfig(BaseModel):
    """`[[gates]]` settings for `kind = "change-freeze"`."""

    model_config = ConfigDict(extra="forbid")

    freeze_file: str = Field("FREEZE", description="Path relative to the project root; its text is the reason.")
    phases: list[Phase] = Field(default_factory=lambda: [Phase.PRE_DEPLOY])


class ChangeFreezeGate:
    """FAIL while the freeze file exists, PASS otherwise."""

    def __init__(self, config: FreezeConfig, environment):
        self.path = environment.resolve(config.freeze_file)
        self.phases = set(config.phases)

    def evaluate(self, phase: Phase, context: GateContext) -> Verdict:
        """Look for the freeze file."""
        if self.path.exists():
            reason = self.path.read_text().strip() or "change freeze in effect"
            return Verdict(gate=NAME, phase=phase, outcome=Outcome.FAIL, reason=f"change freeze: {reason}",
                           evidence={"freeze_file": str(self.path)})
        return Verdict(gate=NAME, phase=phase, outcome=Outcome.PASS, reason="no change freeze",
                       evidence={"freeze_file": str(self.path)})


@turnout.hookimpl
def register_gates():
    """The change-freeze gate."""
    return [Registration(NAME, FreezeConfig, ChangeFreezeGate, "refuse deployments while a freeze file exists")]


@turnout.hookimpl
def deployment_event(event: DeploymentEvent) -> None:
    """Observe events too (an example of the broadcast hook): nothing to do here."""
