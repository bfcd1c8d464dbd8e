"""The canary analysis task: measure canary and stable window by window, judge, apply the stage limits."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from turnout.config import CanaryConfig
from turnout.errors import BackendError
from turnout.faults import crash_point
from turnout.interfaces import Judge
from turnout.judge import StageDecision, decide_stage
from turnout.measurement import StageMeasurement, StageTotals
from turnout.metrics import SlotMetrics
from turnout.models import Outcome, Phase, Verdict
from turnout.runtime import Runtime


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}ms"


def _line(weight: int, i: int, c: SlotMetrics | None, s: SlotMetrics | None, v: Verdict) -> str:
    """The live line an operator reads: weight, requests, 5xx rate and p95, canary vs stable, verdict."""
    if c is None or s is None:
        return f"stage {weight:>3}% #{i}: {v.outcome.value.upper()} - {v.reason}"
    return (
        f"stage {weight:>3}% #{i}: canary {c.requests:>5.0f} req 5xx {_pct(c.error_rate):>6} p95 {_ms(c.p95):>6} | "
        f"stable {s.requests:>5.0f} req 5xx {_pct(s.error_rate):>6} p95 {_ms(s.p95):>6} -> "
        f"{v.outcome.value.upper()}" + ("" if v.passed else f" ({v.reason})")
    )


@task(name="analyse-stage", cache_policy=NO_CACHE)
def analyse_stage(
    rt: Runtime,
    deployment_id: int,
    provider: Any,
    judge: Judge,
    *,
    stable: str,
    canary: str,
    release: str,
    weight: int,
    config: CanaryConfig,
    duration: float,
) -> tuple[StageDecision, list[dict]]:
    """Measure every `config.interval` seconds for `duration`; stop early when the limits decide.

    The judge sees each window and the stage's cumulative counts (`StageMeasurement`).

    A stage whose last measurement did not pass is extended (up to `config.stage_extension`
    measurements) and aborts unless a fresh measurement passes: never a promotion on missing data.

    A provider that cannot answer gives an ERROR measurement; a canary process that stops running
    fails the stage at once. Every measurement is a verdict in the ledger with its evidence.
    """
    planned = max(1, round(duration / config.interval))
    outcomes: list[Outcome] = []
    rows: list[dict] = []
    last_bad = ""
    limits = dict(
        failure_limit=config.failure_limit,
        inconclusive_limit=config.inconclusive_limit,
        consecutive_error_limit=config.consecutive_error_limit,
        stage_extension=config.stage_extension,
    )
    eps = {stable: rt.target.endpoints(stable), canary: rt.target.endpoints(canary)}

    def canary_died(i: int) -> StageDecision | None:
        """A dead canary, or `turnout rollback` asking through the ledger, fails the stage at once."""
        asked = rt.ledger.rollback_requested(deployment_id)
        st = rt.target.status(canary)
        if st.running and not asked:
            return None
        reason = f"rollback requested: {asked}" if asked else f"the canary stopped running: {st.detail or st.state}"
        v = Verdict(gate=judge.name, phase=Phase.STEP, outcome=Outcome.FAIL, reason=reason, evidence={"weight": weight})
        rt.ledger.record_verdict(deployment_id, v)
        rt.emit(
            "gate.verdict",
            deployment_id,
            phase="analysis",
            release=release,
            message=_line(weight, i, None, None, v),
            data={"weight": weight},
        )
        return StageDecision(Outcome.FAIL, v.reason, {})

    # past `planned` only while the last measurement did not pass, at most `stage_extension` more:
    # decide_stage always decides by then
    judge.begin_stage(weight)
    totals = {stable: StageTotals(stable), canary: StageTotals(canary)}  # the stage's cumulative counts
    for i in range(1, planned + config.stage_extension + 1):
        c = s = None
        try:
            for slot in (stable, canary):
                provider.begin(slot, eps[slot])
            deadline = time.monotonic() + config.interval
            crash_point("analysis")
            while time.monotonic() < deadline:
                died = canary_died(i)
                if died:
                    return died, rows
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            s, c = provider.measure(stable, eps[stable]), provider.measure(canary, eps[canary])
            m = StageMeasurement(
                c, s, totals[canary].add(c), totals[stable].add(s), weight=weight, index=i, planned=planned
            )
            v = judge.judge(m)
        except Exception as e:  # whatever the metrics source or the judge did, this measurement is an error
            died = canary_died(i)  # a scrape that fails because the canary is gone is not a metrics error
            if died:
                return died, rows
            what = str(e) if isinstance(e, BackendError) else f"{type(e).__name__}: {e}"
            v = Verdict(gate=judge.name, phase=Phase.STEP, outcome=Outcome.ERROR, reason=f"measurement error: {what}")
        v.evidence.update(weight=weight, measurement=i, of=planned)
        rt.ledger.record_verdict(deployment_id, v)
        outcomes.append(v.outcome)
        rows.append(
            {
                "stage": weight,
                "measurement": i,
                "outcome": v.outcome.value,
                "canary_requests": c.requests if c else None,
                "canary_5xx_rate": c.error_rate if c else None,
                "canary_p95_s": c.p95 if c else None,
                "stable_requests": s.requests if s else None,
                "stable_5xx_rate": s.error_rate if s else None,
                "stable_p95_s": s.p95 if s else None,
                "reason": v.reason,
            }
        )
        rt.emit(
            "gate.verdict",
            deployment_id,
            phase="analysis",
            release=release,
            message=_line(weight, i, c, s, v),
            data={"weight": weight, "outcome": v.outcome.value},
        )
        if not v.passed:
            last_bad = v.reason
        decision = decide_stage(outcomes, planned=planned, **limits)
        if decision.outcome is not None:
            return _explained(decision, last_bad), rows
    return _explained(decide_stage(outcomes, planned=planned, **limits), last_bad), rows


def _explained(decision: StageDecision, last_bad: str) -> StageDecision:
    """A failed stage names the measurement that decided it, not only the limit."""
    if decision.outcome is Outcome.FAIL and last_bad:
        return StageDecision(decision.outcome, f"{decision.reason}; last: {last_bad}", decision.counts)
    return decision
