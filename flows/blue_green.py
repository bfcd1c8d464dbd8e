"""The blue-green flow: start the release in the idle slot, gate it, switch all traffic, verify.

    pre-deploy gates ─► start in idle slot ─► pre-traffic health + gates ─► wait ─► switch 100%
       ─► verify ─► post-switch health + gates ─► watch (old slot warm) ─► last known good
       ─► stop the old slot (unless keep_old)

A watch trigger (5xx, p95, availability, health failing, the process gone, `turnout rollback`) puts
all traffic back on the warm old slot at once (rolled-back, exit 1).

Any failure before the switch stops the new slot and leaves traffic untouched (aborted, exit 1).
Any failure after it switches back to the old slot, still running, and verifies (aborted, exit 1);
when there is no healthy slot to go back to the outcome is `failed` (exit 3).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows._steps import locked_run, promote, run_flow, shift_or_abort, start_and_gate
from turnout.models import RELEASE_PATTERN, Split, validate_release
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
    watch: Annotated[float | None, Field(ge=0, description="Seconds to watch after promotion; 0 skips")] = None,
) -> dict[str, Any]:
    """Deploy `image` to `environment` with a blue-green switch; returns the outcome.

    Raises DeploymentFailed (the flow run ends Failed) when the deployment was aborted or failed;
    the exception carries the same outcome dict.

    The parameters carry their patterns and bounds in the deployment's schema, so the Prefect server
    refuses a bad image or timeout when a run is created (nothing starts). The flow is `async` only
    because Prefect ends a sync flow by joining a heartbeat thread that sleeps in 1 s steps
    (PREFECT.md §1); its tasks are plain sync calls, run one after another.
    """
    logger = get_run_logger()
    validate_release(image)
    rt = open_runtime(environment, config_dir)
    try:
        if rt.environment.database is not None:
            from flows.migrate import open_database

            open_database(rt)  # no Alembic project or a database that does not answer: exit 2, nothing touched
        if dry_run:
            plan = plan_blue_green(rt, image)
            logger.info("dry run, nothing changed:\n%s", plan.render())
            return {"outcome": "dry-run", "plan": plan.as_dict(), "text": plan.render()}
        seconds = rt.environment.rollback.watch if watch is None else watch
        provider = rt.metrics_provider() if seconds > 0 else None  # a bad [metrics] table is exit 2 before anything moves
        options = {"health_check_timeout": health_check_timeout, "traffic_switch_delay": traffic_switch_delay,
                   "keep_old": keep_old, "watch": seconds}
        return locked_run(rt, "blue-green", image, options, lambda dep, plan: _deploy(
            rt, dep, plan, health_check_timeout, traffic_switch_delay, keep_old, seconds, provider))
    finally:
        rt.close()


def _deploy(rt: Runtime, dep: int, plan, health_timeout: float | None, delay: float, keep_old: bool,
            watch: float, provider: Any) -> dict[str, Any]:
    urls = start_and_gate(rt, dep, plan, health_timeout)
    if delay > 0:
        rt.emit("phase.started", dep, phase="delay", message=f"waiting {delay:g}s before the switch")
        time.sleep(delay)
    rt.emit("phase.started", dep, phase="switch", release=plan.release, message=f"switching to {plan.idle_slot}",
            data={"old_slot": plan.live_slot, "new_slot": plan.idle_slot})
    shift_or_abort(rt, dep, plan, Split.all_to(plan.idle_slot))
    return promote(rt, dep, plan, urls, keep_old, health_timeout, watch=watch, provider=provider)


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome dict whether it promoted or not (for the CLI)."""
    return run_flow(blue_green, **params)


__all__ = ["blue_green", "run"]
