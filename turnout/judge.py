"""What every canary judge shares: the evidence format, the too-little-data rule, the fixed limits, the stage limits.

Plain Python, no Prefect. The judges themselves are plugins (`register_judges`; the built-ins are
`plugins/threshold.py`, `plugins/statistical.py` and `plugins/sequential.py`), each implementing
`turnout.interfaces.Judge`. They all use the rules here, so that in every judge:

- too little data on *either* side (canary or stable below `min_requests` since the stage began)
  is INCONCLUSIVE: too little data never passes;
- the operator guide's fixed limits (5xx rate > stable + 5 points, p95 > stable + 3 s, availability
  < 95 %, p95 > `max_p95_ratio` x stable's when also `p95_ratio_floor` slower) are judged on the
  stage's *cumulative* counts, so one noisy window cannot trip them; a limit fails only when it is
  crossed with 99 % anytime-valid confidence too (`LIMIT_ALPHA`: the confidence sequence of the
  5xx-rate difference, of the availability, of the share of observations above a latency limit).

`decide_stage` applies Argo Rollouts-style limits to a stage's measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turnout.config import ThresholdsConfig
from turnout.measurement import StageMeasurement, same_bounds
from turnout.metrics import SlotMetrics, count_at_or_below
from turnout.models import Outcome, Phase, Verdict

#: How sure a fixed rate limit must be crossed (anytime-valid confidence sequence) before it fails a canary.
LIMIT_ALPHA = 0.01

__all__ = [
    "LIMIT_ALPHA",
    "judge_verdict",
    "too_little",
    "hard_limits",
    "check_comparable",
    "StageDecision",
    "decide_stage",
]


def judge_verdict(judge: str, outcome: Outcome, reason: str, m: StageMeasurement, **extra: Any) -> Verdict:
    """A judge's verdict with the stage totals (what it decided on) and the window's counts as evidence."""
    window = {
        "seconds": round(m.canary.window, 2),
        "canary": {"requests": m.canary.requests, "errors": m.canary.errors},
        "stable": {"requests": m.stable.requests, "errors": m.stable.errors},
    }
    return Verdict(
        gate=judge,
        phase=Phase.STEP,
        outcome=outcome,
        reason=reason,
        evidence={
            "canary": m.canary_total.summary(),
            "stable": m.stable_total.summary(),
            "window": window,
            "measurement": m.index,
            **extra,
        },
    )


def check_comparable(m: StageMeasurement) -> None:
    """JudgeInputError when canary and stable histograms have different bucket bounds."""
    same_bounds(m.canary_total.buckets, m.stable_total.buckets, "canary and stable")


def too_little(judge: str, m: StageMeasurement, min_requests: int) -> Verdict | None:
    """INCONCLUSIVE when either slot served fewer than `min_requests` since the stage began."""
    for who, total in (("canary", m.canary_total), ("stable", m.stable_total)):
        if total.requests < min_requests:
            return judge_verdict(
                judge,
                Outcome.INCONCLUSIVE,
                f"{who} served {total.requests:g} requests in {total.window:.0f}s of this stage, "
                f"fewer than min_requests={min_requests}: not enough data to judge",
                m,
            )
    return None


def hard_limits(judge: str, m: StageMeasurement, t: ThresholdsConfig) -> Verdict | None:
    """FAIL when the stage's cumulative counts cross a fixed limit; None otherwise."""
    canary, stable = m.canary_total, m.stable_total
    c_err, s_err = canary.error_rate or 0.0, stable.error_rate or 0.0
    # the rates are estimates: 4 errors in the first 60 requests is 6.7 % at a 2 % baseline. A rate
    # limit is crossed when the anytime-valid confidence sequence (at LIMIT_ALPHA) is past it too,
    # so a healthy canary is not failed by a lucky streak however often it is looked at.
    if c_err > s_err + t.max_error_rate_increase:
        from turnout.anytime import rate_difference_cs  # numpy and scipy: only when a canary is judged

        lo, _ = rate_difference_cs(canary.errors, canary.requests, stable.errors, stable.requests, LIMIT_ALPHA)
        if lo > t.max_error_rate_increase:
            return judge_verdict(
                judge,
                Outcome.FAIL,
                f"canary 5xx rate {c_err:.2%} > stable {s_err:.2%} + {t.max_error_rate_increase:.2%} "
                f"(the difference is at least {lo:.2%} with {1 - LIMIT_ALPHA:.0%} confidence)",
                m,
                rule="max_error_rate_increase",
            )
    if canary.availability is not None and canary.availability < t.min_availability:
        from turnout.anytime import beta_binomial_cs

        lo, _ = beta_binomial_cs(canary.errors, canary.requests, LIMIT_ALPHA)
        if 1 - lo < t.min_availability:
            return judge_verdict(
                judge,
                Outcome.FAIL,
                f"canary availability {canary.availability:.2%} < {t.min_availability:.2%}: 5xx on "
                f"{c_err:.2%} of its requests (availability at most {1 - lo:.2%} with "
                f"{1 - LIMIT_ALPHA:.0%} confidence)",
                m,
                rule="min_availability",
            )
    c_p95, s_p95 = canary.p95, stable.p95
    if c_p95 is not None and c_p95 > (s_p95 or 0.0) + t.max_p95_latency_increase:
        limit = (s_p95 or 0.0) + t.max_p95_latency_increase
        if _p95_surely_above(canary, limit):
            return judge_verdict(
                judge,
                Outcome.FAIL,
                f"canary p95 {c_p95:.3f}s > stable {s_p95 or 0:.3f}s + {t.max_p95_latency_increase:g}s",
                m,
                rule="max_p95_latency_increase",
            )
    # relative: ten times slower at 20 ms against 2 ms is a regression the absolute limit never sees;
    # the floor keeps sub-millisecond noise from failing a canary
    if (
        c_p95 is not None
        and s_p95
        and c_p95 > t.max_p95_ratio * s_p95
        and c_p95 - s_p95 >= t.p95_ratio_floor
        and _p95_surely_above(canary, t.max_p95_ratio * s_p95)
    ):
        return judge_verdict(
            judge,
            Outcome.FAIL,
            f"canary p95 {c_p95:.3f}s > {t.max_p95_ratio:g} x stable {s_p95:.3f}s "
            f"(and {c_p95 - s_p95:.3f}s >= p95_ratio_floor {t.p95_ratio_floor:g}s)",
            m,
            rule="max_p95_ratio",
        )
    return None


