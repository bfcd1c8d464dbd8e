"""Crash points for the tests: `TURNOUT_CRASH_AT=<point>[,<point>...]` SIGKILLs the process there.

The points sit between the steps whose order matters for crash recovery (the ledger's intent is
written, the router changed, the verification done, ...). Unset in production; the only effect of
the variable is to kill this process, which is what a machine failure does anyway.
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point", "POINTS"]

POINTS = (
    "start:done",            # the release is started in the idle slot, nothing routed to it yet
    "shift:before-apply",    # the intent to shift is in the ledger, the router untouched
    "shift:applied",         # the router changed, not verified yet
    "shift:verified",        # verified, the ledger not yet told
    "analysis",              # a canary stage is being measured
    "post-switch",           # all traffic moved, post-switch checks not run
    "watch",                 # the watch after a promotion is running
)


def crash_point(name: str, qualifier: str = "") -> None:
    """SIGKILL this process when `name` (or `name@qualifier`, e.g. `shift:applied@stage`) is asked for."""
    wanted = os.environ.get("TURNOUT_CRASH_AT")
    if not wanted:
        return
    asked = {w.strip() for w in wanted.split(",")}
    if name in asked or (qualifier and f"{name}@{qualifier}" in asked):
        os.kill(os.getpid(), signal.SIGKILL)
