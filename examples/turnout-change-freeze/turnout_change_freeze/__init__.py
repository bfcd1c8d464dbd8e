"""An example turnout plugin package: a gate and a canary judge.

- the `change-freeze` gate: while the freeze file exists, every deployment is refused before it starts;
- the `error-budget` judge: a canary fails as soon as its 5xx since the stage began have spent
  more than `budget` of its requests (an SLO's error budget), whatever the stable slot does.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.interfaces import GateContext, Registration
from turnout.judge import hard_limits, judge_verdict, too_little
from turnout.measurement import StageMeasurement
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
            return Verdict(
                gate=NAME,
                phase=phase,
                outcome=Outcome.FAIL,
                reason=f"change freeze: {reason}",
                evidence={"freeze_file": str(self.path)},
            )
        return Verdict(
            gate=NAME,
            phase=phase,
            outcome=Outcome.PASS,
            reason="no change freeze",
            evidence={"freeze_file": str(self.path)},
        )


@turnout.hookimpl
def register_gates():
    """The change-freeze gate."""
    return [Registration(NAME, FreezeConfig, ChangeFreezeGate, "refuse deployments while a freeze file exists")]


class ErrorBudgetConfig(BaseModel):
    """`[canary.judge]` settings for `kind = "error-budget"`."""

    model_config = ConfigDict(extra="forbid")

    budget: float = Field(0.01, gt=0, lt=1, description="Share of a stage's canary requests that may answer 5xx.")


class ErrorBudgetJudge:
    """FAIL once the canary's 5xx share in this stage exceeds the budget; the shared rules apply too."""

    name = "error-budget"

    def __init__(self, config: ErrorBudgetConfig, environment):
        self.budget = config.budget
        self.thresholds = environment.thresholds
        self.min_requests = environment.canary.min_requests

    def begin_stage(self, weight: int) -> None:
        """Nothing to forget: the runtime restarts the stage's totals."""

    def judge(self, m: StageMeasurement) -> Verdict:
        """Too little data: inconclusive; then the budget, on the stage's totals; then the fixed limits."""
        early = too_little(self.name, m, self.min_requests)
        if early:
            return early
        spent = m.canary_total.error_rate or 0.0
        if spent > self.budget:
            return judge_verdict(
                self.name,
                Outcome.FAIL,
                f"error budget spent: {spent:.2%} of the canary's requests answered 5xx (budget {self.budget:.2%})",
                m,
                rule="error_budget",
            )
        return hard_limits(self.name, m, self.thresholds) or judge_verdict(
            self.name, Outcome.PASS, f"{spent:.2%} of the {self.budget:.2%} error budget", m
        )


@turnout.hookimpl
def register_judges():
    """The error-budget judge."""
    return [
        Registration("error-budget", ErrorBudgetConfig, ErrorBudgetJudge, "fail when the canary's 5xx exceed a budget")
    ]


@turnout.hookimpl
def deployment_event(event: DeploymentEvent) -> None:
    """Observe events too (an example of the broadcast hook): nothing to do here."""
