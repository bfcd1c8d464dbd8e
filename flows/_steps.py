"""Steps the deployment flows share: the locked run, start-and-gate, switch back, promote.

Every step that ends a deployment returns the outcome `turnout.outcome.finish` recorded; part-way
through a run its caller stops the run with `raise RunEnded(outcome)`, caught only by `locked_run`
(the convention is spelled out in `turnout.outcome`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import get_run_logger

from turnout.errors import TurnoutError
from turnout.faults import crash_point
from turnout.flows._inputs import RunInputs
from turnout.flows.migrate import migrate_database
from turnout.flows.recover import recover_environment
from turnout.models import Phase, Split
from turnout.outcome import RunEnded, finish
from turnout.plan import BlueGreenPlan, plan_blue_green
from turnout.runtime import Runtime
from turnout.signals import Interrupted, cleaning_up, interruptible
from turnout.tasks.deploy import start_release, stop_slot
from turnout.tasks.health import run_gates
from turnout.tasks.snapshot import snapshot_slot
from turnout.tasks.traffic import shift_traffic
from turnout.tasks.watch import watch_release

__all__ = [
    "locked_run",
    "start_and_gate",
    "abort_before_switch",
    "shift_or_abort",
    "switch_back",
    "promote",
    "restore_traffic",
    "end_rollback",
    "make_safe",
    "rollback_asked",
]


def locked_run(
    rt: Runtime,
    strategy: str,
    image: str,
    options: dict[str, Any],
    body: Callable[[int, BlueGreenPlan], dict[str, Any]],
) -> dict[str, Any]:
    """Take the environment's lock, plan, record the deployment, run `body(dep, plan)`.

    Returns the outcome `body` returns, or the one a `RunEnded` carries. An interruption or an
    unexpected exception in `body` makes traffic safe and ends the deployment `aborted` or `failed`
    (never left "running"); the lock is always released.
    """
    logger = get_run_logger()
    lock = rt.ledger.acquire_lock(rt.name)
    try:
        if lock["taken_over"]:
            logger.warning("took over a stale lock from pid %s (a crashed run)", lock["taken_over"]["pid"])
        recovered = recover_environment(rt, reason=f"before {strategy} {image}")
        if recovered["outcome"] != "consistent":
            logger.warning("before this run: %s", recovered["reason"])
        plan = plan_blue_green(rt, image)  # under the lock: no other run can change the state
        dep = rt.ledger.start_deployment(
            rt.name,
            strategy,
            image,
            from_release=plan.live_release,
            from_slot=plan.live_slot,
            to_slot=plan.idle_slot,
            options=options,
            flow_run_id=_flow_run_id(),
        )
        rt.ledger.attach_lock(rt.name, dep)
        rt.emit(
            "deployment.started",
            dep,
            release=image,
            message=f"{strategy} {image}: {plan.live_slot or 'nothing'} -> {plan.idle_slot}",
            data={"plan": plan.as_dict()},
        )
        with interruptible():  # SIGINT/SIGTERM end the run the way an abort does
            try:
                return body(dep, plan)
            except RunEnded as e:  # the one place a run that ended part-way comes out
                return e.outcome
            except Interrupted as e:
                logger.warning("deployment #%s %s: making traffic safe", dep, e)
                with cleaning_up():
                    return make_safe(rt, dep, plan, f"{e} (the operator or a supervisor stopped the run)")
            except Exception as e:  # a bug or an unforeseen failure: never leave the run "running", nor traffic split
                logger.exception("unexpected error in deployment #%s", dep)
                with cleaning_up():
                    return make_safe(rt, dep, plan, f"unexpected error: {type(e).__name__}: {e}")
    finally:
        rt.ledger.release_lock(rt.name)


def make_safe(rt: Runtime, dep: int, plan: BlueGreenPlan, reason: str) -> dict[str, Any]:
    """End a run that cannot go on: traffic back where it was (verified), the new slot stopped.

    Whether traffic moved is read from the router itself. Returns the outcome: aborted when traffic
    is safe, failed when it could not be made safe.
    """
    try:
        state = rt.router_state()
        moved = any(s is not None and s.weight(plan.idle_slot) > 0 for s in (state.split, state.configured))
        if not moved:
            return abort_before_switch(rt, dep, plan, reason)
        return switch_back(rt, dep, plan, reason)
    except Exception as e:
        logger = get_run_logger()
        logger.exception("could not make deployment #%s safe", dep)
        return finish(
            rt,
            dep,
            "failed",
            f"{reason}; making traffic safe failed too: {type(e).__name__}: {e}; "
            f"run `turnout recover --environment {rt.name}`",
            plan,
        )


def _flow_run_id() -> str | None:
    """This Prefect flow run's id, so the ledger row leads to the run in the UI."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def abort_before_switch(rt: Runtime, dep: int, plan: BlueGreenPlan, reason: str) -> dict[str, Any]:
    """Stop the new slot; traffic was never moved. Returns the outcome (aborted)."""
    stop_slot(rt, dep, plan.idle_slot, why=f"aborted before the switch: {reason}")
    rt.ledger.set_slot(rt.name, plan.idle_slot, state="failed")
    return finish(rt, dep, "aborted", f"{reason}; traffic untouched", plan)


