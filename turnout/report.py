"""The deployment report: markdown built from the ledger's record of one deployment."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_markdown"]


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
        f"**Outcome: {dep['status']}**{took}" + (f" — {dep['reason']}" if dep.get("reason") else ""),
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
        lines.append(f"| {a['id']} | {a['phase']} | {a['name']} | {a['state']} | {_fmt_time(a['started_at'])} "
                     f"| {_fmt_time(a['finished_at'])} | {detail.replace('|', '/')} |")
    lines += ["", "## Gate verdicts", "", "| gate | phase | outcome | reason |", "|---|---|---|---|"]
    for v in dep.get("verdicts", []):
        lines.append(f"| {v['gate']} | {v['phase']} | {v['outcome']} | {v['reason'].replace('|', '/')} |")
    for v in dep.get("verdicts", []):
        checks = v["evidence"].get("checks")
        if checks:
            lines += ["", f"### {v['gate']} at {v['phase']}: last checks", "", "| url | status | seconds | ok |", "|---|---|---|---|"]
            lines += [f"| {c['url']} | {c['status']} | {c['seconds']} | {'yes' if c['ok'] else 'no: ' + c['why']} |" for c in checks]
    if plan:
        lines += ["", "## Plan", "", "```json", json.dumps(plan, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"
