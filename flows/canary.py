"""The canary flow: the new release takes a growing share of live traffic, judged at every stage.

    start in idle slot ─► pre-traffic health ─► for each stage: shift weight ─► verify
       ─► analyse (canary vs stable, window by window) ─► next stage | abort
       ─► (without auto-promote: after the first stage, pause for approval: the Prefect UI's Resume
           form or `turnout canary --promote`)
       ─► 100% ─► post-switch health ─► watch (stable slot warm) ─► promoted / rolled back

Abort at any stage puts 100% back on the stable slot, verified, and stops the canary (exit 1).
Inconclusive or erroring measurements past their limits abort; they never promote.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from turnout.chart import write_canary_chart
from turnout.flows._approval import wait_for_approval
from turnout.flows._inputs import RunInputs, canary_inputs
from turnout.flows._run import run_flow
from turnout.flows._steps import (
    check_new_series,
    locked_run,
    promote,
    rollback_asked,
    shift_or_abort,
    start_and_gate,
    switch_back,
)
from turnout.models import Outcome, Phase, Release, Split, Verdict
from turnout.outcome import RunEnded, finish, flow_result
from turnout.plan import BlueGreenPlan
from turnout.report import report_path
from turnout.runtime import Runtime
from turnout.tasks.analysis import analyse_stage


@flow(name="canary", validate_parameters=True)
async def canary(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    image: Annotated[Release, Field(description="The release to deploy, e.g. demo:v2")],
    config_dir: str | None = None,
    *,
    ramp_stages: list[int] | None = None,
    duration: Annotated[float | None, Field(gt=0, description="Seconds per stage")] = None,
    interval: Annotated[float | None, Field(gt=0, description="Seconds per measurement")] = None,
    auto_promote: bool = False,
    promote_now: bool = False,
    approval_timeout: Annotated[float, Field(gt=0)] = 3600.0,
    health_check_timeout: Annotated[float | None, Field(gt=0)] = None,
    keep_old: bool = False,
    watch: Annotated[float | None, Field(ge=0, description="Seconds to watch after promotion; 0 skips")] = None,
) -> dict[str, Any]:
    """Ramp `image` through the stages, judging each on live metrics; returns the outcome.

    `auto_promote`: every passing stage moves on. Otherwise the flow waits after the first stage for
    `turnout canary --promote` (up to `approval_timeout`; then it aborts). `promote_now`: after the
    first analysis passes go straight to 100. Raises DeploymentFailed when aborted or failed.
    """
    inputs = canary_inputs(
        environment,
        image,
        config_dir,
        ramp_stages=ramp_stages,
        duration=duration,
        interval=interval,
        auto_promote=auto_promote,
        promote_now=promote_now,
        approval_timeout=approval_timeout,
        health_check_timeout=health_check_timeout,
        keep_old=keep_old,
        watch=watch,
    )
    try:
        return flow_result(
            locked_run(inputs.rt, "canary", inputs.release, inputs.ledger_options(), partial(_ramp, inputs))
        )
    finally:
        inputs.rt.close()


def _ramp(inputs: RunInputs, dep: int, plan: BlueGreenPlan) -> dict[str, Any]:
    rt, provider, judge = inputs.rt, inputs.provider, inputs.judge
    assert inputs.canary is not None and judge is not None  # canary_inputs resolves both
    cfg, auto_promote = inputs.canary, inputs.auto_promote
    logger = get_run_logger()
    stable, new, release = plan.live_slot, plan.idle_slot, plan.release
    if stable is None:  # live when the inputs were checked; a recovery under the lock took it off since
        raise RunEnded(finish(rt, dep, "aborted", "nothing is live to compare a canary with; traffic untouched", plan))
    urls = start_and_gate(rt, dep, plan, inputs.health_check_timeout)
    check_new_series(rt, dep, plan, provider)
    progress = _progress_artifact(rt.name)
    table: list[dict] = []
    steps = [w for w in cfg.stages if w < 100]
    for n, weight in enumerate(steps, 1):
        rt.emit(
            "phase.started",
            dep,
            phase="stage",
            release=release,
            message=f"stage {n}/{len(cfg.stages)}: {weight}% of traffic to {release} in slot {new}",
            data={"weight": weight, "old_slot": stable, "new_slot": new},
        )
        rollback_asked(rt, dep, plan, f"before stage {weight}%")
        shift_or_abort(rt, dep, plan, Split.canary(stable, weight), phase="stage")
        decision, rows = analyse_stage(
            rt,
            dep,
            provider,
            judge,
            stable=stable,
            canary=new,
            release=release,
            weight=weight,
            config=cfg,
            duration=cfg.duration,
        )
        table += rows
        _table_artifact(rt.name, table)
        _chart(rt, dep, table)
        if decision.outcome is not Outcome.PASS:
            raise RunEnded(switch_back(rt, dep, plan, f"canary analysis at {weight}%: {decision.reason}"))
        _update_progress(progress, 100 * n / len(cfg.stages))
        logger.info("stage %s%% passed: %s", weight, decision.reason)
        if inputs.promote_now or rt.ledger.promotion_requested(dep):
            break
        if n == 1 and not auto_promote and len(steps) > 1:
            _wait_for_promotion(rt, dep, plan, inputs.approval_timeout, weight)
            auto_promote = True  # a promotion continues the ramp
    rt.emit(
        "phase.started",
        dep,
        phase="switch",
        release=release,
        message=f"promoting: 100% to slot {new}",
        data={"old_slot": stable, "new_slot": new},
    )
    rollback_asked(rt, dep, plan, "before the promotion")
    shift_or_abort(rt, dep, plan, Split.all_to(new))
    _update_progress(progress, 100)
    return promote(inputs, dep, plan, urls=urls)


def _wait_for_promotion(rt: Runtime, dep: int, plan, timeout: float, weight: int) -> None:
    """Hold the canary at `weight`% until approved (Prefect UI or `turnout canary --promote`); else RunEnded."""
    where = _run_url()
    rt.emit(
        "phase.started",
        dep,
        phase="approval",
        release=plan.release,
        message=f"waiting for promotion: run `turnout canary --promote --environment {rt.name}`"
        + (f" or approve in the Prefect UI ({where})" if where else "")
        + f"; the canary stays at {weight}% for up to {timeout:g}s",
    )
    description = (
        f"**Promote {plan.release} in {rt.name}?** The canary passed its analysis at {weight}% "
        f"(deployment #{dep}). Tick *approved* to continue the ramp to 100%, leave it unticked "
        f"to abort and put all traffic back on {plan.live_slot}."
    )
    answer = wait_for_approval(rt, dep, plan.idle_slot, timeout=timeout, description=description)
    rt.ledger.record_verdict(
        dep,
        Verdict(
            gate="approval",
            phase=Phase.STEP,
            outcome=Outcome.PASS if answer.approved else Outcome.FAIL,
            reason=f"{'approved' if answer.approved else 'not approved'} by {answer.approver or 'nobody'}"
            + (f": {answer.comment}" if answer.comment else ""),
            evidence={"approver": answer.approver, "comment": answer.comment, "weight": weight},
        ),
    )
    if not answer.approved:
        why = answer.comment or f"promotion rejected by {answer.approver}"
        raise RunEnded(
            switch_back(rt, dep, plan, why if answer.approver in ("", "turnout") else f"{why} ({answer.approver})")
        )
    rt.emit(
        "phase.started", dep, phase="approval", message=f"promotion approved by {answer.approver}: continuing the ramp"
    )


def _run_url() -> str:
    """The flow run's page in the Prefect UI, when there is a UI to go to."""
    try:
        from prefect.context import FlowRunContext
        from prefect.settings import PREFECT_UI_URL

        ui = PREFECT_UI_URL.value()
        run = FlowRunContext.get()
        return f"{ui.rstrip('/')}/runs/flow-run/{run.flow_run.id}" if ui and run and run.flow_run else ""
    except Exception:
        return ""


