"""Crash points for the tests: `TURNOUT_CRASH_AT=<point>[,<point>...]` SIGKILLs the process there.

Every action that changes the world has a point just before it and just after it, named
`<action>:before` / `<action>:after` (`shift` has two more inside: `:applied`, `:verified`). A point
may carry a qualifier, asked for as `<point>@<qualifier>` (the gate phase, the shift's phase, the
migration's revision): `gate:before@post-switch`, `shift:applied@stage`, `migration:after@0002`.
`<point>#N` (or `<point>@<qualifier>#N`) crashes at the N-th time that point is reached, not the first.

`TURNOUT_CRASH_TRACE=<file>` appends every point reached (`name` or `name@qualifier`, one a line) to
the file: the crash matrix runs a flow once with it to learn which points the flow passes, then kills
a fresh run at each. `python -m turnout.faults` lists the points.

Unset in production; the only effect of the variables is to kill this process (what a machine failure
does anyway) or to append to a file a test named.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["crash_point", "POINTS", "ALIASES", "point_names"]

# name -> what has happened when a run is killed there (the qualifier, if any, in brackets)
POINTS: dict[str, str] = {
    "start:before": "the start is in the ledger (intent, slot `starting`), the process not started",
    "start:after": "the release runs in the idle slot, the ledger does not say so yet; nothing routed to it",
    "gate:before": "[phase] the gates of a phase (health included) are about to run",
    "gate:after": "[phase] the gates ran and their verdicts are recorded; the run has not acted on them",
    "shift:before": "[phase] the intent to shift traffic is in the ledger, the router untouched",
    "router-write:before": "the router's new config is rendered, the file not written",
    "router-write:after": "the router's file holds the new split, the router has not loaded it",
    "router-reload:before": "the new file passed the router's config test, the reload is not sent",
    "router-reload:after": "the router was told to reload (or started), not verified",
    "shift:applied": "[phase] the router changed, not verified yet",
    "shift:verified": "[phase] verified through the data path, the ledger not yet told",
    "shift:after": "[phase] the new split is in the ledger",
    "analysis": "a canary stage is being measured",
    "post-switch": "all traffic moved, post-switch checks not run",
    "watch": "the watch after a promotion is running",
    "stop:before": "the stop is in the ledger (intent), the slot's process still runs",
    "stop:after": "the slot's process is stopped, the ledger does not say so yet",
    "backup:before": "the backup is in the ledger (intent), nothing dumped",
    "backup:after": "the backup is taken and proved, the ledger does not say so yet",
    "migration:before": "[revision] the database is at the revision before this migration",
    "migration:after": "[revision] this migration is committed, the next one not started",
    "ledger.start_deployment:before": "the run is about to be recorded (nothing in the ledger yet)",
    "ledger.start_deployment:after": "a `running` row, no action yet",
    "ledger.set_slot:before": "a slot's state is about to be recorded",
    "ledger.set_slot:after": "a slot's state was recorded",
    "ledger.set_split:before": "a verified split is about to be recorded",
    "ledger.set_split:after": "a verified split was recorded",
    "ledger.set_last_known_good:before": "the release is about to become the last known good",
    "ledger.set_last_known_good:after": "the release is the last known good",
    "ledger.mark_release:before": "a release is about to be marked good or bad",
    "ledger.mark_release:after": "a release was marked good or bad",
    "ledger.finish_deployment:before": "the outcome is about to be recorded (the row still `running`)",
    "ledger.finish_deployment:after": "the outcome is recorded, the lock not released yet",
    "ledger.release_lock:before": "the run is over, the lock still held",
    "ledger.release_lock:after": "the lock is released",
}

# the names of the first crash points, still accepted
ALIASES = {
    "start:done": "start:after",
    "shift:before-apply": "shift:before",
    "router:written": "router-write:after",
}

_seen: dict[str, int] = {}


def point_names() -> list[str]:
    """Every crash point's name, in the order of POINTS."""
    return list(POINTS)


def _normal(asked: str) -> str:
    name, at, rest = asked.partition("@")
    name, hash_, count = name.partition("#")
    name = ALIASES.get(name, name)
    return name + hash_ + count + at + rest


def crash_point(name: str, qualifier: str = "") -> None:
    """SIGKILL this process when `name` (or `name@qualifier`, or either with `#N`) is asked for."""
    trace = os.environ.get("TURNOUT_CRASH_TRACE")
    wanted = os.environ.get("TURNOUT_CRASH_AT")
    if not trace and not wanted:
        return
    full = f"{name}@{qualifier}" if qualifier else name
    if trace:
        with open(trace, "a") as f:
            f.write(full + "\n")
    if not wanted:
        return
    counts = {}
    for key in dict.fromkeys((name, full)):
        _seen[key] = _seen.get(key, 0) + 1
        counts[key] = _seen[key]
    for asked in (_normal(w.strip()) for w in wanted.split(",") if w.strip()):
        point, _, nth = asked.partition("#")
        if point in counts and (not nth or (nth.isdigit() and counts[point] == int(nth))):
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    for n, what in POINTS.items():
        sys.stdout.write(f"{n:36} {what}\n")
