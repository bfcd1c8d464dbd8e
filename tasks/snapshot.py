"""Before a rollback stops a failing slot: keep what is needed to find out why it failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from turnout.models import utcnow
from turnout.runtime import Runtime


@task(name="snapshot-failing-slot", cache_policy=NO_CACHE)
def snapshot_slot(
    rt: Runtime, deployment_id: int, slot: str, release: str | None, why: str, *, evidence: dict[str, Any] | None = None
) -> Path:
    """Save the slot's last output, its raw /metrics and the trigger's evidence under `incidents/`.

    Best effort by design: a dead process has no /metrics, and that is written down rather than
    delaying the rollback. Returns the incident directory.
    """
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    folder = rt.environment.state_dir / "incidents" / f"deployment-{deployment_id}-{slot}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        logs = rt.target.logs(slot, 500)
    except Exception as e:
        logs = f"(could not read the slot's output: {e})"
    (folder / "output.log").write_text(logs or "(the slot wrote no output)\n")
    scraped = []
    for addr in rt.target.endpoints(slot):
        try:
            r = httpx.get(f"http://{addr}/metrics", timeout=1.0)
            scraped.append(f"# {addr}: HTTP {r.status_code}\n{r.text}")
        except httpx.HTTPError as e:
            scraped.append(f"# {addr}: unreachable ({type(e).__name__}: {e})\n")
    (folder / "metrics.txt").write_text("\n".join(scraped))
    try:
        status = rt.target.status(slot).model_dump()
    except Exception as e:
        status = {"error": str(e)}
    split = rt.router.get_split()
    summary = {
        "deployment_id": deployment_id,
        "slot": slot,
        "release": release,
        "why": why,
        "at": utcnow().isoformat(),
        "target_status": status,
        "split": split.as_dict() if split else None,
        "evidence": evidence or {},
    }
    (folder / "incident.json").write_text(json.dumps(summary, indent=2, default=str))
    get_run_logger().info("saved what slot %s (%s) left behind to %s", slot, release, folder)
    rt.emit(
        "incident.saved",
        deployment_id,
        release=release,
        message=f"slot {slot} snapshot saved to {folder}",
        data={"slot": slot, "path": str(folder)},
    )
    return folder