def _chart(rt: Runtime, dep: int, rows: list[dict]) -> None:
    try:  # a picture is a courtesy: the ledger and the table artifact hold the numbers
        started = (rt.ledger.deployment(dep) or {})["started_at"]  # the report's name: never an earlier ledger's
        write_canary_chart(rows, report_path(rt.environment.state_dir, dep, started, ".svg"))
    except Exception as e:
        get_run_logger().warning("could not draw the canary chart: %s", e)


def _progress_artifact(env: str):
    try:
        from prefect.artifacts import create_progress_artifact

        # prefect's async_dispatch accepts _sync; its type hints do not say so
        return create_progress_artifact(0.0, key=f"turnout-{_key(env)}-canary-progress", _sync=True)  # type: ignore[call-arg]
    except Exception:
        return None


def _update_progress(artifact_id, value: float) -> None:
    if artifact_id is None:
        return
    try:
        from prefect.artifacts import update_progress_artifact

        # prefect's async_dispatch accepts _sync; its type hints do not say so
        update_progress_artifact(artifact_id, progress=value, _sync=True)  # type: ignore[call-arg]
    except Exception:
        pass


def _table_artifact(env: str, rows: list[dict]) -> None:
    try:
        from prefect.artifacts import create_table_artifact

        key, description = f"turnout-{_key(env)}-canary-analysis", "every canary measurement with its verdict"
        # prefect's async_dispatch accepts _sync; its type hints do not say so
        create_table_artifact(rows, key=key, description=description, _sync=True)  # type: ignore[call-arg]
    except Exception:
        pass


def _key(env: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in env.lower())


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome dict whether it promoted or not (for the CLI)."""
    return run_flow(canary, **params)


__all__ = ["canary", "run"]
