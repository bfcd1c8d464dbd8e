"""Facts about local processes from /proc: alive (zombies count as dead), start time, children."""

from __future__ import annotations

import os

__all__ = ["pid_alive", "start_ticks", "process_started_at", "children_of", "parent_of"]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # fields after the command name
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (identifies one incarnation of a PID)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_started_at(pid: int) -> float | None:
    """When `pid` started, in seconds since the epoch (comparable with file mtimes); None when gone."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int | None:
    """The parent PID of `pid`; None when it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


def children_of(parent: int) -> set[int]:
    """PIDs whose parent is `parent` (empty when it is gone).

    Read from the kernel's per-thread `children` lists: a few reads instead of one per process on the
    machine, which matters in a process whose other threads hold the GIL (a load generator in a
    benchmark made a full scan take seconds). Kernels without those files get the full scan.
    """
    if parent <= 0 or not os.path.isdir(f"/proc/{parent}"):
        return set()
    try:
        found: set[int] = set()
        for tid in os.listdir(f"/proc/{parent}/task"):
            with open(f"/proc/{parent}/task/{tid}/children") as f:
                found.update(int(p) for p in f.read().split())
        return found
    except FileNotFoundError:
        if not os.path.isdir(f"/proc/{parent}"):
            return set()
    except (OSError, ValueError):
        return set()
    return _scan_children(parent)


def _scan_children(parent: int) -> set[int]:
    """`children_of` by reading every process's stat (kernels without CONFIG_PROC_CHILDREN)."""
    return {int(e) for e in os.listdir("/proc") if e.isdigit() and parent_of(int(e)) == parent}
