"""Process-table helpers the routers and targets rely on, against real processes."""

from __future__ import annotations

import subprocess
import sys
import time

from turnout.procs import _scan_children, children_of, parent_of

SPAWN_THREE = """
import subprocess, sys, threading
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(3)]
threading.Thread(target=lambda: kids.append(subprocess.Popen(["sleep", "30"])), daemon=True).start()
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
for k in kids:
    k.kill()
"""


def test_children_of_finds_every_child_also_those_a_thread_started():
    parent = subprocess.Popen(
        [sys.executable, "-c", SPAWN_THREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)  # the thread's child: forked from a thread other than the main one
        kids = {int(p) for p in parent.stdout.readline().split()}
        found = children_of(parent.pid)
        assert len(found) == 4 and kids <= found, (kids, found)
        assert found == _scan_children(parent.pid)
        assert {parent_of(k) for k in found} == {parent.pid}
    finally:
        parent.communicate("", timeout=10)
    assert children_of(parent.pid) == set() and parent_of(parent.pid) is None
    assert children_of(0) == set()
