"""Fault injection through the broadcast hook: SIGKILL a slot's processes at a chosen phase.

TURNOUT_FAULT="<phase>:<old|new>[,<phase>:<old|new>…]" kills that slot when the event
`phase.started` for <phase> arrives: "switch:old" kills the live slot just before traffic moves,
"post-switch:new" kills the new release right after the switch.
"""

import os
import signal

import turnout
from turnout.models import DeploymentEvent

_done: set[str] = set()


@turnout.hookimpl
def deployment_event(event: DeploymentEvent) -> None:
    if event.kind != "phase.started":
        return
    for spec in filter(None, os.environ.get("TURNOUT_FAULT", "").split(",")):
        phase, which = spec.split(":")
        if event.phase != phase or spec in _done:
            continue
        slot = event.data.get(f"{which}_slot") or (event.data.get("slot") if which == "new" else None)
        if slot is None:
            continue
        from turnout.runtime import open_runtime

        target = open_runtime(event.environment, os.environ.get("TURNOUT_CONFIG_DIR"), check=False).target
        for rec in target._records(slot):
            os.kill(rec["pid"], signal.SIGKILL)
        _done.add(spec)
