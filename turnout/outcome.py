"""Ending a deployment: record the outcome, report it, tell everyone, and fail the flow run if needed."""

from __future__ import annotations

from typing import Any

from turnout.errors import EXIT_ABORTED, EXIT_OK, EXIT_UNSAFE
from turnout.report import render_markdown

__all__ = ["DeploymentFailed", "finish", "EXIT_BY_OUTCOME"]

EXIT_BY_OUTCOME = {"promoted": EXIT_OK, "aborted": EXIT_ABORTED, "rolled-back": EXIT_ABORTED, "failed": EXIT_UNSAFE,
                   "dry-run": EXIT_OK, "recovered": EXIT_OK, "migrated": EXIT_OK}


class DeploymentFailed(Exception):
    """Raised at the end of a flow that did not promote, so the Prefect run ends Failed.

    `outcome` is the same dict a promoted run returns.
    """

    def __init__(self, outcome: dict[str, Any]):
        super().__init__(f"{outcome['outcome']}: {outcome['reason']}")
        self.outcome = outcome


def finish(rt, deployment_id: int, status: str, reason: str, plan=None, *, succeeded: bool | None = None,
           extra: str = "") -> dict[str, Any]:
    """Record `status`, publish the report artifact, broadcast the end; raise DeploymentFailed unless it succeeded.

    A deployment succeeds when it is `promoted`; a rollback or a recovery passes `succeeded=True` for its
    own good end (`rolled-back`, `recovered`). `failed` (not known to be safe) is broadcast as urgent.
    `extra` is markdown appended to the report (e.g. where an incident snapshot was saved).
    """
    ok = status == "promoted" if succeeded is None else succeeded
    rt.ledger.finish_deployment(deployment_id, status, reason)
    dep = rt.ledger.deployment(deployment_id)
    report = render_markdown(dep, plan.as_dict() if plan else None)
    report_path = rt.environment.state_dir / "reports" / f"deployment-{deployment_id}.md"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    chart = report_path.with_suffix(".svg")
    if chart.is_file():  # a canary's chart, drawn stage by stage beside the report
        report += f"\n## Canary vs stable\n\n![canary vs stable]({chart.name})\n\nchart: {chart}\n"
    if extra:
        report += "\n" + extra.rstrip() + "\n"
    report_path.write_text(report)
    _artifact(rt.name, report, f"{dep['strategy']} {dep['release']}: {status}")
    outcome = {
        "outcome": status, "reason": reason, "deployment_id": deployment_id, "environment": rt.name,
        "release": dep["release"], "slot": dep["to_slot"], "report": str(report_path),
        "exit_code": EXIT_OK if ok else EXIT_BY_OUTCOME[status],
    }
    urgent = status == "failed"
    rt.emit("deployment.finished", deployment_id, release=dep["release"], urgent=urgent,
            message=(f"{status}" + (f": {reason}" if reason else "")
                     + (" -- a human is needed: traffic is not known to be safe" if urgent else "")),
            data={"outcome": status})
    if not ok:
        raise DeploymentFailed(outcome)
    return outcome


def _artifact(env: str, markdown: str, description: str) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        key = "turnout-" + "".join(c if c.isalnum() else "-" for c in env.lower()) + "-report"
        # _sync: the flows are async, and inside them this would otherwise return an un-awaited coroutine
        create_markdown_artifact(markdown, key=key, description=description, _sync=True)
    except Exception:  # an artifact is a courtesy; the report file and the ledger are the record
        pass
