"""The CLI's read-only commands stay fast: they never import Prefect."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from conftest import Project


def test_status_and_history_never_import_prefect(project: Project):
    code = (
        "import sys, runpy; sys.argv = ['turnout', %r, '-e', 'staging']\n"
        "try: runpy.run_module('turnout.app.cli', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('PREFECT LOADED' if 'prefect' in sys.modules else 'no prefect')"
    )
    for cmd in ("status", "history"):
        r = subprocess.run([sys.executable, "-c", code % cmd], cwd=project.root, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("no prefect"), r.stdout


def test_status_of_a_fresh_environment_says_so_and_writes_nothing(project: Project):
    for args in (("status",), ("status", "--json"), ("history",), ("history", "--json")):
        r = project.cli(*args, "-e", "staging")
        assert r.returncode == 0, r.stderr
        assert not project.state_dir.exists(), f"{args} wrote {list(project.state_dir.rglob('*'))}"
    assert "nothing deployed yet" in project.cli("status", "-e", "staging").stdout
    assert json.loads(project.cli("status", "-e", "staging", "--json").stdout)["known"] is False
    assert not project.root.joinpath(".turnout").exists()


def test_status_says_when_the_lock_holder_is_gone(project: Project):
    from turnout.ledger import LockRow

    led = project.runtime().ledger
    dep = led.start_deployment("staging", "blue-green", "demo:v2")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with led.session() as s:
        s.add(LockRow(environment="staging", deployment_id=dep, pid=dead.pid, host=socket.gethostname()))
    led.close()
    r = project.cli("status", "-e", "staging")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "in progress" in x)
    assert f"pid {dead.pid}" in line and "gone" in line and "crashed" in line, line
    assert "turnout recover -e staging" in line, line
    live = project.runtime().ledger
    with live.session() as s:  # a live holder is shown as running, without the warning
        s.get(LockRow, "staging").pid = os.getpid()
    live.close()
    line = next(x for x in project.cli("status", "-e", "staging").stdout.splitlines() if "in progress" in x)
    assert f"pid {os.getpid()}" in line and "gone" not in line, line


def test_history_shows_one_row_per_deployment_whatever_the_reason_holds(project: Project):
    led = project.runtime().ledger
    forged = (
        "fine\n#99   2030-01-01 00:00:00 blue-green demo:evil   blue -> green    1.0s promoted  all good"
        "\r\x1b[2Kcleared\u2028<b>bold</b>"
    )
    for release in ("demo:v1", "demo:v2"):
        led.finish_deployment(led.start_deployment("staging", "rollback", release), "rolled-back", forged)
    led.close()
    r = project.cli("history", "-e", "staging")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert len(rows) == 2 and rows[0].startswith("#2 ") and rows[1].startswith("#1 "), rows
    assert not any(c in r.stdout for c in "\r\x1b\u2028")
    assert "\\n#99" in rows[0]  # shown, escaped, on its own row
    st = project.cli("status", "-e", "staging").stdout
    assert "\x1b" not in st and len([x for x in st.splitlines() if "#99" in x]) == 1


def test_demo_help_describes_every_act(project: Project):
    r = project.cli("demo", "--help")
    assert r.returncode == 0
    for n in range(1, 10):
        assert f"{n}." in r.stdout, r.stdout
    for word in ("v1", "v2", "v4", "canary", "v3", "watch", "rollback", "migrat", "ledger"):
        assert word in r.stdout, word


def test_help_lists_the_commands(project: Project):
    r = project.cli("--help")
    for cmd in ("blue-green", "status", "history", "plugins", "validate", "demo"):
        assert cmd in r.stdout
