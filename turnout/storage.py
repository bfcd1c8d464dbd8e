"""Whether turnout can write where it keeps its state, and how to say so when it cannot.

A read-only state directory or a full disk is found before a run starts (exit 2, nothing touched);
the same fault in the middle of a run leaves the environment's state unknown (exit 3), and the
message says what to run next.
"""

from __future__ import annotations

import os
from pathlib import Path

from turnout.errors import UnsafeState

__all__ = ["MIN_FREE_BYTES", "storage_problem", "midrun_failure"]

# A run writes ledger rows, the router's config, slot logs and a report: a few hundred KiB at most.
# Less than this free means a write would fail part-way, so the run is refused before it starts.
MIN_FREE_BYTES = 1 << 20


def storage_problem(path: Path) -> str | None:
    """Why directory `path` (or its nearest existing parent) cannot take a run's writes, or None. Writes nothing."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError as e:
        return f"{p} cannot be examined: {e.strerror}"
    if st.f_flag & os.ST_RDONLY:
        return f"{p} is on a read-only filesystem"
    if not os.access(p, os.W_OK):
        return f"{p} is not writable by this user"
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        return f"only {free // 1024} KiB free on the filesystem of {p} (a run needs {MIN_FREE_BYTES >> 20} MiB)"
    return None


def midrun_failure(err: BaseException, environment: str, state_dir: Path | None) -> UnsafeState:
    """An OSError or database error that stopped a run part-way, as one line saying what to do (exit 3)."""
    if isinstance(err, OSError):
        what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    else:  # a database driver's error: its first line, without SQLAlchemy's statement and parameters
        what = "ledger: " + (str(getattr(err, "orig", None) or err).strip().splitlines() or ["?"])[0]
    problem = storage_problem(state_dir) if state_dir else None
    return UnsafeState(
        f"the run stopped part-way: {what}"
        + (f" ({problem})" if problem else "")
        + f"; the state of {environment} is not known: fix that, then run "
        f"`turnout recover -e {environment}` (`turnout status -e {environment}` shows the traffic)"
    )
