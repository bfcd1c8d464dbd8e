"""SIGINT and SIGTERM during a run: stop the way an abort does, never half-way through a change.

A deployment interrupted by Ctrl-C, `kill`, a CI job's timeout or a Prefect worker cancelling it must end
like an abort: traffic back on the safe slot, the new slot stopped, the ledger true, the lock released.
Python's default (KeyboardInterrupt) and Prefect's own SIGTERM handler (TerminationSignal) both unwind
the stack at an arbitrary point, and asyncio's SIGINT handler only cancels the flow's task, which a
blocking step ignores until it returns (a health gate could hold it for minutes).

`interruptible()` installs handlers for the life of a run (main thread only: Python delivers signals
there) that raise `Interrupted`, a BaseException so that no `except Exception` on the way swallows it.
`shielded()` marks a change that must not be cut in half (a router reload, a process start or stop): a
signal that arrives inside it is held and raised when it ends. Once a run is stopping, further signals
only print a line: the cleanup that makes traffic safe is never interrupted by a second Ctrl-C
(SIGKILL still works, and `turnout recover` finishes the job after it).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupted", "interruptible", "shielded", "cleaning_up", "stopping"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was asked to stop by a signal; `signal` is its name (SIGINT, SIGTERM)."""

    def __init__(self, name: str):
        super().__init__(f"interrupted by {name}")
        self.signal = name


_state: dict[str, Any] = {"active": 0, "stopping": False, "shield": 0, "pending": None}


def stopping() -> bool:
    """True once a signal asked this run to stop (the cleanup is running)."""
    return bool(_state["stopping"])


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _state["stopping"]:
        sys.stderr.write(
            f"turnout: {name}: already stopping safely (traffic first); SIGKILL abandons the run, "
            "then `turnout recover` finishes it\n"
        )
        return
    if _state["shield"]:
        _state["pending"] = name  # raised when the change in progress is complete
        return
    _state["stopping"] = True
    raise Interrupted(name)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT/SIGTERM raise `Interrupted` inside this block (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _handler)
    _state["active"] += 1
    try:
        yield
    finally:
        _state["active"] -= 1
        if not _state["active"]:
            for s, h in previous.items():
                signal.signal(s, h)
            _state.update(stopping=False, shield=0, pending=None)


@contextmanager
def shielded() -> Iterator[None]:
    """A change that must complete: a signal inside it is raised as `Interrupted` when it ends."""
    _state["shield"] += 1
    try:
        yield
    finally:
        _state["shield"] -= 1
        pending = _state["pending"]
        if pending and not _state["shield"] and not _state["stopping"]:
            _state["pending"] = None
            _state["stopping"] = True
            raise Interrupted(pending)


@contextmanager
def cleaning_up() -> Iterator[None]:
    """The steps that make traffic safe after a failure: signals inside only print a line."""
    before = _state["stopping"]
    _state["stopping"] = True
    try:
        yield
    finally:
        _state["stopping"] = before