def _p95_surely_above(slot: SlotMetrics, limit: float) -> bool:
    """True when more than 5 % of the slot's observations are above `limit` with 1 − LIMIT_ALPHA anytime confidence.

    A p95 from the first hundred observations in coarse buckets jumps: the limit is crossed when
    the share of observations above it (interpolated in its bucket, as `histogram_quantile` does)
    surely exceeds 5 %, not when one estimate does.
    """
    total = slot.buckets[-1][1] if slot.buckets else 0.0
    if total <= 0:
        return False
    above = total - count_at_or_below(slot.buckets, limit)
    from turnout.anytime import beta_binomial_cs

    lo, _ = beta_binomial_cs(above, total, LIMIT_ALPHA)
    return lo > 0.05


@dataclass
class StageDecision:
    """The outcome of a stage so far: PASS (promote), FAIL (abort) or None (keep measuring)."""

    outcome: Outcome | None
    reason: str
    counts: dict[str, int]


def decide_stage(
    outcomes: list[Outcome],
    *,
    planned: int,
    failure_limit: int = 0,
    inconclusive_limit: int = 1,
    consecutive_error_limit: int = 2,
    stage_extension: int = 3,
) -> StageDecision:
    """Apply the limits to a stage's measurements (in order), Argo Rollouts style.

    More failures than `failure_limit`, more inconclusives than `inconclusive_limit`, or more errors in
    a row than `consecutive_error_limit` → FAIL. A stage passes only once its `planned` measurements
    are taken *and its last measurement passed*: a stage whose metrics source went down (or whose last
    window was inconclusive) at the end is extended by up to `stage_extension` measurements, and
    aborts if none of them passes. Never a pass on inconclusive or error alone.
    """
    counts = {o.value: outcomes.count(o) for o in Outcome}
    run = 0
    for o in outcomes:
        run = run + 1 if o is Outcome.ERROR else 0
        if run > consecutive_error_limit:
            return StageDecision(
                Outcome.FAIL, f"{run} measurement errors in a row (limit {consecutive_error_limit})", counts
            )
    if counts["fail"] > failure_limit:
        return StageDecision(Outcome.FAIL, f"{counts['fail']} failed measurement(s) (limit {failure_limit})", counts)
    if counts["inconclusive"] > inconclusive_limit:
        return StageDecision(
            Outcome.FAIL,
            f"{counts['inconclusive']} inconclusive measurements "
            f"(limit {inconclusive_limit}): not enough evidence to promote",
            counts,
        )
    if len(outcomes) < planned:
        return StageDecision(None, "measuring", counts)
    if outcomes[-1] is Outcome.PASS:
        return StageDecision(
            Outcome.PASS, f"{counts['pass']} of {len(outcomes)} measurements passed, the last one too", counts
        )
    if len(outcomes) >= planned + stage_extension:
        return StageDecision(
            Outcome.FAIL,
            f"the last measurement did not pass ({outcomes[-1].value}) after "
            f"{len(outcomes) - planned} extra measurement(s) (stage_extension {stage_extension}): "
            "a stage never promotes on missing data",
            counts,
        )
    return StageDecision(None, f"the last measurement was {outcomes[-1].value}: extending the stage", counts)
