"""Tasks that start and stop releases in slots."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from turnout.faults import crash_point
from turnout.runtime import Runtime


@task(name="start-release", cache_policy=NO_CACHE)
def start_release(rt: Runtime, deployment_id: int, slot: str, release: str) -> list[str]:
    """Start `release` in `slot`; intent and result go to the ledger. Returns the base URLs."""
    logger = get_run_logger()
    action = rt.ledger.intent(deployment_id, "start", "start-release", slot=slot, release=release,
                              commands=rt.target.describe_start(slot, release))
    rt.ledger.set_slot(rt.name, slot, state="starting", release=release, endpoints=rt.target.endpoints(slot))
    rt.emit("phase.started", deployment_id, phase="start", release=release,
            message=f"starting {release} in slot {slot}", data={"slot": slot})
    try:
        urls = rt.target.start(slot, release)
    except Exception as e:
        rt.ledger.result(action, False, error=str(e))
        rt.ledger.set_slot(rt.name, slot, state="failed")
        raise
    crash_point("start:done")
    st = rt.target.status(slot)
    rt.ledger.result(action, True, urls=urls, pid=st.pid)
    rt.ledger.set_slot(rt.name, slot, state="running", release=release)
    logger.info("started %s in slot %s at %s", release, slot, ", ".join(urls))
    return urls


@task(name="stop-slot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[0.5, 2])
def stop_slot(rt: Runtime, deployment_id: int | None, slot: str, why: str) -> None:
    """Stop whatever runs in `slot` (idempotent), recording why."""
    action = rt.ledger.intent(deployment_id, "stop", "stop-slot", slot=slot, why=why) if deployment_id else None
    try:
        rt.target.stop(slot)
    except Exception as e:
        if action:
            rt.ledger.result(action, False, error=str(e))
        raise
    if action:
        rt.ledger.result(action, True)
    rt.ledger.set_slot(rt.name, slot, state="stopped")
    rt.emit("slot.stopped", deployment_id, message=f"stopped slot {slot}: {why}", data={"slot": slot})
