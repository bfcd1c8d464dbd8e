"""The rollback flow: put all traffic back on a release this environment has seen healthy.

    ask a running deployment to roll back itself (its watch / analysis sees it within 0.25 s)
       ─► take the lock ─► recover a crashed run ─► plan (warm slot, or start the last known good)
       ─► snapshot the failing slot ─► database decision ─► start if needed + health
       ─► 100% to the good slot, verified ─► post-rollback gates ─► mark the bad release ─► notify

Triggered by a person (`turnout rollback`), by turnout's own watch (which calls the same step
function), or by a Prometheus alert through `turnout alert-receiver` and a Prefect automation.
When the good release fails its health check the outcome is `failed` (exit 3, an urgent notification):
traffic stays where it is, a human is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from turnout.errors import EXIT_OK
from turnout.flows._inputs import rollback_inputs
from turnout.flows._run import run_flow
from turnout.flows._steps import end_rollback, restore_traffic
from turnout.flows.recover import recover_environment
from turnout.models import Release, utcnow
from turnout.outcome import flow_result
from turnout.rollback import plan_rollback
from turnout.runtime import Runtime, open_runtime
from turnout.signals import Interrupted, cleaning_up, interruptible


@flow(name="rollback", validate_parameters=True)
async def rollback(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    rollback_to: Annotated[Release | None, Field(description="Roll back to this release")] = None,
    preserve_data: bool = False,
    *,
    notify: bool = False,
    dry_run: bool = False,
    reason: Annotated[str, Field(max_length=500)] = "manual rollback",
    config_dir: str | None = None,
    if_live: Annotated[str | None, Field(max_length=255, description="Only if this release is still live")] = None,
    requested_at: datetime | None = None,
) -> dict[str, Any]:
    """Roll `environment` back; returns the outcome (`rolled-back`, `not-needed`, or `dry-run` with the plan).

    `if_live` (set by alert triggers from the alert's `release` label): roll back only while that release
    still serves; an alert that fires again after the rollback must not roll back a second time.
    `requested_at` (the CLI's start): a rollback that started after it did this one's job (two at once).

    Raises DeploymentFailed (the run ends Failed) when the rollback could not make traffic safe.
    """
    if dry_run:
        rt = open_runtime(environment, config_dir)
        try:
            out = plan_rollback(rt, rollback_to, preserve_data).dry_run()  # what `turnout rollback --dry-run` prints
            get_run_logger().info("dry run, nothing changed:\n%s", out["text"])
            return out
        finally:
            rt.close()
    inputs = rollback_inputs(  # refused (exit 2) before anyone is asked to stop
        environment,
        rollback_to,
        preserve_data,
        notify=notify,
        reason=reason,
        config_dir=config_dir,
        if_live=if_live,
        requested_at=requested_at,
    )
    rt = inputs.rt
    try:
        stale = _not_live(rt, if_live)
        if stale:
            return stale
        asked_at = requested_at or utcnow()
        if asked_at.tzinfo is None:
            asked_at = asked_at.replace(tzinfo=UTC)
        running = rt.ledger.request_rollback(environment, reason)
        if running:
            rt.emit(
                "phase.started",
                running,
                phase="rollback",
                message=f"asked the running deployment #{running} to roll back: {reason}",
            )
        rt.ledger.acquire_lock(environment, purpose="rollback", wait=rt.environment.rollback.lock_wait)
        try:
            done = (_handled_by_running(rt, running, rollback_to) if running else None) or _done_meanwhile(
                rt, asked_at, rollback_to
            )
            if done:
                return done
            last = rt.ledger.environment_state(environment)["last_deployment"]
            recovered = recover_environment(rt, reason=f"before a rollback: {reason}")
            done = _done_by_recovery(rt, recovered, last, reason, rollback_to)
            if done:
                return done
            stale = _not_live(rt, if_live)
            if stale:
                return stale
            return flow_result(_roll_back(rt, rollback_to, preserve_data, notify, reason))
        finally:
            rt.ledger.release_lock(environment)
    finally:
        rt.close()


def _handled_by_running(rt: Runtime, dep_id: int, rollback_to: str | None) -> dict[str, Any] | None:
    """When the deployment we asked rolled back (or aborted) itself, that was the rollback."""
    dep = rt.ledger.deployment(dep_id)
    if rollback_to or dep is None or dep["status"] not in ("rolled-back", "aborted"):
        return None
    if dep["strategy"] == "rollback":  # two rollbacks at once: the other one ran
        return {
            "outcome": "rolled-back",
            "deployment_id": dep_id,
            "environment": rt.name,
            "release": dep["release"],
            "slot": dep["to_slot"],
            "exit_code": EXIT_OK,
            "reason": f"rollback #{dep_id} ran while this one waited: {dep['reason']}",
            "report": str(rt.environment.state_dir / "reports" / f"deployment-{dep_id}.md"),
        }
    return {
        "outcome": "rolled-back",
        "deployment_id": dep_id,
        "environment": rt.name,
        "release": dep["from_release"],
        "slot": dep["from_slot"],
        "exit_code": EXIT_OK,
        "reason": f"deployment #{dep_id} ({dep['release']}) was running and rolled itself back: {dep['reason']}",
        "report": str(rt.environment.state_dir / "reports" / f"deployment-{dep_id}.md"),
    }


def _done_by_recovery(
    rt: Runtime, recovered: dict[str, Any], last: dict[str, Any] | None, reason: str, rollback_to: str | None
) -> dict[str, Any] | None:
    """When recovery already took the failed or crashed run's release off traffic, that was the rollback.

    (A canary that failed with traffic still split, say: recovery puts it all back on the stable slot,
    and rolling back once more would throw away the stable release too.) With `--rollback-to`, only when
    the release it names is what now serves.
    """
    if recovered["outcome"] != "recovered" or not last or last["strategy"] in ("rollback", "recover", "migrate"):
        return None
    if last["release"] not in recovered["removed"]:
        return None
    if rollback_to and rollback_to != last.get("from_release"):
        return None
    rt.ledger.mark_release(rt.name, last["release"], "bad", f"rolled back: {reason}")
    return {
        "outcome": "rolled-back",
        "deployment_id": recovered["deployment_id"],
        "environment": rt.name,
        "release": last.get("from_release"),
        "slot": last.get("from_slot"),
        "exit_code": EXIT_OK,
        "reason": f"{last['release']} is off traffic: {recovered['reason']}",
    }


def _not_live(rt: Runtime, if_live: str | None) -> dict[str, Any] | None:
    """The answer when `if_live` names a release that no longer serves (nothing to do), else None."""
    if not if_live:
        return None
    split = rt.router.get_split()
    live = split.live_slots() if split else []
    serving = {rt.target.status(s).release for s in live}
    if if_live in serving:
        return None
    get_run_logger().info(
        "%s is not live in %s (serving: %s): nothing to roll back",
        if_live,
        rt.name,
        ", ".join(sorted(r for r in serving if r)) or "nothing",
    )
    return {
        "outcome": "not-needed",
        "environment": rt.name,
        "exit_code": EXIT_OK,
        "reason": f"{if_live} is no longer live (serving {', '.join(sorted(r for r in serving if r)) or 'nothing'}): "
        "nothing to roll back",
    }


def _done_meanwhile(rt: Runtime, since, rollback_to: str | None) -> dict[str, Any] | None:
    """Another rollback finished while this one waited for the lock (two at once: one runs)."""
    last = rt.ledger.environment_state(rt.name)["last_deployment"]
    if rollback_to or not last or last["strategy"] != "rollback" or last["status"] != "rolled-back":
        return None
    started = last["started_at"] if last["started_at"].tzinfo else last["started_at"].replace(tzinfo=since.tzinfo)
    if started < since:
        return None
    return {
        "outcome": "rolled-back",
        "deployment_id": last["id"],
        "environment": rt.name,
        "release": last["release"],
        "slot": last["to_slot"],
        "exit_code": EXIT_OK,
        "reason": f"rollback #{last['id']} ran while this one waited: {last['reason']}",
        "report": str(rt.environment.state_dir / "reports" / f"deployment-{last['id']}.md"),
    }


def _roll_back(rt: Runtime, rollback_to: str | None, preserve_data: bool, notify: bool, reason: str) -> dict[str, Any]:
    plan = plan_rollback(rt, rollback_to, preserve_data, prechecked=True)  # the flow prechecked before its lock
    assert plan.live_slot is not None  # plan_rollback refuses unless exactly one slot is live
    dep = rt.ledger.start_deployment(
        rt.name,
        "rollback",
        plan.release,
        from_release=plan.live_release,
        from_slot=plan.live_slot,
        to_slot=plan.idle_slot,
        options={"reason": reason, "rollback_to": rollback_to, "preserve_data": preserve_data, "plan": plan.as_dict()},
    )
    rt.ledger.attach_lock(rt.name, dep)
    rt.emit(
        "deployment.started",
        dep,
        release=plan.release,
        message=f"rollback ({reason}): {plan.live_release} in {plan.live_slot} -> {plan.release} in "
        f"{plan.idle_slot} ({plan.why_target})",
        data={"plan": plan.as_dict()},
    )
    rt.emit("phase.started", dep, phase="rollback", message=f"database: {plan.data}")
    notes = "" if plan.restore_from else f"\n## Database\n\n{plan.data}\n"
    try:
        with interruptible():
            return restore_traffic(
                rt,
                dep,
                plan,
                bad_slot=plan.live_slot,
                bad_release=plan.live_release,
                good_slot=plan.idle_slot,
                good_release=plan.release,
                why=reason,
                start=not plan.use_warm,
                evidence={"plan": plan.as_dict()},
                before_shift=(lambda: _restore_database(rt, dep, plan)) if plan.restore_from else None,
                notes=notes,
                rollback_run=True,
                notify=notify,
            )
    except Interrupted as e:
        # like a crash, but this process still runs: recovery reads the router and the slots and ends the
        # rollback in a safe, recorded state (finished when traffic already moved, else back where it was)
        get_run_logger().warning("rollback #%s %s: recovering", dep, e)
        with cleaning_up():
            rt.ledger.update_deployment(dep, status="crashed", reason=f"{e}")
            out = recover_environment(rt, reason=f"rollback #{dep} {e}")
        return {
            **out,
            "outcome": "rolled-back" if out["outcome"] == "recovered" else out["outcome"],
            "deployment_id": dep,
            "release": plan.release,
            "slot": plan.idle_slot,
        }
    except Exception as e:  # never leave the rollback "running"
        get_run_logger().exception("unexpected error in rollback #%s", dep)
        return end_rollback(
            rt,
            dep,
            plan,
            "failed",
            f"{reason}; unexpected error: {type(e).__name__}: {e}",
            extra=notes,
            rollback_run=True,
            notify=notify,
        )


def _restore_database(rt: Runtime, dep: int, plan) -> str:
    """Restore the backup taken before the contract migration, and prove it; the sentence for the report."""
    from turnout.database.backup import Backup, restore_backup
    from turnout.database.connect import open_database
    from turnout.errors import BackendError

    url, _ = open_database(rt.environment)
    backup = Backup.from_dict(plan.restore_from)
    action = rt.ledger.intent(dep, "rollback", "restore-database", backup=str(backup.path), why=plan.data)
    diffs = restore_backup(url, backup)
    rt.ledger.result(action, not diffs, differences=diffs)
    if diffs:
        raise BackendError(f"the database was restored from {backup.path.name} but differs: {'; '.join(diffs[:3])}")
    rt.emit(
        "phase.started", dep, phase="rollback", message=f"database restored from {backup.path.name}, compared equal"
    )
    return f"{plan.data}; restored and compared equal"


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome dict whether it succeeded or not (for the CLI)."""
    return run_flow(rollback, **params)


__all__ = ["rollback", "run"]
