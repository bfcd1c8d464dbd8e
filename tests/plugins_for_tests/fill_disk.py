"""Fault injection: fill the state directory's filesystem when a phase starts (a disk filling mid-run).

TURNOUT_FILL_DISK_AT="<phase>" writes `<state_dir>/filler` until the filesystem is full when the
event `phase.started` for <phase> arrives. Meant for a state directory on a small tmpfs.
"""

import os

import turnout
from turnout.models import DeploymentEvent

_done: set[str] = set()


@turnout.hookimpl
def deployment_event(event: DeploymentEvent) -> None:
    phase = os.environ.get("TURNOUT_FILL_DISK_AT")
    if event.kind != "phase.started" or event.phase != phase or phase in _done:
        return
    _done.add(phase)
    from turnout.config import load_environment

    fill(load_environment(event.environment, os.environ.get("TURNOUT_CONFIG_DIR")).state_dir)


def fill(directory) -> None:
    """Write `<directory>/filler` until its filesystem is full (the tests' Tmpfs.fill uses it too)."""
    with open(os.path.join(directory, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