def start_and_gate(rt: Runtime, dep: int, plan: BlueGreenPlan, health_timeout: float | None) -> list[str]:
    """Pre-deploy gates, start the release in the idle slot, pre-traffic health + gates; its URLs.

    Raises RunEnded (traffic untouched) when a gate, the migration or the start fails.
    """
    new, release = plan.idle_slot, plan.release
    verdicts = run_gates(rt, dep, Phase.PRE_DEPLOY, new, release, base_urls=[])
    if verdicts and not verdicts[-1].passed:
        raise RunEnded(finish(rt, dep, "aborted", f"pre-deploy gate {verdicts[-1].gate}: {verdicts[-1].reason}", plan))
    if rt.environment.database is not None:
        _migrate_before_start(rt, dep, plan)
    try:
        urls = start_release(rt, dep, new, release)
    except TurnoutError as e:
        raise RunEnded(abort_before_switch(rt, dep, plan, f"could not start {release} in slot {new}: {e}")) from None
    verdicts = run_gates(
        rt,
        dep,
        Phase.PRE_TRAFFIC,
        new,
        release,
        base_urls=urls,
        timeout=health_timeout or rt.environment.health.timeout,
        include_health=True,
    )
    if not verdicts[-1].passed:
        raise RunEnded(
            abort_before_switch(rt, dep, plan, f"pre-traffic gate {verdicts[-1].gate}: {verdicts[-1].reason}")
        )
    return urls


def _migrate_before_start(rt: Runtime, dep: int, plan: BlueGreenPlan) -> None:
    """Expand migrations before the new release starts (the old one keeps working with them); a contract
    one waits for the old slot to be retired. A refused or failed migration ends the run (RunEnded) with
    traffic untouched."""
    live = f"{plan.live_release} in slot {plan.live_slot} serves until the switch" if plan.live_slot else None
    out = migrate_database(rt, phase="expand" if live else "all", why_live=live)
    rt.emit("phase.started", dep, phase="migrate", release=plan.release, message=f"database: {out['reason']}")
    if out["outcome"] not in ("migrated", "up-to-date"):
        raise RunEnded(
            finish(
                rt,
                dep,
                "failed" if out["exit_code"] == 3 else "aborted",
                f"database migration before the start: {out['reason']}; traffic untouched",
                plan,
            )
        )


def check_new_series(rt: Runtime, dep: int, plan: BlueGreenPlan, provider: Any) -> None:
    """The new release, started and healthy, exposes the series too; else RunEnded, traffic untouched."""
    check = getattr(provider, "check_series", None)
    if check is None:
        return
    try:
        check(plan.idle_slot, rt.target.endpoints(plan.idle_slot), fresh=True)
    except TurnoutError as e:
        raise RunEnded(abort_before_switch(rt, dep, plan, f"{plan.release} cannot be judged: {e}")) from None


def rollback_asked(rt: Runtime, dep: int, plan: BlueGreenPlan, where: str) -> None:
    """When `turnout rollback` asked this run to stop (through the ledger): make traffic safe, raise RunEnded."""
    asked = rt.ledger.rollback_requested(dep)
    if asked:
        raise RunEnded(make_safe(rt, dep, plan, f"rollback requested {where}: {asked}"))


def shift_or_abort(rt: Runtime, dep: int, plan: BlueGreenPlan, split: Split, phase: str = "switch") -> None:
    """Shift to `split`; on failure abort (traffic unchanged) or switch back (traffic moved): RunEnded."""
    try:
        shift_traffic(rt, dep, split, phase=phase)
    except TurnoutError as e:
        now = rt.router.get_split()
        if now is None or now == plan.current_split:
            raise RunEnded(
                abort_before_switch(rt, dep, plan, f"the traffic shift failed and traffic stayed where it was: {e}")
            ) from None
        raise RunEnded(switch_back(rt, dep, plan, f"the traffic shift to {split} could not be verified: {e}")) from None


