"""Fault injection through the broadcast hook: kill a slot's processes at a chosen phase.

TURNOUT_FAULT="<phase>:<old|new>" kills that slot when the event `phase.started` for <phase>
arrives (e.g. "switch:old" kills the live slot just before traffic moves).
"""

import os
import signal

import turnout
from turnout.models import DeploymentEvent

_done = set()


@turnout.hookimpl
def deployment_event(event: DeploymentEvent) -> None:
    spec = os.environ.get("TURNOUT_FAULT", "")
    if not spec or event.kind != "phase.started" or spec in _done:
        return
    phase, which = spec.split(":")
    if event.phase != phase:
        return
    from turnout.runtime import open_runtime

    rt = open_runtime(event.environment, check=False)
    slot = event.data.get("old_slot" if which == "old" else "new_slot") or event.data.get("slot")
    if slot is None:
        return
    for rec in rt.target._records(slot):
        os.kill(rec["pid"], signal.SIGKILL)
    _done.add(spec)
