"""The anytime-valid statistics behind the sequential judge, and the judge on cumulative counts (plain Python)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.anytime import RateRatioEProcess, beta_binomial_cs, rate_difference_cs
from turnout.config import ThresholdsConfig
from turnout.measurement import JudgeInputError, StageMeasurement, StageTotals
from turnout.metrics import SlotMetrics
from turnout.models import Outcome
from turnout.plugins.sequential import SequentialJudge

INF = math.inf
LES = (0.05, 0.1, 0.25, 0.5, 1.0, INF)


@settings(max_examples=200, deadline=None)
@given(n_c=st.integers(1, 60), n_s=st.integers(1, 200), data=st.data())
def test_each_step_of_the_e_process_has_mean_at_most_one_under_the_null(n_c, n_s, data):
    """The supermartingale property, exactly: given the events x, E[factor] <= 1 under equal rates.

    With binomial counts the canary's share of x events is hypergeometric; the factor's mean must
    not exceed 1 for any grid ratio (and is exactly 1 under the Poisson model's binomial).
    """
    from scipy.special import logsumexp
    from scipy.stats import binom, hypergeom

    x = data.draw(st.integers(1, n_c + n_s))
    k = np.arange(0, x + 1)
    theta0 = n_c / (n_c + n_s)
    for rho in (1.1, 2.0, 10.0, 100.0):
        log_factor = k * math.log(rho) - x * math.log(1 - theta0 + theta0 * rho)  # in logs: rho**155 overflows
        assert float(logsumexp(hypergeom.logpmf(k, n_c + n_s, n_c, x) + log_factor)) <= 1e-9
        assert float(logsumexp(binom.logpmf(k, x, theta0) + log_factor)) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=10, deadline=None)
@given(theta=st.floats(0.05, 0.5), rate=st.floats(0.5, 5.0), seed=st.integers(0, 2**31))
def test_the_e_process_mean_stays_at_most_one_by_simulation(theta, rate, seed):
    """E[min(E_t, 20)] <= E[E_t] <= 1 at every t under the null (the cap tames the heavy tail for Monte Carlo)."""
    rng = np.random.default_rng(seed)
    runs, steps = 400, 30
    means = np.zeros(steps)
    for _ in range(runs):
        e = RateRatioEProcess()
        for t in range(steps):
            n_c = rng.poisson(100 * theta) + 1
            n_s = rng.poisson(100 * (1 - theta)) + 1
            x_c, x_s = rng.binomial(n_c, rate / 100), rng.binomial(n_s, rate / 100)
            means[t] += min(e.update(x_c, n_c, x_s, n_s), 20.0) / runs
    assert means.max() < 1 + 4 * math.sqrt(20 / runs), means  # four standard errors of a [0, 20] mean <= 1


@settings(max_examples=20, deadline=None)
@given(ratio=st.floats(0.2, 1.0), seed=st.integers(0, 2**31))
def test_a_canary_better_than_stable_is_null_too(ratio, seed):
    """H0 is composite (canary rate <= stable's): the e-process stays small there as well."""
    rng = np.random.default_rng(seed)
    e = RateRatioEProcess()
    for _ in range(200):
        e.update(rng.binomial(20, 0.02 * ratio), 20, rng.binomial(180, 0.02), 180)
    assert e.e_value < 20


def test_ville_bounds_the_false_alarm_rate_however_often_one_looks():
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(2000):
        e = RateRatioEProcess()
        for _ in range(300):
            if e.update(rng.binomial(20, 0.01), 20, rng.binomial(180, 0.01), 180) >= 20:
                alarms += 1
                break
    assert alarms / 2000 <= 0.05


def test_the_e_process_grows_on_a_real_regression():
    rng = np.random.default_rng(1)
    e = RateRatioEProcess()
    for _ in range(60):
        e.update(rng.binomial(20, 0.05), 20, rng.binomial(180, 0.01), 180)
    assert e.e_value > 1000 and e.p_value < 0.001


def test_bad_increments_are_refused():
    with pytest.raises(ValueError, match="negative"):
        RateRatioEProcess().update(-1, 10, 0, 10)
    with pytest.raises(ValueError, match=">= 1"):
        RateRatioEProcess(ratios=(0.5, 2.0))
    e = RateRatioEProcess()
    assert e.update(3, 10, 0, 0) == 1.0  # a stable slot without traffic: nothing to compare, no evidence


@settings(max_examples=50, deadline=None)
@given(p=st.floats(0.001, 0.5), n=st.integers(1, 5000), alpha=st.floats(0.01, 0.2), seed=st.integers(0, 2**31))
def test_the_confidence_sequence_is_an_interval_around_the_estimate(p, n, alpha, seed):
    s = int(np.random.default_rng(seed).binomial(n, p))
    lo, hi = beta_binomial_cs(s, n, alpha)
    assert 0 <= lo <= s / n <= hi <= 1


def test_the_confidence_sequence_covers_the_true_rate_at_every_look():
    rng = np.random.default_rng(3)
    misses = 0
    for _ in range(300):
        x = np.cumsum(rng.binomial(1, 0.02, 3000))
        if any(
            not (lo <= 0.02 <= hi) for lo, hi in (beta_binomial_cs(x[t - 1], t, 0.05) for t in range(100, 3001, 100))
        ):
            misses += 1
    assert misses / 300 <= 0.05
    lo, hi = rate_difference_cs(50, 1000, 10, 9000, 0.05)
    assert 0 < lo < 0.05 - 10 / 9000 < hi


def _slot(name, req, err, fast, total=None):
    total = req if total is None else total
    return SlotMetrics(
        slot=name,
        window=1,
        requests=req,
        errors=err,
        buckets=[(0.05, fast), (0.1, total), (0.25, total), (0.5, total), (1.0, total), (INF, total)],
    )


def test_stage_totals_add_windows_and_restart_cleanly_when_counters_go_down():
    t = StageTotals("green")
    t.observe(_slot("green", 1000, 10, 900))
    assert t.observe(_slot("green", 1100, 12, 990)).requests == 100
    restarted = t.observe(_slot("green", 30, 1, 25))  # the process restarted: counters start from 0 again
    assert (restarted.requests, restarted.errors) == (30, 1)
    assert all(c >= 0 for _, c in restarted.buckets)
    after = t.observe(_slot("green", 80, 2, 70))
    assert (after.requests, after.errors) == (80, 2)
    w = StageTotals("blue")
    w.add(_slot("blue", 100, 1, 90))
    assert w.add(_slot("blue", 50, 0, 45)).requests == 150


def test_a_histogram_that_changes_its_buckets_is_a_clear_error():
    t = StageTotals("green")
    t.add(_slot("green", 100, 1, 90))
    other = SlotMetrics(slot="green", window=1, requests=10, buckets=[(0.1, 10), (INF, 10)])
    with pytest.raises(JudgeInputError, match="bucket bounds differ"):
        t.add(other)


def _stage(judge, canary_err, stable_err, seconds, weight=10, seed=0, index_offset=0):
    """Feed `seconds` of Poisson traffic (200 req/s) through StageTotals into `judge`; the verdicts."""
    rng = np.random.default_rng(seed)
    totals = StageTotals("green"), StageTotals("blue")
    judge.begin_stage(weight)
    out = []
    for i in range(seconds):
        nc, ns = rng.poisson(2 * weight), rng.poisson(2 * (100 - weight))
        c = _slot("green", nc, rng.binomial(nc, canary_err), rng.binomial(nc, 0.9))
        s = _slot("blue", ns, rng.binomial(ns, stable_err), rng.binomial(ns, 0.9))
        out.append(
            judge.judge(
                StageMeasurement(c, s, totals[0].add(c), totals[1].add(s), weight=weight, index=i + 1, planned=seconds)
            )
        )
    return out


def test_sequential_catches_a_regression_the_thresholds_miss_and_shows_how_sure():
    verdicts = _stage(SequentialJudge(ThresholdsConfig()), 0.03, 0.001, 60)
    fail = next(v for v in verdicts if v.outcome is Outcome.FAIL)
    t = fail.evidence["tests"]
    assert fail.evidence["rule"] == "sequential_5xx" and t["e_5xx"] >= 40 and t["p_5xx"] <= 0.025
    lo, hi = t["cs_5xx_difference"]  # how sure: the confidence sequence around the estimated difference
    effect = fail.evidence["canary"]["error_rate"] - fail.evidence["stable"]["error_rate"]
    assert lo < effect < hi and hi > 0.01


def test_sequential_never_fails_a_healthy_canary_at_a_2_percent_baseline_over_a_ramp():
    judge = SequentialJudge(ThresholdsConfig())
    verdicts = [v for w in (10, 25, 50) for v in _stage(judge, 0.02, 0.02, 60, weight=w, seed=w)]
    assert not any(v.outcome is Outcome.FAIL for v in verdicts)
    assert verdicts[-1].passed and "e_5xx" in verdicts[-1].evidence["tests"]


def test_sequential_is_inconclusive_until_both_slots_have_data():
    judge = SequentialJudge(ThresholdsConfig())
    first = _stage(judge, 0.0, 0.0, 1)[0]
    assert first.outcome is Outcome.INCONCLUSIVE
    m = StageMeasurement.of(_slot("green", 300, 0, 290), SlotMetrics(slot="blue", window=1, requests=0))
    assert SequentialJudge(ThresholdsConfig()).judge(m).outcome is Outcome.INCONCLUSIVE


@pytest.mark.parametrize(
    "kw, why",
    [
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.5}, "confidence"),
        ({"min_effect": -0.1}, "negative"),
        ({"min_latency_effect": -1}, "negative"),
    ],
)
def test_sequential_refuses_bad_settings(kw, why):
    with pytest.raises(ValueError, match=why):
        SequentialJudge(ThresholdsConfig(), **kw)


def test_sequential_restarted_sums_are_not_negative_increments():
    judge = SequentialJudge(ThresholdsConfig())
    big = StageMeasurement.of(_slot("green", 500, 5, 450), _slot("blue", 4500, 45, 4000))
    small = StageMeasurement.of(_slot("green", 100, 1, 90), _slot("blue", 900, 9, 800))
    judge.judge(big)
    assert judge.judge(small).outcome is Outcome.PASS  # totals went down: counted afresh, not as -400
