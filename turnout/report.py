"""The deployment report: markdown built from the ledger's record of one deployment.

Free text in it (reasons, error messages, check details) is escaped, so a reason holding markup or
newlines shows as written instead of adding HTML, headings or table rows to the report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from turnout.escape import code_fence
from turnout.escape import markdown_text as md

__all__ = ["render_markdown", "report_path"]


def report_path(state_dir: Path, deployment_id: int, started_at: datetime, suffix: str = ".md") -> Path:
    """Where deployment N's report (`.md`) or chart (`.svg`) goes: `<state_dir>/reports/deployment-N<suffix>`.

    When a `deployment-N.md` written before this deployment started is already there, it belongs to
    an earlier ledger (the ledger was moved aside and numbering began again): it is never overwritten,
    and this deployment's files take its start time in their name instead.
    """
    reports = state_dir / "reports"
    plain = reports / f"deployment-{deployment_id}.md"
    started = started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)
    try:
        older = plain.stat().st_mtime < started.timestamp()
    except FileNotFoundError:
        older = False
    stem = f"deployment-{deployment_id}-{started:%Y%m%dT%H%M%S}" if older else f"deployment-{deployment_id}"
    return reports / f"{stem}{suffix}"


def _fmt_time(t: Any) -> str:
    return t.strftime("%H:%M:%S.%f")[:-3] if t else "-"


def render_markdown(dep: dict[str, Any], plan: dict[str, Any] | None = None) -> str:
    """A markdown report: outcome, timings, every action and every gate verdict with evidence."""
    took = ""
    if dep.get("finished_at") and dep.get("started_at"):
        took = f" in {(dep['finished_at'] - dep['started_at']).total_seconds():.1f}s"
    lines = [
        f"# {dep['strategy']} #{dep['id']}: {dep['release']} → {dep['environment']}",
        "",
        f"**Outcome: {dep['status']}**{took}" + (f" — {md(dep['reason'])}" if dep.get("reason") else ""),
        "",
        f"- from: {dep.get('from_release') or '(nothing)'} in slot {dep.get('from_slot') or '-'}",
        f"- to: {dep['release']} in slot {dep.get('to_slot') or '-'}",
        "",
        "## Actions",
        "",
        "| # | phase | action | state | started | finished | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in dep.get("actions", []):
        detail = a["result"].get("error") or json.dumps({**a["intent"], **a["result"]}, default=str)[:160]
        lines.append(
            f"| {a['id']} | {a['phase']} | {a['name']} | {a['state']} | {_fmt_time(a['started_at'])} "
            f"| {_fmt_time(a['finished_at'])} | {md(detail)} |"
        )
    lines += ["", "## Gate verdicts", "", "| gate | phase | outcome | reason |", "|---|---|---|---|"]
    for v in dep.get("verdicts", []):
        lines.append(f"| {md(v['gate'])} | {v['phase']} | {v['outcome']} | {md(v['reason'])} |")
    for v in dep.get("verdicts", []):
        checks = v["evidence"].get("checks")
        if checks:
            lines += [
                "",
                f"### {md(v['gate'])} at {v['phase']}: last checks",
                "",
                "| url | status | seconds | ok |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {md(c['url'])} | {c['status']} | {c['seconds']} | {'yes' if c['ok'] else 'no: ' + md(c['why'])} |"
                for c in checks
            ]
    if plan:
        text = json.dumps(plan, indent=2, default=str)
        lines += ["", "## Plan", "", code_fence(text) + "json", text, code_fence(text)]
    return "\n".join(lines) + "\n"
