"""Tasks that move traffic through the environment's router."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from turnout.faults import crash_point
from turnout.models import Split
from turnout.runtime import Runtime
from turnout.signals import shielded


@task(name="shift-traffic", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[0.5, 2])
def shift_traffic(rt: Runtime, deployment_id: int, split: Split, phase: str = "switch") -> dict[str, Any]:
    """Apply `split` and verify it took effect; the ledger gets the intent first and the result after.

    `apply` is idempotent, so a retry after a transient failure is safe. Returns the router's
    verification evidence; raises the router's error when the split could not be confirmed.
    """
    logger = get_run_logger()
    before = rt.router.get_split()
    action = rt.ledger.intent(
        deployment_id, phase, "shift-traffic", before=before.as_dict() if before else None, after=split.as_dict()
    )
    rt.emit(
        "phase.started",
        deployment_id,
        phase=phase,
        message=f"shifting traffic to {split}",
        data={"split": split.as_dict()},
    )
    try:
        crash_point("shift:before", phase)
        with shielded():  # a reload is never cut in half by Ctrl-C; the signal is raised once it is done
            rt.router.apply(split, rt.backends())
        crash_point("shift:applied", phase)
        evidence = rt.router.verify(split, rt.backends(), None)
        crash_point("shift:verified", phase)
    except Exception as e:
        rt.ledger.result(action, False, error=str(e), split_now=_split_now(rt))
        raise
    rt.ledger.set_split(rt.name, split)
    rt.ledger.result(action, True, **evidence)
    crash_point("shift:after", phase)
    logger.info("traffic now %s (verified in %ss)", split, evidence.get("seconds"))
    rt.emit(
        "traffic.shifted",
        deployment_id,
        phase=phase,
        message=f"traffic now {split}",
        data={"split": split.as_dict(), "evidence": evidence},
    )
    return evidence


def _split_now(rt: Runtime) -> dict[str, int] | None:
    try:
        s = rt.router.get_split()
        return s.as_dict() if s else None
    except Exception:
        return None
