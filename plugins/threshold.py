"""The `threshold` judge: the operator guide's fixed limits on the stage's cumulative counts.

Canary 5xx rate > stable + `max_error_rate_increase` (0.05), p95 > stable + `max_p95_latency_increase`
(3 s), availability < `min_availability` (0.95), or p95 > `max_p95_ratio` (2) x stable's while at
least `p95_ratio_floor` (0.01 s) slower → FAIL; all in `[thresholds]`. Judged on everything each
slot served since the stage began, so one small noisy window cannot trip a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

import turnout
from turnout.config import Environment, ThresholdsConfig
from turnout.interfaces import Registration
from turnout.judge import check_comparable, hard_limits, judge_verdict, too_little
from turnout.measurement import StageMeasurement
from turnout.models import Outcome, Verdict

NAME = "threshold"

__all__ = ["NAME", "ThresholdJudgeConfig", "ThresholdJudge", "register_judges"]


class ThresholdJudgeConfig(BaseModel):
    """`[canary.judge]` settings for `kind = "threshold"`: none (the limits are `[thresholds]`)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ThresholdJudge:
    """Fixed limits, canary versus stable, on the stage's cumulative counts."""

    thresholds: ThresholdsConfig
    min_requests: int = 50
    name: str = NAME

    def begin_stage(self, weight: int) -> None:
        """Nothing to forget: the runtime restarts the cumulative counts."""

    def judge(self, m: StageMeasurement) -> Verdict:
        """Inconclusive on too little data (either slot); fail on a crossed limit; else pass."""
        check_comparable(m)
        return (
            too_little(self.name, m, self.min_requests)
            or hard_limits(self.name, m, self.thresholds)
            or judge_verdict(self.name, Outcome.PASS, "within every threshold", m)
        )


def _build(config: ThresholdJudgeConfig, environment: Environment) -> ThresholdJudge:
    return ThresholdJudge(environment.thresholds, environment.canary.min_requests)


@turnout.hookimpl
def register_judges():
    """The threshold judge."""
    return [Registration(NAME, ThresholdJudgeConfig, _build, "fixed limits from [thresholds] on the stage's totals")]
