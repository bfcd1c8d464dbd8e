"""The watch task: after a promotion, measure the live slot until the window ends or a trigger fires."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from turnout.config import RollbackConfig
from turnout.errors import BackendError
from turnout.faults import crash_point
from turnout.health import probe
from turnout.metrics import SlotMetrics
from turnout.models import Outcome, Phase, Verdict
from turnout.runtime import Runtime
from turnout.watch import HealthClock, WatchResult, metric_trigger

TICK = 0.25  # how often the process and the ledger's rollback request are looked at between measurements


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _line(elapsed: float, seconds: float, m: SlotMetrics | None, health: str, verdict: str) -> str:
    """The live line an operator reads during the watch."""
    if m is None:
        return f"watch {elapsed:>4.0f}s/{seconds:g}s: {verdict}"
    p95 = "-" if m.p95 is None else f"{m.p95 * 1000:.0f}ms"
    return (
        f"watch {elapsed:>4.0f}s/{seconds:g}s: {m.requests:>6.0f} req 5xx {_pct(m.error_rate):>6} p95 {p95:>6} "
        f"health {health} -> {verdict}"
    )


@task(name="watch-release", cache_policy=NO_CACHE)
def watch_release(
    rt: Runtime,
    deployment_id: int,
    provider: Any,
    *,
    slot: str,
    release: str,
    urls: list[str],
    seconds: float,
    config: RollbackConfig,
) -> WatchResult:
    """Watch `slot` for `seconds`; return at the first trigger, or with the window's verdict.

    Triggers: the rollback rules (turnout.watch), the release's process gone, or `turnout rollback`
    asking through the ledger. A measurement the provider cannot take is an error, never a trigger:
    the watch does not roll back because Prometheus is down, and it does not call that clean either.
    """
    result = WatchResult()
    health = HealthClock(config.health_failing_for)
    paths = rt.environment.health.paths
    start = time.monotonic()
    eps = rt.target.endpoints(slot)
    end = start + seconds

    def stop(trigger: str, **evidence: Any) -> WatchResult:
        result.trigger, result.seconds = trigger, round(time.monotonic() - start, 3)
        result.evidence.update(evidence)
        v = Verdict(gate="watch", phase=Phase.WATCH, outcome=Outcome.FAIL, reason=trigger, evidence=result.evidence)
        rt.ledger.record_verdict(deployment_id, v)
        rt.emit(
            "gate.verdict",
            deployment_id,
            phase="watch",
            release=release,
            message=_line(time.monotonic() - start, seconds, None, "", f"ROLLBACK ({trigger})"),
            data={"outcome": "fail", "trigger": trigger},
        )
        return result

    crash_point("watch")
    while time.monotonic() < end:
        try:
            provider.begin(slot, eps)
        except Exception:
            pass  # counted below when the measurement fails too
        tick_end = min(end, time.monotonic() + config.interval)
        while time.monotonic() < tick_end:
            asked = rt.ledger.rollback_requested(deployment_id)
            if asked:
                return stop(f"rollback requested: {asked}", requested=True)
            st = rt.target.status(slot)
            if not st.running:
                return stop(f"the release stopped running: {st.detail or st.state}", target_state=st.state)
            time.sleep(min(TICK, max(0.0, tick_end - time.monotonic())))
        result.measurements += 1
        m = None
        try:
            m = provider.measure(slot, eps)
        except Exception as e:  # never a trigger, never clean: an error
            result.errors += 1
            measured = f"measurement error: {e if isinstance(e, BackendError) else f'{type(e).__name__}: {e}'}"
        ok, rows = probe(urls, paths, rt.environment.health.max_response_time)
        failing = "; ".join(f"{r['url']}: {r['why']}" for r in rows if not r["ok"])
        now = time.monotonic()
        health_trigger = health.observe(ok, now, failing)
        trigger = (metric_trigger(m, config) if m is not None else None) or health_trigger
        if m is not None:
            if m.requests >= config.min_requests:
                result.conclusive += 1
                measured = "ok"
            else:
                measured = f"too little traffic ({m.requests:g} < {config.min_requests})"
        evidence = {"metrics": m.summary() if m else None, "health": rows, "measurement": result.measurements}
        rt.emit(
            "gate.verdict",
            deployment_id,
            phase="watch",
            release=release,
            message=_line(now - start, seconds, m, "ok" if ok else "FAILING", "ROLLBACK" if trigger else measured),
            data={"outcome": "fail" if trigger else "pass", "evidence": evidence},
        )
        if trigger:
            return stop(trigger, **evidence)
    result.seconds = round(time.monotonic() - start, 3)
    v = Verdict(
        gate="watch",
        phase=Phase.WATCH,
        outcome=Outcome.PASS if result.clean else Outcome.INCONCLUSIVE,
        reason=result.summary(),
        evidence={"measurements": result.measurements, "conclusive": result.conclusive, "errors": result.errors},
    )
    rt.ledger.record_verdict(deployment_id, v)
    return result
