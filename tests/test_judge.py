"""The canary judge and the histogram arithmetic (plain Python, no Prefect)."""

from __future__ import annotations

import math

import pytest

from turnout.config import CanaryConfig, ThresholdsConfig
from turnout.judge import StatisticalJudge, ThresholdJudge, decide_stage, make_judge
from turnout.metrics import SlotMetrics, bucket_samples, histogram_quantile
from turnout.models import Outcome

INF = math.inf


def latency(fast: float, slow: float, le_fast: float = 0.01, le_slow: float = 0.5) -> list[tuple[float, float]]:
    """Cumulative buckets with `fast` observations under le_fast and `slow` under le_slow."""
    return [(le_fast, fast), (le_slow, fast + slow), (INF, fast + slow)]


def slot(name: str, requests: float, errors: float = 0, buckets=None) -> SlotMetrics:
    return SlotMetrics(slot=name, window=10, requests=requests, errors=errors,
                       buckets=buckets if buckets is not None else latency(requests, 0))


def test_histogram_quantile_matches_promql():
    # 100 observations: 90 <= 0.1 s, 10 in (0.1, 0.5]; p95 = 0.1 + 0.4 * (95 - 90) / 10
    b = [(0.1, 90), (0.5, 100), (INF, 100)]
    assert histogram_quantile(0.95, b) == pytest.approx(0.3)
    assert histogram_quantile(0.5, b) == pytest.approx(0.1 * 50 / 90)
    assert histogram_quantile(0.95, [(0.1, 0), (INF, 0)]) is None
    assert histogram_quantile(0.99, [(0.1, 90), (INF, 100)]) == 0.1  # rank in +Inf: highest finite bound


def test_bucket_samples_keep_the_distribution():
    s = bucket_samples([(0.1, 90), (0.5, 100), (INF, 100)])
    assert len(s) == 100 and s.count(0.05) == 90 and s.count(0.3) == 10


thresholds = ThresholdsConfig()


@pytest.mark.parametrize("judge", [ThresholdJudge(thresholds), StatisticalJudge(thresholds)], ids=["threshold", "statistical"])
class TestBothJudges:
    def test_healthy_canary_passes(self, judge):
        v = judge.judge(slot("green", 200, 1), slot("blue", 1800, 9))
        assert v.outcome is Outcome.PASS and v.evidence["canary"]["requests"] == 200

    def test_too_little_traffic_is_inconclusive(self, judge):
        v = judge.judge(slot("green", 10, 10), slot("blue", 1800))
        assert v.outcome is Outcome.INCONCLUSIVE and "min_requests" in v.reason

    def test_error_rate_over_the_limit_fails(self, judge):
        v = judge.judge(slot("green", 200, 40), slot("blue", 1800, 18))
        assert v.outcome is Outcome.FAIL and "5xx" in v.reason

    def test_slow_canary_fails(self, judge):
        v = judge.judge(slot("green", 200, buckets=latency(0, 200, le_slow=5.0)), slot("blue", 1800))
        assert v.outcome is Outcome.FAIL and "p95" in v.reason

    def test_no_5xx_series_is_zero_errors(self, judge):
        v = judge.judge(slot("green", 200, 0), slot("blue", 0, 0, buckets=[]))
        assert v.outcome is Outcome.PASS


def test_statistical_judge_fails_earlier_than_the_thresholds():
    # 4% vs 0.5%: under the 5-point threshold, but overwhelming evidence of a real regression
    canary, stable = slot("green", 1000, 40), slot("blue", 9000, 45)
    assert ThresholdJudge(thresholds).judge(canary, stable).outcome is Outcome.PASS
    v = StatisticalJudge(thresholds).judge(canary, stable)
    assert v.outcome is Outcome.FAIL and v.evidence["rule"] == "fisher_5xx" and v.evidence["tests"]["fisher_5xx_p"] < 0.05


def test_statistical_judge_ignores_noise_and_tiny_effects():
    assert StatisticalJudge(thresholds).judge(slot("green", 100, 1), slot("blue", 900, 5)).outcome is Outcome.PASS
    # significant but below min_effect (0.3 points)
    v = StatisticalJudge(thresholds, min_effect=0.01).judge(slot("green", 100000, 400), slot("blue", 900000, 900))
    assert v.outcome is Outcome.PASS


def test_statistical_judge_catches_a_latency_shift():
    canary = slot("green", 500, buckets=latency(100, 400, le_slow=0.5))
    stable = slot("blue", 4500, buckets=latency(4400, 100, le_slow=0.5))
    assert ThresholdJudge(thresholds).judge(canary, stable).outcome is Outcome.PASS
    v = StatisticalJudge(thresholds).judge(canary, stable)
    assert v.outcome is Outcome.FAIL and v.evidence["rule"] == "mannwhitney_latency"


def test_make_judge_follows_the_environment():
    assert make_judge(CanaryConfig(judge="statistical", confidence=0.99), thresholds).confidence == 0.99
    assert isinstance(make_judge(CanaryConfig(), thresholds), ThresholdJudge)


P, F, I, E = Outcome.PASS, Outcome.FAIL, Outcome.INCONCLUSIVE, Outcome.ERROR


@pytest.mark.parametrize("outcomes, planned, expected", [
    ([P, P, P], 3, P),
    ([P, P], 3, None),
    ([P, F], 3, F),                   # failure_limit 0
    ([I, P, P], 3, P),                # one inconclusive tolerated
    ([I, I], 3, F),                   # inconclusive past its limit aborts
    ([I], 1, F),                      # inconclusive alone never promotes
    ([E, E, P], 3, P),                # two errors in a row tolerated
    ([E, E, E], 3, F),                # three in a row: abort
    ([E, P, E, P, E], 5, P),
])
def test_stage_limits(outcomes, planned, expected):
    assert decide_stage(outcomes, planned=planned).outcome is expected


@pytest.mark.parametrize("stages, why", [([], "must not be empty"), ([10, 10, 100], "strictly increasing"),
                                         ([0, 100], "within 1..100"), ([10, 50], "must be 100")])
def test_ramp_stages_are_validated(stages, why):
    with pytest.raises(ValueError, match=why):
        CanaryConfig(stages=stages)
