"""Tasks that start and stop releases in slots."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from turnout.errors import UnsafeState
from turnout.faults import crash_point
from turnout.runtime import Runtime
from turnout.signals import shielded


@task(name="start-release", cache_policy=NO_CACHE)
def start_release(rt: Runtime, deployment_id: int, slot: str, release: str) -> list[str]:
    """Start `release` in `slot`; intent and result go to the ledger. Returns the base URLs."""
    logger = get_run_logger()
    action = rt.ledger.intent(
        deployment_id,
        "start",
        "start-release",
        slot=slot,
        release=release,
        commands=rt.target.describe_start(slot, release),
    )
    rt.ledger.set_slot(rt.name, slot, state="starting", release=release, endpoints=rt.target.endpoints(slot))
    rt.emit(
        "phase.started",
        deployment_id,
        phase="start",
        release=release,
        message=f"starting {release} in slot {slot}",
        data={"slot": slot},
    )
    crash_point("start:before")
    try:
        with shielded():  # a process started but not recorded would outlive everything: finish recording it
            urls = rt.target.start(slot, release)
    except Exception as e:
        rt.ledger.result(action, False, error=str(e))
        rt.ledger.set_slot(rt.name, slot, state="failed")
        raise
    crash_point("start:after")
    st = rt.target.status(slot)
    rt.ledger.result(action, True, urls=urls, pid=st.pid)
    rt.ledger.set_slot(rt.name, slot, state="running", release=release)
    logger.info("started %s in slot %s at %s", release, slot, ", ".join(urls))
    return urls


def _still_routed(rt: Runtime, slot: str) -> str | None:
    """Why `slot` must not be stopped: the router serves it, or would after a reload of its file."""
    state = rt.router_state()
    for split, what in ((state.split, "serves"), (state.configured, "is configured to send")):
        if split is not None and split.weight(slot) > 0:
            return f"the router {what} {split.weight(slot)}% of the traffic to slot {slot} ({state.describe()})"
    return None


def _retry_unless_unsafe(task, task_run, state) -> bool:
    """Retry a failed stop, but not a refusal: a slot that receives traffic stays refused."""
    try:
        state.result()
    except UnsafeState:
        return False
    except Exception:
        return True
    return True


@task(
    name="stop-slot",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[0.5, 2],
    retry_condition_fn=_retry_unless_unsafe,
)
def stop_slot(rt: Runtime, deployment_id: int | None, slot: str, why: str) -> None:
    """Stop whatever runs in `slot` (idempotent), recording why.

    Never a slot that still receives traffic: the router's real state is read first, and a slot with
    weight raises UnsafeState (nothing is stopped) — an outage is worse than a slot left running.
    """
    routed = _still_routed(rt, slot)
    if routed:
        raise UnsafeState(f"refusing to stop slot {slot} ({why}): {routed}")
    action = rt.ledger.intent(deployment_id, "stop", "stop-slot", slot=slot, why=why) if deployment_id else None
    crash_point("stop:before")
    try:
        with shielded():
            rt.target.stop(slot)
    except Exception as e:
        if action:
            rt.ledger.result(action, False, error=str(e))
        raise
    crash_point("stop:after")
    if action:
        rt.ledger.result(action, True)
    rt.ledger.set_slot(rt.name, slot, state="stopped")
    rt.emit("slot.stopped", deployment_id, message=f"stopped slot {slot}: {why}", data={"slot": slot})
