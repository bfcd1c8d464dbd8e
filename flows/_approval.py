"""Hold a canary for a human: pause the Prefect flow run with an approval form, or `turnout canary --promote`.

The flow run is Paused with a `PromotionDecision` form, so the Prefect UI shows a Resume button that asks
"approve?", who and why. Two other things can end the wait, and both go through the same door (a resume of
the run) so that there is a single place the decision arrives:

- `turnout canary --promote` writes a request into the ledger (it needs no access to the Prefect API);
- the canary process dying while it waits (nothing to promote any more).

A watcher thread in the flow's own process sees those and resumes the run with the matching answer.
No answer within the timeout never promotes.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prefect.input import RunInput
from pydantic import Field

from turnout.signals import Interrupted

__all__ = ["PromotionDecision", "Answer", "wait_for_approval"]


class PromotionDecision(RunInput):
    """The form the Prefect UI shows on Resume."""

    approved: bool = Field(description="Continue the ramp to 100%? Leave unticked to abort the canary.")
    approver: str = Field("", description="Who decided (for the ledger and the report)")
    comment: str = Field("", description="Why")


@dataclass(frozen=True)
class Answer:
    """How the wait ended: approved or not, by whom, and why."""

    approved: bool
    approver: str
    comment: str


def wait_for_approval(rt, dep: int, slot: str, *, timeout: float, description: str, poll: float = 0.5) -> Answer:
    """Pause this flow run until it is resumed (UI, `turnout canary --promote`, canary death) or `timeout`.

    Returns the answer; a timeout is an answer too (not approved). Must run inside a flow run.
    """
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("wait_for_approval must run inside a flow run")
    run_id = ctx.flow_run.id
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch,
        args=(rt, dep, slot, run_id),
        kwargs=dict(deadline=deadline, timeout=timeout, stop=stop, poll=poll),
        daemon=True,
        name=f"turnout-approval-{dep}",
    )
    watcher.start()
    try:
        form = PromotionDecision.with_initial_data(description=description, approved=False, approver="", comment="")
        # Prefect's own pause timeout is only a backstop: past it the server fails the run, so the watcher
        # answers "not approved" at `timeout` and the flow can still put traffic back and report.
        decision = _pause(form, int(timeout) + 60, key=f"promote-{dep}")
    except Interrupted as e:
        # the pause waits in a helper thread: answer it, so the process can end once traffic is safe
        _answer_interrupted(run_id, str(e))
        raise
    except FlowPauseTimeout:
        return Answer(False, "", f"no promotion within {timeout:g}s: a canary is never promoted by waiting")
    finally:
        stop.set()
        watcher.join(timeout=5)
    return Answer(bool(decision.approved), decision.approver or "someone in the Prefect UI", decision.comment or "")


def _pause(form, timeout: int, key: str):
    """`apause_flow_run` on its own event loop in a helper thread, with this flow run's context.

    The deployment flows are async but run their steps as plain blocking code, so the pause cannot be
    awaited here, and Prefect's sync variant cannot save the input form from inside an async flow.
    """
    from prefect.flow_runs import apause_flow_run

    ctx = contextvars.copy_context()
    pool = ThreadPoolExecutor(1, thread_name_prefix="turnout-pause")
    try:
        return pool.submit(
            ctx.run, asyncio.run, apause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=1, key=key)
        ).result()
    finally:
        pool.shutdown(wait=False)  # interrupted: never wait here for a pause that may last an hour


def _answer_interrupted(run_id, why: str, tries: int = 20) -> None:
    """Resume the paused run with "not approved" (a signal stopped the canary); retried while it is not paused yet."""
    answer = {"approved": False, "approver": "turnout", "comment": f"{why}: the canary is aborted"}
    for _ in range(tries):
        if _resume(run_id, answer):
            return
        time.sleep(0.25)


def _watch(
    rt, dep: int, slot: str, run_id, *, deadline: float, timeout: float, stop: threading.Event, poll: float
) -> None:
    """Turn a ledger promotion request, a dead canary or the deadline into a resume of the paused run."""
    answer = None
    while not stop.wait(poll):
        try:
            if time.monotonic() >= deadline:
                answer = {
                    "approved": False,
                    "approver": "turnout",
                    "comment": f"no promotion within {timeout:g}s: a canary is never promoted by waiting",
                }
            elif asked := rt.ledger.rollback_requested(dep):
                answer = {"approved": False, "approver": "turnout", "comment": f"rollback requested: {asked}"}
            elif rt.ledger.promotion_requested(dep):
                answer = {"approved": True, "approver": "turnout canary --promote", "comment": ""}
            else:
                st = rt.target.status(slot)
                if not st.running:
                    answer = {
                        "approved": False,
                        "approver": "turnout",
                        "comment": f"the canary stopped running while waiting for promotion: {st.detail or st.state}",
                    }
        except Exception:  # a transient read error must not end the wait; try again next poll
            continue
        if answer and _resume(run_id, answer):
            return


def _resume(run_id, answer: dict) -> bool:
    """Resume the paused run with `answer`; False when it is not paused (yet) or the API refused: try again.

    When someone resumed it first (the UI), the flow stops this watcher itself.
    """
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        if state is None or not state.is_paused():
            return False
        # prefect's async_dispatch accepts _sync; its type hints do not say so
        resume_flow_run(run_id, run_input=answer, _sync=True)  # type: ignore[call-arg]
        return True
    except Exception:
        return False
