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

from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows._approval import wait_for_approval
from flows._steps import locked_run, promote, run_flow, shift_or_abort, start_and_gate, switch_back
from tasks.analysis import analyse_stage
from turnout.chart import write_canary_chart
from turnout.config import CanaryConfig
from turnout.errors import ConfigError
from turnout.judge import make_judge
from turnout.models import RELEASE_PATTERN, Outcome, Phase, Split, Verdict, validate_release
from turnout.runtime import Runtime, open_runtime


@flow(name="canary", validate_parameters=True)
async def canary(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    image: Annotated[str, Field(pattern=RELEASE_PATTERN, description="The release to deploy, e.g. demo:v2")],
    config_dir: str | None = None,
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
    validate_release(image)
    rt = open_runtime(environment, config_dir)
    try:
        if rt.environment.database is not None:
            from flows.migrate import open_database

            open_database(rt)  # no Alembic project or a database that does not answer: exit 2, nothing touched
        cfg = rt.environment.canary.override(ramp_stages, duration, interval)
        provider = rt.metrics_provider()
        if rt.router.get_split() is None:
            raise ConfigError(f"nothing is live in {environment} to compare a canary with; "
                              "deploy the first release with `turnout blue-green`")
        seconds = rt.environment.rollback.watch if watch is None else watch
        options = {"stages": cfg.stages, "duration": cfg.duration, "interval": cfg.interval, "judge": cfg.judge,
                   "auto_promote": auto_promote, "promote_now": promote_now, "watch": seconds}
        return locked_run(rt, "canary", image, options, lambda dep, plan: _ramp(
            rt, dep, plan, cfg, provider, auto_promote, promote_now, approval_timeout, health_check_timeout, keep_old,
            seconds))
    finally:
        rt.close()


def _ramp(rt: Runtime, dep: int, plan, cfg: CanaryConfig, provider, auto_promote: bool, promote_now: bool,
          approval_timeout: float, health_timeout: float | None, keep_old: bool, watch: float) -> dict[str, Any]:
    logger = get_run_logger()
    stable, new, release = plan.live_slot, plan.idle_slot, plan.release
    judge = make_judge(cfg, rt.environment.thresholds)
    urls = start_and_gate(rt, dep, plan, health_timeout)
    progress = _progress_artifact(rt.name)
    table: list[dict] = []
    steps = [w for w in cfg.stages if w < 100]
    for n, weight in enumerate(steps, 1):
        rt.emit("phase.started", dep, phase="stage", release=release,
                message=f"stage {n}/{len(cfg.stages)}: {weight}% of traffic to {release} in slot {new}",
                data={"weight": weight, "old_slot": stable, "new_slot": new})
        shift_or_abort(rt, dep, plan, Split.canary(stable, weight), phase="stage")
        decision, rows = analyse_stage(rt, dep, provider, judge, stable=stable, canary=new, release=release,
                                       weight=weight, config=cfg, duration=cfg.duration)
        table += rows
        _table_artifact(rt.name, table)
        _chart(rt, dep, table)
        if decision.outcome is not Outcome.PASS:
            switch_back(rt, dep, plan, f"canary analysis at {weight}%: {decision.reason}")
        _update_progress(progress, 100 * n / len(cfg.stages))
        logger.info("stage %s%% passed: %s", weight, decision.reason)
        if promote_now or rt.ledger.promotion_requested(dep):
            break
        if n == 1 and not auto_promote and len(steps) > 1:
            _wait_for_promotion(rt, dep, plan, approval_timeout, weight)
            auto_promote = True  # a promotion continues the ramp
    rt.emit("phase.started", dep, phase="switch", release=release, message=f"promoting: 100% to slot {new}",
            data={"old_slot": stable, "new_slot": new})
    shift_or_abort(rt, dep, plan, Split.all_to(new))
    _update_progress(progress, 100)
    return promote(rt, dep, plan, urls, keep_old, health_timeout, watch=watch, provider=provider)


def _wait_for_promotion(rt: Runtime, dep: int, plan, timeout: float, weight: int) -> None:
    """Hold the canary at `weight`% until approved (Prefect UI or `turnout canary --promote`); else abort."""
    where = _run_url()
    rt.emit("phase.started", dep, phase="approval", release=plan.release,
            message=f"waiting for promotion: run `turnout canary --promote --environment {rt.name}`"
                    + (f" or approve in the Prefect UI ({where})" if where else "")
                    + f"; the canary stays at {weight}% for up to {timeout:g}s")
    description = (f"**Promote {plan.release} in {rt.name}?** The canary passed its analysis at {weight}% "
                   f"(deployment #{dep}). Tick *approved* to continue the ramp to 100%, leave it unticked "
                   f"to abort and put all traffic back on {plan.live_slot}.")
    answer = wait_for_approval(rt, dep, plan.idle_slot, timeout, description)
    rt.ledger.record_verdict(dep, Verdict(
        gate="approval", phase=Phase.STEP, outcome=Outcome.PASS if answer.approved else Outcome.FAIL,
        reason=f"{'approved' if answer.approved else 'not approved'} by {answer.approver or 'nobody'}"
               + (f": {answer.comment}" if answer.comment else ""),
        evidence={"approver": answer.approver, "comment": answer.comment, "weight": weight}))
    if not answer.approved:
        why = answer.comment or f"promotion rejected by {answer.approver}"
        switch_back(rt, dep, plan, why if answer.approver in ("", "turnout") else f"{why} ({answer.approver})")
    rt.emit("phase.started", dep, phase="approval",
            message=f"promotion approved by {answer.approver}: continuing the ramp")


def _run_url() -> str:
    """The flow run's page in the Prefect UI, when there is a UI to go to."""
    try:
        from prefect.context import FlowRunContext
        from prefect.settings import PREFECT_UI_URL

        ui = PREFECT_UI_URL.value()
        run = FlowRunContext.get()
        return f"{ui.rstrip('/')}/runs/flow-run/{run.flow_run.id}" if ui and run else ""
    except Exception:
        return ""


def _chart(rt: Runtime, dep: int, rows: list[dict]) -> None:
    try:  # a picture is a courtesy: the ledger and the table artifact hold the numbers
        write_canary_chart(rows, rt.environment.state_dir / "reports" / f"deployment-{dep}.svg")
    except Exception as e:
        get_run_logger().warning("could not draw the canary chart: %s", e)


def _progress_artifact(env: str):
    try:
        from prefect.artifacts import create_progress_artifact

        return create_progress_artifact(0.0, key=f"turnout-{_key(env)}-canary-progress", _sync=True)
    except Exception:
        return None


def _update_progress(artifact_id, value: float) -> None:
    if artifact_id is None:
        return
    try:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(artifact_id, progress=value, _sync=True)
    except Exception:
        pass


def _table_artifact(env: str, rows: list[dict]) -> None:
    try:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(rows, key=f"turnout-{_key(env)}-canary-analysis", _sync=True,
                              description="every canary measurement with its verdict")
    except Exception:
        pass


def _key(env: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in env.lower())


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome dict whether it promoted or not (for the CLI)."""
    return run_flow(canary, **params)


__all__ = ["canary", "run"]
