"""The recover flow, and the recovery step every deployment and rollback runs first under its lock.

    observe (ledger, router's real split, slots' real processes and health) ─► decide (turnout.recovery)
       ─► put the split in force, verified ─► stop what must stop ─► end the crashed run in the ledger

Prefect transactions cannot do this: their rollback hooks die with a SIGKILLed process. The ledger,
written before every action, is the source of truth.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows._steps import run_flow
from tasks.deploy import stop_slot
from tasks.traffic import shift_traffic
from turnout.errors import EXIT_OK, EXIT_UNSAFE, TurnoutError
from turnout.recovery import decide, observe
from turnout.runtime import Runtime, open_runtime

__all__ = ["recover", "recover_environment", "run"]


def recover_environment(rt: Runtime, reason: str, lock_held: Any = None) -> dict[str, Any]:
    """Bring the environment to a safe, recorded state (call with the environment's lock held).

    Returns the outcome: `consistent` (nothing to do), `recovered`, or `failed` (no safe state reachable
    without a human; nothing unsafe was done).
    """
    logger = get_run_logger()
    seen = observe(rt, lock_pid=os.getpid())
    decision = decide(seen)
    if not decision.changes:
        outcome = "consistent" if decision.safe else "failed"
        if not decision.safe:
            logger.warning("recovery: %s", decision.summary)
        return _outcome(rt, outcome, decision.summary, None)
    crashed = seen.deployment if seen.crashed else None
    dep = crashed["id"] if crashed else rt.ledger.start_deployment(
        rt.name, "recover", (seen.deployment or {}).get("release") or "-", options={"reason": reason})
    rt.emit("phase.started", dep, phase="recover", message=f"recovering {rt.name}: {decision.summary}",
            data={"observed": seen.as_dict()})
    action = rt.ledger.intent(dep, "recover", "recover", reason=reason, observed=seen.as_dict(),
                              decision={"summary": decision.summary, "split": decision.split.as_dict()
                                        if decision.split else None, "stop": decision.stop, "status": decision.status})
    safe, summary = decision.safe, decision.summary
    try:
        if decision.split:
            shift_traffic(rt, dep, decision.split, phase="recover")
        for slot in decision.stop:
            stop_slot(rt, dep, slot, why=f"recovery: {decision.summary}")
            rt.ledger.set_slot(rt.name, slot, state="stopped")
        if decision.live:
            rt.ledger.set_slot(rt.name, decision.live[0], state="live", release=decision.live[1])
        now = rt.router.get_split()
        if now is not None:
            rt.ledger.set_split(rt.name, now)  # a crash between the router change and its record
        if decision.status == "promoted" and crashed and crashed.get("from_slot"):
            old = crashed["from_slot"]
            if rt.target.status(old).running:
                rt.ledger.set_slot(rt.name, old, state="warm")
    except TurnoutError as e:
        safe, summary = False, f"{summary}; but recovery failed: {e}; a human is needed"
    rt.ledger.result(action, safe, summary=summary)
    status = decision.status if safe else "failed"
    rt.ledger.finish_deployment(dep, status or "recovered", f"recovered ({reason}): {summary}")
    if crashed:
        _mark_prefect_run_crashed(crashed.get("flow_run_id"))
    rt.emit("deployment.recovered", dep, urgent=not safe, message=summary,
            data={"outcome": "recovered" if safe else "failed"})
    (logger.info if safe else logger.error)("recovery of %s: %s", rt.name, summary)
    return _outcome(rt, "recovered" if safe else "failed", summary, dep)


def _outcome(rt: Runtime, outcome: str, reason: str, dep: int | None) -> dict[str, Any]:
    return {"outcome": outcome, "reason": reason, "deployment_id": dep, "environment": rt.name,
            "exit_code": EXIT_UNSAFE if outcome == "failed" else EXIT_OK}


def _mark_prefect_run_crashed(flow_run_id: str | None) -> None:
    """Tell Prefect the killed run is over (it would otherwise show Running forever); best effort."""
    if not flow_run_id:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and not state.is_final():
                client.set_flow_run_state(flow_run_id, Crashed(message="process killed; recovered by turnout"),
                                          force=True)
    except Exception:
        pass


@flow(name="recover", validate_parameters=True)
async def recover(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    config_dir: str | None = None,
) -> dict[str, Any]:
    """Compare the ledger with the router and the slots; bring `environment` to a safe, recorded state."""
    rt = open_runtime(environment, config_dir)
    try:
        lock = rt.ledger.acquire_lock(environment, purpose="recover", wait=rt.environment.rollback.lock_wait)
        try:
            return recover_environment(rt, reason="turnout recover", lock_held=lock)
        finally:
            rt.ledger.release_lock(environment)
    finally:
        rt.close()


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome (for the CLI)."""
    return run_flow(recover, **params)
