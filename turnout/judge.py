"""The canary judge: compare canary and stable over a window, and decide a stage from its measurements.

Plain Python (scipy for the statistics), no Prefect. Two judges share one contract,
`judge(canary, stable) -> Verdict`:

- `ThresholdJudge`: the operator guide's fixed rules (canary 5xx rate > stable + 0.05, canary p95 >
  stable + 3 s, canary availability < 0.95 → fail).
- `StatisticalJudge`: the same hard limits, plus one-sided tests in the spirit of Kayenta — Fisher's
  exact test on the 5xx counts and Mann-Whitney U on latency (samples from histogram buckets) — that
  fail a canary as soon as a degradation of at least `min_effect` is significant at `confidence`,
  before the fixed thresholds are crossed.

Both say *inconclusive* when the canary (or stable) served fewer than `min_requests`: too little
data never passes. `decide_stage` applies Argo Rollouts-style limits to the stage's measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from turnout.config import CanaryConfig, ThresholdsConfig
from turnout.metrics import SlotMetrics, bucket_samples
from turnout.models import Outcome, Phase, Verdict

__all__ = ["Judge", "ThresholdJudge", "StatisticalJudge", "make_judge", "StageDecision", "decide_stage"]


class Judge(Protocol):
    """Compares one window of canary traffic with stable traffic."""

    name: str

    def judge(self, canary: SlotMetrics, stable: SlotMetrics) -> Verdict:
        """PASS, FAIL or INCONCLUSIVE, with the numbers and the rule that decided."""


def _verdict(judge: str, outcome: Outcome, reason: str, canary: SlotMetrics, stable: SlotMetrics,
             **extra: Any) -> Verdict:
    return Verdict(gate=judge, phase=Phase.STEP, outcome=outcome, reason=reason,
                   evidence={"canary": canary.summary(), "stable": stable.summary(), **extra})


@dataclass
class ThresholdJudge:
    """Fixed limits, canary versus stable."""

    thresholds: ThresholdsConfig
    min_requests: int = 50
    name: str = "threshold"

    def _too_little(self, canary: SlotMetrics, stable: SlotMetrics) -> Verdict | None:
        if canary.requests < self.min_requests:
            return _verdict(self.name, Outcome.INCONCLUSIVE,
                            f"canary served {canary.requests:g} requests in {canary.window:.0f}s, fewer than "
                            f"min_requests={self.min_requests}: not enough data to judge", canary, stable)
        return None

    def _hard_limits(self, canary: SlotMetrics, stable: SlotMetrics) -> Verdict | None:
        t = self.thresholds
        c_err, s_err = canary.error_rate or 0.0, stable.error_rate or 0.0
        if c_err > s_err + t.max_error_rate_increase:
            return _verdict(self.name, Outcome.FAIL,
                            f"canary 5xx rate {c_err:.2%} > stable {s_err:.2%} + {t.max_error_rate_increase:.2%}",
                            canary, stable, rule="max_error_rate_increase")
        if canary.availability is not None and canary.availability < t.min_availability:
            return _verdict(self.name, Outcome.FAIL,
                            f"canary availability {canary.availability:.2%} < {t.min_availability:.2%}",
                            canary, stable, rule="min_availability")
        c_p95, s_p95 = canary.p95, stable.p95
        if c_p95 is not None and c_p95 > (s_p95 or 0.0) + t.max_p95_latency_increase:
            return _verdict(self.name, Outcome.FAIL,
                            f"canary p95 {c_p95:.3f}s > stable {s_p95 or 0:.3f}s + {t.max_p95_latency_increase:g}s",
                            canary, stable, rule="max_p95_latency_increase")
        return None

    def judge(self, canary: SlotMetrics, stable: SlotMetrics) -> Verdict:
        """Inconclusive on too little data; fail on a crossed limit; else pass."""
        return (self._too_little(canary, stable) or self._hard_limits(canary, stable)
                or _verdict(self.name, Outcome.PASS, "within every threshold", canary, stable))


@dataclass
class StatisticalJudge(ThresholdJudge):
    """The fixed limits, plus significance tests that can fail a canary earlier."""

    confidence: float = 0.95
    min_effect: float = 0.01          # smallest 5xx-rate increase worth failing for
    min_latency_effect: float = 0.1   # smallest p95 increase (seconds) worth failing for
    name: str = "statistical"

    def __post_init__(self) -> None:
        # scipy.stats takes 1-3 s to import on a busy 2-core machine: pay it when the judge is made,
        # before any traffic moves, not inside the first analysis window (it once delayed an abort by 6 s).
        import scipy.stats  # noqa: F401

    def judge(self, canary: SlotMetrics, stable: SlotMetrics) -> Verdict:
        """Hard limits first; then Fisher (5xx) and Mann-Whitney U (latency), one-sided."""
        from scipy.stats import fisher_exact, mannwhitneyu

        early = self._too_little(canary, stable) or self._hard_limits(canary, stable)
        if early:
            return early
        alpha = 1 - self.confidence
        c_err, s_err = canary.error_rate or 0.0, stable.error_rate or 0.0
        table = [[int(canary.errors), int(canary.requests - canary.errors)],
                 [int(stable.errors), int(stable.requests - stable.errors)]]
        p_err = float(fisher_exact(table, alternative="greater").pvalue)
        tests: dict[str, Any] = {"fisher_5xx_p": round(p_err, 6), "alpha": round(alpha, 4)}
        if p_err < alpha and c_err - s_err >= self.min_effect:
            return _verdict(self.name, Outcome.FAIL,
                            f"canary 5xx rate {c_err:.2%} is significantly above stable {s_err:.2%} "
                            f"(Fisher p={p_err:.2g} < {alpha:g}, effect {c_err - s_err:.2%} >= {self.min_effect:.2%})",
                            canary, stable, rule="fisher_5xx", tests=tests)
        c_samples, s_samples = bucket_samples(canary.buckets), bucket_samples(stable.buckets)
        if len(c_samples) >= 20 and len(s_samples) >= 20:
            p_lat = float(mannwhitneyu(c_samples, s_samples, alternative="greater").pvalue)
            tests["mannwhitney_latency_p"] = round(p_lat, 6)
            dp95 = (canary.p95 or 0.0) - (stable.p95 or 0.0)
            if p_lat < alpha and dp95 >= self.min_latency_effect:
                return _verdict(self.name, Outcome.FAIL,
                                f"canary latency is significantly above stable (Mann-Whitney p={p_lat:.2g}, "
                                f"p95 +{dp95:.3f}s >= {self.min_latency_effect:g}s)",
                                canary, stable, rule="mannwhitney_latency", tests=tests)
        return _verdict(self.name, Outcome.PASS, "no significant degradation and within every threshold",
                        canary, stable, tests=tests)


def make_judge(canary: CanaryConfig, thresholds: ThresholdsConfig) -> Judge:
    """The judge an environment's `[canary] judge` names."""
    if canary.judge == "statistical":
        return StatisticalJudge(thresholds, canary.min_requests, confidence=canary.confidence,
                                min_effect=canary.min_effect, min_latency_effect=canary.min_latency_effect)
    return ThresholdJudge(thresholds, canary.min_requests)