def switch_back(rt: Runtime, dep: int, plan: BlueGreenPlan, reason: str) -> dict[str, Any]:
    """Traffic moved and something went wrong: all traffic back to the old slot if it runs, else failed.

    Returns the outcome (aborted, or failed).
    """
    old, new = plan.live_slot, plan.idle_slot
    if old is None:
        return finish(rt, dep, "failed", f"{reason}; there is no previous slot to return to", plan)
    st = rt.target.status(old)
    if not st.running:
        return finish(
            rt,
            dep,
            "failed",
            f"{reason}; the old slot {old} is not running ({st.detail or st.state}), so traffic stays on {new}",
            plan,
        )
    try:
        shift_traffic(rt, dep, Split.all_to(old), phase="switch-back")
    except TurnoutError as e:
        return finish(rt, dep, "failed", f"{reason}; switching back to {old} failed too: {e}", plan)
    stop_slot(rt, dep, new, why=f"aborted after the switch: {reason}")
    rt.ledger.set_slot(rt.name, new, state="failed")
    return finish(rt, dep, "aborted", f"{reason}; traffic is back on {old} ({plan.live_release})", plan)


def promote(inputs: RunInputs, dep: int, plan: BlueGreenPlan, *, urls: list[str]) -> dict[str, Any]:
    """All traffic is on the new slot: post-switch health, the watch, then last known good and retire the old slot.

    The run's `watch` seconds (0 skips it) with the old slot kept warm: a trigger rolls back at once
    (outcome `rolled-back`). A clean watch makes the release the last known good; one without enough
    traffic to judge keeps it live but not known good, and the old slot warm.
    """
    rt, keep_old, health_timeout = inputs.rt, inputs.keep_old, inputs.health_check_timeout
    old, new, release = plan.live_slot, plan.idle_slot, plan.release
    timeout = min(health_timeout or rt.environment.health.timeout, 30.0)
    crash_point("post-switch")
    verdicts = run_gates(rt, dep, Phase.POST_SWITCH, new, release, base_urls=urls, timeout=timeout, include_health=True)
    if not verdicts[-1].passed:
        return switch_back(rt, dep, plan, f"post-switch gate {verdicts[-1].gate}: {verdicts[-1].reason}")
    rollback_asked(rt, dep, plan, "after the switch")
    rt.ledger.set_slot(rt.name, new, state="live", release=release)
    notes = []
    old_running = bool(old and rt.target.status(old).running)
    if old and old_running:
        rt.ledger.set_slot(rt.name, old, state="warm")
    seconds = inputs.watch
    known_good = True
    if seconds > 0 and old and plan.live_release:
        rt.emit(
            "phase.started",
            dep,
            phase="watch",
            release=release,
            message=f"watching {release} in slot {new} for {seconds:g}s; slot {old} ({plan.live_release}) "
            f"{'kept warm' if old_running else 'is not running: a rollback would start it again'}",
        )
        result = watch_release(
            rt,
            dep,
            inputs.provider or rt.metrics,
            slot=new,
            release=release,
            urls=urls,
            seconds=seconds,
            config=rt.environment.rollback,
        )
        if result.trigger:
            return restore_traffic(
                rt,
                dep,
                plan,
                bad_slot=new,
                bad_release=release,
                good_slot=old,
                good_release=plan.live_release,
                why=f"watch: {result.trigger}",
                evidence=result.evidence,
                health_timeout=health_timeout,
            )
        notes.append(result.summary())
        known_good = result.clean
    elif seconds > 0:
        notes.append("no watch: there is no previous release to roll back to")
    else:
        notes.append("watch skipped")
    if known_good:
        rt.ledger.set_last_known_good(rt.name, release)
    retired = False
    if old:
        st = rt.target.status(old)
        if not st.running:
            notes.append(f"the old slot {old} had stopped running ({st.detail or st.state})")
        elif keep_old or not known_good:
            rt.ledger.set_slot(rt.name, old, state="warm")
            notes.append(
                f"slot {old} kept running {plan.live_release} "
                + ("(--keep-old)" if keep_old else "(the watch could not judge the new release)")
            )
        else:
            try:  # the new release is live and verified: a slot that will not stop never undoes that
                stop_slot(rt, dep, old, why="retired after promotion")
                retired = True
            except TurnoutError as e:
                rt.ledger.set_slot(rt.name, old, state="warm")
                notes.append(
                    f"slot {old} could not be stopped ({e}): it still runs {plan.live_release}; "
                    f"stop it by hand, or run `turnout recover --environment {rt.name}` once it can"
                )
    if rt.environment.database is not None:
        if retired or not old:
            out = migrate_database(rt, phase="contract")
            notes.append(f"database after the watch: {out['reason']}")
        else:
            notes.append("contract migrations (if any) wait: the old slot still runs")
    get_run_logger().info("promoted %s in slot %s", release, new)
    return finish(rt, dep, "promoted", "; ".join(notes), plan)


