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
from functools import partial
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from turnout.database.connect import open_database
from turnout.flows._inputs import RunInputs, blue_green_inputs
from turnout.flows._run import run_flow
from turnout.flows._steps import (
    check_new_series,
    locked_run,
    promote,
    rollback_asked,
    shift_or_abort,
    start_and_gate,
)
from turnout.models import Release, Split
from turnout.outcome import flow_result
from turnout.plan import BlueGreenPlan, plan_blue_green
from turnout.runtime import open_runtime


@flow(name="blue-green", validate_parameters=True)
async def blue_green(
    environment: Annotated[
        str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="deployments/<environment>.toml")
    ],
    image: Annotated[Release, Field(description="The release to deploy, e.g. demo:v2")],
    config_dir: str | None = None,
    *,
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
    because Prefect 3.9 ends a sync flow by joining a heartbeat thread that sleeps in 1 s steps
    (`flow_engine._send_heartbeats`: about 1 s per run); its tasks are plain sync calls, run one after another.
    """
    if dry_run:
        return _dry_run(environment, image, config_dir)
    inputs = blue_green_inputs(
        environment,
        image,
        config_dir,
        health_check_timeout=health_check_timeout,
        traffic_switch_delay=traffic_switch_delay,
        keep_old=keep_old,
        watch=watch,
    )
    try:
        return flow_result(
            locked_run(inputs.rt, "blue-green", inputs.release, inputs.ledger_options(), partial(_deploy, inputs))
        )
    finally:
        inputs.rt.close()


def _dry_run(environment: str, image: str, config_dir: str | None) -> dict[str, Any]:
    """The plan, with nothing changed: what `turnout blue-green --dry-run` prints too."""
    rt = open_runtime(environment, config_dir)
    try:
        if rt.environment.database is not None:
            open_database(rt.environment)  # no Alembic project or a database that does not answer: exit 2
        out = plan_blue_green(rt, image).dry_run()
        get_run_logger().info("dry run, nothing changed:\n%s", out["text"])
        return out
    finally:
        rt.close()


def _deploy(inputs: RunInputs, dep: int, plan: BlueGreenPlan) -> dict[str, Any]:
    rt, delay = inputs.rt, inputs.traffic_switch_delay
    urls = start_and_gate(rt, dep, plan, inputs.health_check_timeout)
    if inputs.provider is not None and plan.live_slot:
        check_new_series(rt, dep, plan, inputs.provider)
    if delay > 0:
        rt.emit("phase.started", dep, phase="delay", message=f"waiting {delay:g}s before the switch")
        end = time.monotonic() + delay
        while time.monotonic() < end:  # `turnout rollback` during the delay stops the run before the switch
            rollback_asked(rt, dep, plan, "before the switch")
            time.sleep(min(0.25, max(0.0, end - time.monotonic())))
    rollback_asked(rt, dep, plan, "before the switch")
    rt.emit(
        "phase.started",
        dep,
        phase="switch",
        release=plan.release,
        message=f"switching to {plan.idle_slot}",
        data={"old_slot": plan.live_slot, "new_slot": plan.idle_slot},
    )
    shift_or_abort(rt, dep, plan, Split.all_to(plan.idle_slot))
    return promote(inputs, dep, plan, urls=urls)


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome dict whether it promoted or not (for the CLI)."""
    return run_flow(blue_green, **params)


__all__ = ["blue_green", "run"]
