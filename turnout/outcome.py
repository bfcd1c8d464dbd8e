"""Ending a run: record the outcome, report it, tell everyone, and fail the flow run if needed.

One convention, everywhere:

- `finish` records the end of a run and returns its outcome dict; it never raises. Every step that
  ends a run (`abort_before_switch`, `switch_back`, `make_safe`, `restore_traffic` in
  `flows/_steps.py`) returns that outcome, and its caller returns it.
- Part-way through a deployment, code that must stop the run says so with `raise RunEnded(outcome)`;
  `turnout.flows._steps.locked_run` is the one place that catches it.
- A flow hands its outcome to `flow_result`, which returns it when the run succeeded and otherwise
  raises `DeploymentFailed`, so the Prefect flow run ends Failed.
"""

from __future__ import annotations

from typing import Any

from turnout.errors import EXIT_ABORTED, EXIT_OK, EXIT_UNSAFE
from turnout.report import render_markdown
from turnout.report import report_path as report_file

__all__ = ["DeploymentFailed", "RunEnded", "finish", "flow_result", "EXIT_BY_OUTCOME"]

EXIT_BY_OUTCOME = {
    "promoted": EXIT_OK,
    "aborted": EXIT_ABORTED,
    "rolled-back": EXIT_ABORTED,
    "failed": EXIT_UNSAFE,
    "dry-run": EXIT_OK,
    "recovered": EXIT_OK,
    "migrated": EXIT_OK,
}


class DeploymentFailed(Exception):
    """Raised by `flow_result` at the end of a flow that did not succeed, so the Prefect run ends Failed.

    `outcome` is the same dict a successful run returns.
    """

    def __init__(self, outcome: dict[str, Any]):
        super().__init__(f"{outcome['outcome']}: {outcome.get('reason', '')}")
        self.outcome = outcome


class RunEnded(Exception):
    """A deployment ended part-way; `outcome` is what `finish` recorded. Caught only by `locked_run`."""

    def __init__(self, outcome: dict[str, Any]):
        super().__init__(f"{outcome['outcome']}: {outcome.get('reason', '')}")
        self.outcome = outcome


def flow_result(outcome: dict[str, Any]) -> dict[str, Any]:
    """What a flow returns: `outcome` when its exit code is 0, else raise DeploymentFailed carrying it."""
    if outcome.get("exit_code", EXIT_OK) != EXIT_OK:
        raise DeploymentFailed(outcome)
    return outcome


def finish(
    rt, deployment_id: int, status: str, reason: str, plan=None, *, succeeded: bool | None = None, extra: str = ""
) -> dict[str, Any]:
    """Record `status`, publish the report artifact, broadcast the end; return the outcome dict.

    A deployment succeeds when it is `promoted`; a rollback or a recovery passes `succeeded=True` for its
    own good end (`rolled-back`, `recovered`). `failed` (not known to be safe) is broadcast as urgent.
    `extra` is markdown appended to the report (e.g. where an incident snapshot was saved).
    """
    ok = status == "promoted" if succeeded is None else succeeded
    rt.ledger.finish_deployment(deployment_id, status, reason)
    dep = rt.ledger.deployment(deployment_id)
    report = render_markdown(dep, plan.as_dict() if plan else None)
    report_path = report_file(rt.environment.state_dir, deployment_id, dep["started_at"])
    report_path.parent.mkdir(parents=True, exist_ok=True)
    chart = report_path.with_suffix(".svg")
    if chart.is_file():  # a canary's chart, drawn stage by stage beside the report
        report += f"\n## Canary vs stable\n\n![canary vs stable]({chart.name})\n\nchart: {chart}\n"
    if extra:
        report += "\n" + extra.rstrip() + "\n"
    report_path.write_text(report)
    _artifact(rt.name, report, f"{dep['strategy']} {dep['release']}: {status}")
    outcome = {
        "outcome": status,
        "reason": reason,
        "deployment_id": deployment_id,
        "environment": rt.name,
        "release": dep["release"],
        "slot": dep["to_slot"],
        "report": str(report_path),
        "exit_code": EXIT_OK if ok else EXIT_BY_OUTCOME[status],
    }
    urgent = status == "failed"
    rt.emit(
        "deployment.finished",
        deployment_id,
        release=dep["release"],
        urgent=urgent,
        message=(
            f"{status}"
            + (f": {reason}" if reason else "")
            + (" -- a human is needed: traffic is not known to be safe" if urgent else "")
        ),
        data={"outcome": status},
    )
    return outcome


def _artifact(env: str, markdown: str, description: str) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        key = "turnout-" + "".join(c if c.isalnum() else "-" for c in env.lower()) + "-report"
        # _sync: the flows are async, and inside them this would otherwise return an un-awaited coroutine;
        # prefect's async_dispatch accepts _sync; its type hints do not say so
        create_markdown_artifact(markdown, key=key, description=description, _sync=True)  # type: ignore[call-arg]
    except Exception:  # an artifact is a courtesy; the report file and the ledger are the record
        pass
