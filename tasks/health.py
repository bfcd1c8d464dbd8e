"""Tasks that run gates and record their verdicts."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from turnout.faults import crash_point
from turnout.interfaces import GateContext
from turnout.models import Outcome, Phase, Verdict
from turnout.runtime import Runtime


@task(name="run-gates", cache_policy=NO_CACHE)
def run_gates(
    rt: Runtime,
    deployment_id: int,
    phase: Phase,
    slot: str,
    release: str,
    *,
    base_urls: list[str],
    timeout: float | None = None,
    include_health: bool = False,
) -> list[Verdict]:
    """Run the health check (when asked) and every configured gate for `phase`, stopping at the first no.

    Every verdict is written to the ledger with its evidence. A gate that raises counts as ERROR,
    which never lets a deployment through.
    """
    logger = get_run_logger()
    context = GateContext(rt.environment, slot, release, base_urls, rt.target, timeout=timeout)
    gates = list(rt.gates_at(phase))
    if include_health:  # built by the runtime, not looked up: no plugin list can take it away
        gates.insert(0, ("health", rt.health_gate(phase)))
    verdicts = []
    rt.emit(
        "phase.started",
        deployment_id,
        phase=phase.value,
        release=release,
        message=f"{phase.value} gates on slot {slot}: {', '.join(n for n, _ in gates) or 'none'}",
        data={"slot": slot},
    )
    crash_point("gate:before", phase.value)
    for name, gate in gates:
        try:
            v = gate.evaluate(phase, context)
        except Exception as e:
            v = Verdict(gate=name, phase=phase, outcome=Outcome.ERROR, reason=f"gate raised {type(e).__name__}: {e}")
        rt.ledger.record_verdict(deployment_id, v)
        verdicts.append(v)
        logger.info("gate %s at %s: %s %s", name, phase.value, v.outcome.value, v.reason)
        rt.emit(
            "gate.verdict",
            deployment_id,
            phase=phase.value,
            release=release,
            message=f"{name}: {v.outcome.value} - {v.reason}",
            data={"gate": name, "outcome": v.outcome.value, "evidence": v.evidence},
        )
        if not v.passed:
            break
    crash_point("gate:after", phase.value)
    return verdicts
