"""The blue-green flow: start the release in the idle slot, gate it, switch all traffic, verify.

    pre-deploy gates ─► start in idle slot ─► pre-traffic health + gates ─► wait ─► switch 100%
       ─► verify ─► post-switch health + gates ─► promote ─► stop the old slot (unless keep_old)

Any failure before the switch stops the new slot and leaves traffic untouched (aborted, exit 1).
Any failure after it switches back to the old slot, still running, and verifies (aborted, exit 1);
when there is no healthy slot to go back to the outcome is `failed` (exit 3).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from tasks.deploy import start_release, stop_slot
from tasks.health import run_gates
from tasks.traffic import shift_traffic
from turnout.errors import TurnoutError
from turnout.models import RELEASE_PATTERN, Phase, Split, validate_release
from turnout.outcome import DeploymentFailed, finish
from turnout.plan import plan_blue_green
from turnout.runtime import Runtime, open_runtime


@flow(name="blue-green", validate_parameters=True)
async def blue_green(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="deployments/<environment>.toml")],
    image: Annotated[str, Field(pattern=RELEASE_PATTERN, description="The release to deploy, e.g. demo:v2")],
    config_dir: str | None = None,
    health_check_timeout: Annotated[float | None, Field(gt=0, description="Seconds to become healthy")] = None,
    traffic_switch_delay: Annotated[float, Field(ge=0, description="Seconds between healthy and the switch")] = 0.0,
    keep_old: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Deploy `image` to `environment` with a blue-green switch; returns the outcome.

    Raises DeploymentFailed (the flow run ends Failed) when the deployment was aborted or failed;
    the exception carries the same outcome dict.

    The parameters carry their patterns and bounds in the deployment's schema, so the Prefect server
    refuses a bad image or timeout when a run is created (nothing starts). The flow is `async` only because Prefect ends a sync flow by joining a heartbeat thread that
    sleeps in 1 s steps (PREFECT.md §1); its tasks are plain sync calls, run one after another.
    """
    logger = get_run_logger()
    validate_release(image)
    rt = open_runtime(environment, config_dir)
    try:
        if dry_run:
            plan = plan_blue_green(rt, image)
            logger.info("dry run, nothing changed:\n%s", plan.render())
            return {"outcome": "dry-run", "plan": plan.as_dict(), "text": plan.render()}
        lock = rt.ledger.acquire_lock(rt.name)
        try:
            if lock["taken_over"]:
                logger.warning("took over a stale lock from pid %s (a crashed run)", lock["taken_over"]["pid"])
            plan = plan_blue_green(rt, image)  # under the lock: no other run can change the state
            dep = rt.ledger.start_deployment(
                rt.name, "blue-green", image, from_release=plan.live_release, from_slot=plan.live_slot,
                to_slot=plan.idle_slot, options={"health_check_timeout": health_check_timeout,
                                                 "traffic_switch_delay": traffic_switch_delay, "keep_old": keep_old},
            )
            rt.ledger.attach_lock(rt.name, dep)
            try:
                return _deploy(rt, dep, plan, health_check_timeout, traffic_switch_delay, keep_old)
            except DeploymentFailed:
                raise
            except Exception as e:  # a bug or an unforeseen failure: never leave the run "running"
                logger.exception("unexpected error in deployment #%s", dep)
                return finish(rt, dep, "failed", f"unexpected error: {type(e).__name__}: {e}; "
                              f"traffic is {rt.router.get_split()}, check `turnout status`", plan)
        finally:
            rt.ledger.release_lock(rt.name)
    finally:
        rt.close()