@dataclass
class StageDecision:
    """The outcome of a stage so far: PASS (promote), FAIL (abort) or None (keep measuring)."""

    outcome: Outcome | None
    reason: str
    counts: dict[str, int]


def decide_stage(outcomes: list[Outcome], *, planned: int, failure_limit: int = 0,
                 inconclusive_limit: int = 1, consecutive_error_limit: int = 2) -> StageDecision:
    """Apply the limits to a stage's measurements (in order), Argo Rollouts style.

    More failures than `failure_limit`, more inconclusives than `inconclusive_limit`, or more errors in
    a row than `consecutive_error_limit` → FAIL. After `planned` measurements the stage passes only
    if at least one measurement passed and no limit was crossed; never on inconclusive or error alone.
    """
    counts = {o.value: outcomes.count(o) for o in Outcome}
    run = 0
    for o in outcomes:
        run = run + 1 if o is Outcome.ERROR else 0
        if run > consecutive_error_limit:
            return StageDecision(Outcome.FAIL, f"{run} measurement errors in a row (limit {consecutive_error_limit})", counts)
    if counts["fail"] > failure_limit:
        return StageDecision(Outcome.FAIL, f"{counts['fail']} failed measurement(s) (limit {failure_limit})", counts)
    if counts["inconclusive"] > inconclusive_limit:
        return StageDecision(Outcome.FAIL, f"{counts['inconclusive']} inconclusive measurements "
                             f"(limit {inconclusive_limit}): not enough evidence to promote", counts)
    if len(outcomes) >= planned:
        if counts["pass"] == 0:
            return StageDecision(Outcome.FAIL, "no measurement passed: inconclusive never promotes", counts)
        return StageDecision(Outcome.PASS, f"{counts['pass']} of {len(outcomes)} measurements passed", counts)
    return StageDecision(None, "measuring", counts)
