"""The process target with the real demo service: start, status, logs, stop, and its refusals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import Project
from turnout.errors import BackendError
from turnout.procs import pid_alive


@pytest.fixture
def target(project: Project):
    return project.runtime().target


def wait_up(url: str, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_start_records_pid_and_logs_and_serves(project, target):
    urls = target.start("blue", "demo:v1")
    assert urls == [f"http://{project.blue}"]
    r = wait_up(urls[0] + "/")
    assert r.headers["x-release"] == "demo:v1" and r.headers["x-slot"] == "blue"
    st = target.status("blue")
    assert st.running and st.release == "demo:v1" and pid_alive(st.pid)
    record = json.loads((project.state_dir / "slots" / "blue" / "replica-0.json").read_text())
    assert record["pid"] == st.pid and record["argv"][-2:] == ["--slot", "blue"]
    assert record["stdout"].endswith("replica-0.out.log") and record["start_ticks"]


def test_the_process_outlives_the_process_that_started_it(project):
    paths = (str(project.root.parent), str(__import__("conftest").ROOT / "tests"))
    code = (
        f"import sys; sys.path[:0]={list(paths)!r}; from conftest import Project; "
        "from turnout.runtime import open_runtime; "
        f"print(open_runtime('staging', {str(project.cdir)!r}, check=False).target.start('green', 'demo:v1'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
    r = wait_up(f"http://{project.green}/")
    assert r.headers["x-release"] == "demo:v1"


def test_stop_terminates_and_forgets(project, target):
    target.start("blue", "demo:v1")
    wait_up(f"http://{project.blue}/")
    pid = target.status("blue").pid
    target.stop("blue")
    assert not pid_alive(pid)
    assert target.status("blue").state == "stopped"
    target.stop("blue")  # idempotent


def test_stop_kills_what_ignores_sigterm(project, target):
    project.write(
        project.toml()
        .replace(
            '"{python}", "-m", "demo_app"',
            '"{python}", "-c", "import signal,time,sys; '
            'signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)", "demo_app"',
        )
        .replace("stop_grace = 5", "stop_grace = 0.5")
    )
    target = project.runtime().target
    target.start("blue", "demo:v1")
    pid = target.status("blue").pid
    time.sleep(0.3)
    target.stop("blue")
    assert not pid_alive(pid)


def test_a_crash_is_reported_with_its_stderr(project, target):
    target.start("blue", "demo:v6")  # v6 exits at start
    deadline = time.monotonic() + 15
    while target.status("blue").running and time.monotonic() < deadline:
        time.sleep(0.1)
    st = target.status("blue")
    assert st.state == "exited" and "exited with code 3" in st.detail and "crashing at start" in st.detail
    assert "crashing at start" in target.logs("blue")


def test_an_address_taken_by_someone_else_is_refused(project, target):
    with socket.socket() as s:
        host, port = project.blue.split(":")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen()
        with pytest.raises(BackendError, match="already in use by a process turnout did not start"):
            target.start("blue", "demo:v1")
    assert target.status("blue").state == "stopped"


def test_a_recycled_pid_is_never_signalled(project, target):
    """A record whose start time does not match the PID's process is not ours: stop leaves it alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        d = project.state_dir / "slots" / "blue"
        d.mkdir(parents=True)
        (d / "replica-0.json").write_text(
            json.dumps(
                {
                    "pid": other.pid,
                    "start_ticks": 1,
                    "release": "demo:v1",
                    "address": project.blue,
                    "stderr": "/dev/null",
                }
            )
        )
        assert target.status("blue").state == "exited"
        target.stop("blue")
        assert other.poll() is None, "turnout signalled a process it did not start"
    finally:
        other.kill()
        other.wait()


def test_a_slot_gets_only_the_environment_its_file_names(project, monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.invalid/T000/SECRET")
    monkeypatch.setenv("APP_DATABASE_URL", "postgresql://app:hunter2@127.0.0.1/app")
    monkeypatch.setenv("APP_FEATURE", "on")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    dump = "import json, os, time; print(json.dumps(dict(os.environ)), flush=True); time.sleep(60)"
    project.write(
        project.toml()
        .replace('"{python}", "-m", "demo_app"', f'"{{python}}", "-c", {json.dumps(dump)}, "demo_app"')
        .replace(
            "stop_grace = 5",
            'stop_grace = 1\npass_env = ["APP_FEATURE", "NOT_SET_ANYWHERE"]\nenv = { GREETING = "hello" }',
        )
    )
    target = project.runtime().target
    target.start("blue", "demo:v1")
    out = project.state_dir / "slots" / "blue" / "replica-0.out.log"
    deadline = time.monotonic() + 15
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    env = json.loads(out.read_text().splitlines()[0])
    target.stop("blue")
    assert "SLACK_WEBHOOK_URL" not in env and "APP_DATABASE_URL" not in env
    assert "hunter2" not in json.dumps(env) and "SECRET" not in json.dumps(env)
    assert env["APP_FEATURE"] == "on" and env["GREETING"] == "hello" and "NOT_SET_ANYWHERE" not in env
    assert env["TURNOUT_SLOT"] == "blue" and env["TURNOUT_RELEASE"] == "demo:v1"
    assert env["PATH"] == os.environ["PATH"] and env["LC_TIME"] == "C.UTF-8"
    allowed = {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "APP_FEATURE", "GREETING", "TURNOUT_SLOT", "TURNOUT_RELEASE"}
    # the interpreter may add LC_CTYPE itself (PEP 538 locale coercion)
    assert {k for k in env if not k.startswith("LC_")} <= allowed, sorted(env)


@pytest.mark.parametrize(
    "names, why",
    [
        ('["1BAD"]', "not an environment variable name"),
        ('["A=B"]', "not an environment variable name"),
        ('["TURNOUT_SLOT"]', "set by turnout"),
    ],
)
def test_pass_env_names_are_checked(project, names, why):
    project.write(project.toml().replace("stop_grace = 5", f"stop_grace = 5\npass_env = {names}"))
    r = project.cli("validate", "-e", "staging")
    assert r.returncode == 2 and "target.pass_env" in r.stderr and why in r.stderr, r.stderr