def _deploy(rt: Runtime, dep: int, plan, health_timeout: float | None, delay: float, keep_old: bool) -> dict[str, Any]:
    logger = get_run_logger()
    old, new, release = plan.live_slot, plan.idle_slot, plan.release
    rt.emit("deployment.started", dep, release=release,
            message=f"blue-green {release}: {old or 'nothing'} -> {new}", data={"plan": plan.as_dict()})
    timeout = health_timeout or rt.environment.health.timeout

    def abort_before_switch(reason: str) -> dict[str, Any]:
        stop_slot(rt, dep, new, why=f"aborted before the switch: {reason}")
        rt.ledger.set_slot(rt.name, new, state="failed")
        return finish(rt, dep, "aborted", f"{reason}; traffic untouched", plan)

    # 1. pre-deploy gates: nothing started yet
    verdicts = run_gates(rt, dep, Phase.PRE_DEPLOY, new, release, [])
    if verdicts and not verdicts[-1].passed:
        return finish(rt, dep, "aborted", f"pre-deploy gate {verdicts[-1].gate}: {verdicts[-1].reason}", plan)

    # 2. start the release in the idle slot
    try:
        urls = start_release(rt, dep, new, release)
    except TurnoutError as e:
        return abort_before_switch(f"could not start {release} in slot {new}: {e}")

    # 3. pre-traffic: health, then the configured gates
    verdicts = run_gates(rt, dep, Phase.PRE_TRAFFIC, new, release, urls, timeout=timeout, include_health=True)
    if not verdicts[-1].passed:
        return abort_before_switch(f"pre-traffic gate {verdicts[-1].gate}: {verdicts[-1].reason}")

    if delay > 0:
        rt.emit("phase.started", dep, phase="delay", message=f"waiting {delay:g}s before the switch")
        time.sleep(delay)

    # 4. switch all traffic and verify through the router
    rt.emit("phase.started", dep, phase="switch", release=release, message=f"switching to {new}",
            data={"old_slot": old, "new_slot": new})
    try:
        shift_traffic(rt, dep, Split.all_to(new))
    except TurnoutError as e:
        now = rt.router.get_split()
        if now is None or now == plan.current_split:
            return abort_before_switch(f"the switch failed and traffic stayed where it was: {e}")
        return _switch_back(rt, dep, plan, f"the switch could not be verified: {e}")

    # 5. post-switch health of the new slot, and the configured gates
    verdicts = run_gates(rt, dep, Phase.POST_SWITCH, new, release, urls,
                         timeout=min(timeout, 30.0), include_health=True)
    if not verdicts[-1].passed:
        return _switch_back(rt, dep, plan, f"post-switch gate {verdicts[-1].gate}: {verdicts[-1].reason}")

    # 6. promoted: the new release is live and known good (no watch window in a blue-green yet)
    rt.ledger.set_slot(rt.name, new, state="live", release=release)
    rt.ledger.set_last_known_good(rt.name, release)
    notes = []
    if old:
        st = rt.target.status(old)
        if not st.running:
            notes.append(f"the old slot {old} had stopped running ({st.detail or st.state})")
        if keep_old and st.running:
            rt.ledger.set_slot(rt.name, old, state="warm")
            notes.append(f"slot {old} kept running {plan.live_release} (--keep-old)")
        else:
            stop_slot(rt, dep, old, why="retired after promotion")
    logger.info("promoted %s in slot %s", release, new)
    return finish(rt, dep, "promoted", "; ".join(notes), plan)


def _switch_back(rt: Runtime, dep: int, plan, reason: str) -> dict[str, Any]:
    """After the switch went wrong: return traffic to the old slot if it is healthy, else fail."""
    old, new = plan.live_slot, plan.idle_slot
    if old is None:
        return finish(rt, dep, "failed", f"{reason}; there is no previous slot to return to", plan)
    st = rt.target.status(old)
    if not st.running:
        return finish(rt, dep, "failed",
                      f"{reason}; the old slot {old} is not running ({st.detail or st.state}), "
                      f"so traffic stays on {new}", plan)
    try:
        shift_traffic(rt, dep, Split.all_to(old), phase="switch-back")
    except TurnoutError as e:
        return finish(rt, dep, "failed", f"{reason}; switching back to {old} failed too: {e}", plan)
    stop_slot(rt, dep, new, why=f"aborted after the switch: {reason}")
    rt.ledger.set_slot(rt.name, new, state="failed")
    return finish(rt, dep, "aborted", f"{reason}; traffic is back on {old} ({plan.live_release})", plan)


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome dict whether it promoted or not (for the CLI)."""
    import asyncio

    state = asyncio.run(blue_green(**params, return_state=True))
    result = state.result(raise_on_failure=False)
    if isinstance(result, DeploymentFailed):
        return result.outcome
    if isinstance(result, BaseException):
        raise result
    return result


# keep the flow object importable under its Prefect name for prefect.yaml entrypoints
__all__ = ["blue_green", "run", "DeploymentFailed", "Runtime"]
