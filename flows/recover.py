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

from turnout.errors import EXIT_OK, EXIT_UNSAFE, TurnoutError
from turnout.flows._run import run_flow
from turnout.outcome import flow_result
from turnout.recovery import decide, observe
from turnout.runtime import Runtime, open_runtime
from turnout.signals import cleaning_up, interruptible
from turnout.tasks.deploy import stop_slot
from turnout.tasks.traffic import shift_traffic

__all__ = ["recover", "recover_environment", "end_killed_migration", "run"]


def recover_environment(rt: Runtime, reason: str) -> dict[str, Any]:
    """Bring the environment to a safe, recorded state (call with the environment's lock held).

    Returns the outcome: `consistent` (nothing to do), `recovered`, or `failed` (no safe state reachable
    without a human; nothing unsafe was done).
    """
    logger = get_run_logger()
    seen = observe(rt, lock_pid=os.getpid())
    decision = decide(seen)
    if decision.end_migration and seen.killed_migration:
        decision.summary += end_killed_migration(rt, seen.killed_migration)
        if not (decision.split or decision.stop or decision.status):
            return _outcome(rt, "recovered" if decision.safe else "failed", decision.summary, decision.end_migration)
    if not decision.changes:
        outcome = "consistent" if decision.safe else "failed"
        if not decision.safe:
            logger.warning("recovery: %s", decision.summary)
        return _outcome(rt, outcome, decision.summary, None)
    crashed = seen.deployment if seen.crashed else None
    dep = (
        crashed["id"]
        if crashed
        else rt.ledger.start_deployment(
            rt.name, "recover", (seen.deployment or {}).get("release") or "-", options={"reason": reason}
        )
    )
    rt.emit(
        "phase.started",
        dep,
        phase="recover",
        message=f"recovering {rt.name}: {decision.summary}",
        data={"observed": seen.as_dict()},
    )
    action = rt.ledger.intent(
        dep,
        "recover",
        "recover",
        reason=reason,
        observed=seen.as_dict(),
        decision={
            "summary": decision.summary,
            "split": decision.split.as_dict() if decision.split else None,
            "stop": decision.stop,
            "status": decision.status,
        },
    )
    safe, summary = decision.safe, decision.summary
    try:
        if decision.split:
            shift_traffic(rt, dep, decision.split, phase="recover")
        for slot in decision.stop:
            stop_slot(rt, dep, slot, why=f"recovery: {decision.summary}")
            rt.ledger.set_slot(rt.name, slot, state="stopped")
        if decision.live:
            rt.ledger.set_slot(rt.name, decision.live[0], state="live", release=decision.live[1])
        now = rt.router_state()
        if now.serving and now.known and now.split is not None:
            rt.ledger.set_split(rt.name, now.split)  # a crash between the router change and its record
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
    rt.emit(
        "deployment.recovered",
        dep,
        urgent=not safe,
        message=summary,
        data={"outcome": "recovered" if safe else "failed"},
    )
    (logger.info if safe else logger.error)("recovery of %s: %s", rt.name, summary)
    before = _serving_releases(seen.split, {s: st.release for s, st in seen.statuses.items()})
    after_state = rt.router_state()
    after = _serving_releases(
        after_state.split if after_state.serving else None, {s: rt.target.status(s).release for s in seen.statuses}
    )
    return _outcome(rt, "recovered" if safe else "failed", summary, dep, removed=sorted(before - after))


def end_killed_migration(rt: Runtime, m: dict[str, Any]) -> str:
    """End a migration whose process died (SIGKILL, a reboot) in the ledger; the sentence for the reason."""
    why = " (each migration is its own transaction: the database is at a known revision)" + _database_after_crash(
        rt, m["id"]
    )
    rt.ledger.finish_deployment(m["id"], "aborted", f"recovered: the migration was killed{why}")
    _mark_prefect_run_crashed(m.get("flow_run_id"))
    get_run_logger().warning("recovery: migration #%s was killed%s", m["id"], why)
    return why


def _database_after_crash(rt: Runtime, dep: int) -> str:
    """The revision a killed migration left, and its scratch database dropped; a sentence for the reason."""
    try:
        from turnout.database.backup import ScratchDatabase
        from turnout.database.connect import open_database
        from turnout.database.snapshot import engine_for

        url, project = open_database(rt.environment)
        assert rt.environment.database is not None  # open_database refuses an environment without one
        folder = rt.environment.state_dir / rt.environment.database.backup_dir
        ScratchDatabase(url, folder, f"turnout_scratch_{rt.name.replace('-', '_')}_{dep}").drop()
        with engine_for(url).connect() as conn:
            now = project.current(conn)
        todo = len(project.pending(now))
        return f"; the database is at revision {now or 'base'}" + (
            f", {todo} migration(s) to go: run `turnout migrate -e {rt.name}`" if todo else " (the head)"
        )
    except Exception as e:  # the database is down: say so, the rest of the recovery still holds
        return (
            f"; the database's revision could not be read ({type(e).__name__}): "
            "check it with `turnout migrate --dry-run`"
        )


def _serving_releases(split, releases: dict[str, str | None]) -> set[str]:
    """The releases that take traffic under `split`."""
    return {r for s in (split.live_slots() if split else []) if (r := releases.get(s))}


def _outcome(
    rt: Runtime, outcome: str, reason: str, dep: int | None, removed: list[str] | None = None
) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "reason": reason,
        "deployment_id": dep,
        "environment": rt.name,
        "removed": removed or [],
        "exit_code": EXIT_UNSAFE if outcome == "failed" else EXIT_OK,
    }


def _mark_prefect_run_crashed(flow_run_id: str | None) -> None:
    """Tell Prefect the killed run is over (it would otherwise show Running forever); best effort."""
    if not flow_run_id:
        return
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        run_id = UUID(flow_run_id)
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
            if state is not None and not state.is_final():
                client.set_flow_run_state(run_id, Crashed(message="process killed; recovered by turnout"), force=True)
    except Exception:
        pass


@flow(name="recover", validate_parameters=True)
async def recover(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    config_dir: str | None = None,
) -> dict[str, Any]:
    """Compare the ledger with the router and the slots; bring `environment` to a safe, recorded state.

    Returns the outcome; raises DeploymentFailed (the run ends Failed) when no safe state was reached.
    """
    rt = open_runtime(environment, config_dir)
    try:
        # refused at once, naming the holder: a run in progress is not a crash to recover from
        rt.ledger.acquire_lock(environment, purpose="recover")
        try:
            with interruptible(), cleaning_up():  # a recovery is the safe path: a signal never cuts it short
                return flow_result(recover_environment(rt, reason="turnout recover"))
        finally:
            rt.ledger.release_lock(environment)
    finally:
        rt.close()


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome (for the CLI)."""
    return run_flow(recover, **params)