def restore_traffic(
    rt: Runtime,
    dep: int,
    plan: Any,
    *,
    bad_slot: str,
    bad_release: str | None,
    good_slot: str,
    good_release: str,
    why: str,
    evidence: dict[str, Any] | None = None,
    start: bool | None = None,
    health_timeout: float | None = None,
    before_shift: Callable[[], str] | None = None,
    notes: str = "",
    rollback_run: bool = False,
    notify: bool = False,
) -> dict[str, Any]:
    """Roll back: snapshot the bad slot, (re)start the good release if needed, 100% to it, verify, check it.

    Ends the run and returns its outcome: `rolled-back`, or `failed` when the good release cannot take
    the traffic (it fails its health check: traffic stays where it was, a human is needed).
    `before_shift` (the database restore a rollback needs) runs once the good release is up; it returns
    a sentence for the report, or raises to stop the rollback with traffic where it was. `notes` is
    markdown for the end of the report; `rollback_run` and `notify` are as in `end_rollback`.
    """
    incident = snapshot_slot(rt, dep, bad_slot, bad_release, why, evidence=evidence)
    extra = f"## Incident\n\nWhat slot {bad_slot} ({bad_release}) left behind: `{incident}`\n"

    def end(status: str, reason: str) -> dict[str, Any]:
        return end_rollback(
            rt, dep, plan, status, reason, extra=extra + notes, rollback_run=rollback_run, notify=notify
        )

    if start is None:
        st = rt.target.status(good_slot)
        start = not (st.running and (st.release in (None, good_release)))
    urls = [f"http://{a}" for a in rt.target.endpoints(good_slot)]
    if start:
        rt.emit(
            "phase.started",
            dep,
            phase="rollback",
            release=good_release,
            message=f"slot {good_slot} does not run {good_release}: starting it there",
        )
        try:
            urls = start_release(rt, dep, good_slot, good_release)
        except TurnoutError as e:
            return end(
                "failed",
                f"{why}; could not start {good_release} in slot {good_slot}: {e}; traffic stays on "
                f"{bad_slot}, a human is needed",
            )
        verdicts = run_gates(
            rt,
            dep,
            Phase.PRE_TRAFFIC,
            good_slot,
            good_release,
            base_urls=urls,
            timeout=health_timeout or rt.environment.health.timeout,
            include_health=True,
        )
        if not verdicts[-1].passed:
            stop_slot(rt, dep, good_slot, why=f"{good_release} failed its health check on rollback")
            rt.ledger.set_slot(rt.name, good_slot, state="failed")
            return end(
                "failed",
                f"{why}; {good_release} failed its health check in slot {good_slot} "
                f"({verdicts[-1].reason}); traffic stays on {bad_slot}, a human is needed",
            )
    if before_shift is not None:
        try:
            extra += f"\n## Database\n\n{before_shift()}\n"
        except Exception as e:
            return end(
                "failed", f"{why}; the database restore failed: {e}; traffic stays on {bad_slot}, a human is needed"
            )
    try:
        shift_traffic(rt, dep, Split.all_to(good_slot), phase="rollback")
    except TurnoutError as e:
        return end("failed", f"{why}; the shift back to {good_slot} failed: {e}; a human is needed")
    verdicts = run_gates(
        rt,
        dep,
        Phase.POST_ROLLBACK,
        good_slot,
        good_release,
        base_urls=urls,
        timeout=min(health_timeout or rt.environment.health.timeout, 30.0),
        include_health=True,
    )
    if not verdicts[-1].passed:
        return end(
            "failed",
            f"{why}; traffic is on {good_slot} ({good_release}) but its post-rollback check "
            f"{verdicts[-1].gate} fails: {verdicts[-1].reason}; a human is needed",
        )
    if bad_release:
        rt.ledger.mark_release(rt.name, bad_release, "bad", why)
    rt.ledger.set_slot(rt.name, good_slot, state="live", release=good_release)
    rt.ledger.set_last_known_good(rt.name, good_release)
    stop_slot(rt, dep, bad_slot, why=f"rolled back: {why}")
    rt.ledger.set_slot(rt.name, bad_slot, state="failed")
    return end("rolled-back", f"{why}; traffic is back on {good_slot} ({good_release})")


def end_rollback(
    rt: Runtime,
    dep: int,
    plan: Any,
    status: str,
    reason: str,
    *,
    extra: str = "",
    rollback_run: bool = False,
    notify: bool = False,
) -> dict[str, Any]:
    """End a run that rolled back (or tried to): `finish` it and return the outcome.

    `rollback_run`: the run is a rollback (`turnout rollback`), so `rolled-back` is its success (exit 0),
    and an end that is not is announced urgently with a `rollback.finished` event (any end with
    `notify`). Otherwise it is a deployment whose watch rolled it back: `rolled-back` is exit 1.
    """
    if rollback_run and (notify or status != "rolled-back"):
        rt.emit(
            "rollback.finished",
            dep,
            release=plan.release,
            urgent=True,
            message=f"rollback {status}: {reason}",
            data={"outcome": status},
        )
    return finish(
        rt, dep, status, reason, plan, succeeded=status == "rolled-back" if rollback_run else None, extra=extra
    )
