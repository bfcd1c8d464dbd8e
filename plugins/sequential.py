"""The `sequential` judge: anytime-valid tests on cumulative counts, checked as often as you like.

The `statistical` judge runs a fresh test on every window; each is valid once, so across hundreds
of looks a healthy canary sooner or later looks "significant". This judge instead keeps two
e-processes (`turnout.anytime.RateRatioEProcess`) running across the whole canary, every stage
and every look:

- 5xx: is the canary's 5xx rate per request above the stable's?
- latency: is the canary's share of observations slower than the stable's p95 bucket bound above
  the stable's own? (The bound is taken from the stable's counts *before* each increment, so it is
  fixed in advance of the data it tests; the bucket counts are multinomial, this is the test of
  the tail bucket group against the rest.)

Each test runs at alpha/2 (alpha = 1 − confidence): by Ville's inequality the chance that a
healthy canary is ever failed by them, however often the judge looks, is at most alpha. A test
fails the canary once its e-value reaches 2/alpha *and* the stage's estimated effect is at least
`min_effect` (5xx-rate points) or `min_latency_effect` (p95 seconds). The fixed limits of every
judge apply on the stage's totals. PASS means "nothing crossed so far": the stage passes only when
its duration is over (a sequential test never passes early). Evidence carries both e-values, the
anytime-valid p-values and a confidence sequence for the 5xx-rate difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.config import Environment
from turnout.interfaces import Registration
from turnout.judge import check_comparable, hard_limits, judge_verdict, too_little
from turnout.measurement import StageMeasurement
from turnout.metrics import SlotMetrics
from turnout.models import Outcome, Verdict
from turnout.plugins.threshold import ThresholdJudge

if TYPE_CHECKING:
    from turnout.anytime import RateRatioEProcess

NAME = "sequential"

__all__ = ["NAME", "SequentialJudgeConfig", "SequentialJudge", "register_judges"]


class SequentialJudgeConfig(BaseModel):
    """`[canary.judge]` settings for `kind = "sequential"`."""

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(0.95, gt=0.5, lt=1, description="1 - the false-abort rate over the whole canary.")
    min_effect: float = Field(0.01, ge=0, le=1, description="Smallest 5xx-rate increase to fail on.")
    min_latency_effect: float = Field(0.1, ge=0, description="Smallest p95 increase (s) to fail on.")


def _count_upto(buckets: list[tuple[float, float]], bound: float) -> float:
    """Observations at or below `bound` (a bucket bound of this histogram)."""
    return next((c for le, c in buckets if le == bound), 0.0)


def _p95_bound(stable: SlotMetrics) -> float | None:
    """The upper bound of the stable's p95 bucket (a finite `le`), None without enough observations."""
    total = stable.buckets[-1][1] if stable.buckets else 0.0
    if total < 20:
        return None
    bound = next((le for le, c in stable.buckets if c >= 0.95 * total), None)
    return None if bound is None or math.isinf(bound) else bound


def _eprocess() -> RateRatioEProcess:
    """A fresh e-process; numpy and scipy are imported only when a canary is judged, not by `turnout status`."""
    from turnout.anytime import RateRatioEProcess

    return RateRatioEProcess()


@dataclass
class SequentialJudge(ThresholdJudge):
    """Anytime-valid e-processes for 5xx and latency, plus the fixed limits, on cumulative counts."""

    confidence: float = 0.95
    min_effect: float = 0.01
    min_latency_effect: float = 0.1
    name: str = NAME
    errors: RateRatioEProcess = field(default_factory=_eprocess)
    latency: RateRatioEProcess = field(default_factory=_eprocess)
    _prev: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    _bound: float | None = None

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be within (0.5, 1), got {self.confidence}")
        if self.min_effect < 0 or self.min_latency_effect < 0:
            raise ValueError("min_effect and min_latency_effect must not be negative")

    def begin_stage(self, weight: int) -> None:
        """The runtime restarts the cumulative counts; the e-processes run on across stages."""
        self._prev = None

    def _counts(self, total: SlotMetrics) -> tuple[float, float, float, float]:
        """(requests, 5xx, observations, observations above the latency bound) of a slot's totals."""
        obs = total.buckets[-1][1] if total.buckets else 0.0
        slow = obs - _count_upto(total.buckets, self._bound) if self._bound is not None and obs else 0.0
        return total.requests, total.errors, obs, slow

    def judge(self, m: StageMeasurement) -> Verdict:
        """Update both e-processes with the new counts, then: too little data, fixed limits, the tests."""
        check_comparable(m)
        now = self._counts(m.canary_total), self._counts(m.stable_total)
        prev, self._prev = self._prev, now
        if prev is not None and all(a >= b for a, b in zip(now[0] + now[1], prev[0] + prev[1], strict=False)):
            dc = [a - b for a, b in zip(now[0], prev[0], strict=False)]
            ds = [a - b for a, b in zip(now[1], prev[1], strict=False)]
        else:  # the stage began (or its sums restarted): the totals are the increment
            dc, ds = list(now[0]), list(now[1])
        self.errors.update(dc[1], dc[0], ds[1], ds[0])
        if self._bound is not None and prev is not None:  # the bound was fixed before these counts were seen
            self.latency.update(dc[3], dc[2], ds[3], ds[2])
        bound = _p95_bound(m.stable_total) or self._bound
        if bound != self._bound:  # counts above a new bound start from the next increment
            self._bound = bound
            self._prev = self._counts(m.canary_total), self._counts(m.stable_total)
        alpha = 1 - self.confidence
        c, s = m.canary_total, m.stable_total
        tests: dict[str, Any] = {
            "alpha": round(alpha, 4),
            "e_5xx": _r(self.errors.e_value),
            "p_5xx": _r(self.errors.p_value),
            "e_latency": _r(self.latency.e_value),
            "p_latency": _r(self.latency.p_value),
            "latency_bound_s": self._bound,
        }
        early = too_little(self.name, m, self.min_requests) or hard_limits(self.name, m, self.thresholds)
        if early:
            return self._with_cs(early, m, tests, alpha)
        threshold = 2 / alpha  # each test at alpha/2
        effect = (c.error_rate or 0.0) - (s.error_rate or 0.0)
        if self.errors.e_value >= threshold and effect >= self.min_effect:
            return self._with_cs(
                judge_verdict(
                    self.name,
                    Outcome.FAIL,
                    f"canary 5xx rate {c.error_rate:.2%} is above stable {s.error_rate or 0:.2%} "
                    f"(e-value {self.errors.e_value:.3g} >= {threshold:g}, anytime p="
                    f"{self.errors.p_value:.2g}; effect {effect:.2%} >= {self.min_effect:.2%})",
                    m,
                    rule="sequential_5xx",
                    tests=tests,
                ),
                m,
                tests,
                alpha,
            )
        dp95 = (c.p95 or 0.0) - (s.p95 or 0.0)
        if self.latency.e_value >= threshold and dp95 >= self.min_latency_effect:
            return self._with_cs(
                judge_verdict(
                    self.name,
                    Outcome.FAIL,
                    f"canary is slower than stable (e-value {self.latency.e_value:.3g} >= {threshold:g} "
                    f"on the share above {self._bound:g}s; p95 +{dp95:.3f}s >= {self.min_latency_effect:g}s)",
                    m,
                    rule="sequential_latency",
                    tests=tests,
                ),
                m,
                tests,
                alpha,
            )
        return self._with_cs(
            judge_verdict(self.name, Outcome.PASS, "no anytime-valid evidence of a regression so far", m, tests=tests),
            m,
            tests,
            alpha,
        )

    @staticmethod
    def _with_cs(v: Verdict, m: StageMeasurement, tests: dict[str, Any], alpha: float) -> Verdict:
        """Add the confidence sequence for the 5xx-rate difference to a verdict that decides something.

        Every verdict carries the e-values and anytime p-values; the confidence sequence (two grid
        searches) is added to the ones that decide: failures and the stage's closing measurements.
        """
        c, s = m.canary_total, m.stable_total
        if (v.outcome is Outcome.FAIL or m.index >= m.planned) and c.requests and s.requests:
            from turnout.anytime import rate_difference_cs

            lo, hi = rate_difference_cs(c.errors, c.requests, s.errors, s.requests, alpha)
            tests["cs_5xx_difference"] = [round(lo, 5), round(hi, 5)]
        v.evidence["tests"] = tests
        return v


def _r(v: float) -> float:
    return float(f"{v:.4g}")


def _build(config: SequentialJudgeConfig, environment: Environment) -> SequentialJudge:
    return SequentialJudge(
        environment.thresholds,
        environment.canary.min_requests,
        confidence=config.confidence,
        min_effect=config.min_effect,
        min_latency_effect=config.min_latency_effect,
    )


@turnout.hookimpl
def register_judges():
    """The sequential judge."""
    return [
        Registration(
            NAME,
            SequentialJudgeConfig,
            _build,
            "anytime-valid e-processes on the stage's totals (checked every look, false aborts <= alpha)",
        )
    ]
