"""The shared local Prefect server, the warm runner, and commands that start nothing they do not need.

Every test here runs turnout as a new user would: no PREFECT_* variable at all, a temporary
TURNOUT_HOME. Every server a test starts is stopped (by pid) before the module ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import Project
from turnout.procs import pid_alive, start_ticks

FORBIDDEN = ("prefect", "scipy", "matplotlib", "prometheus_api_client", "alembic", "boto3", "kubernetes")


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: no Prefect settings (so no team server), its own TURNOUT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(TURNOUT_HOME=str(home), **extra)
    return env


def turnout(
    home: Path, *args: str, cwd: Path | None = None, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "turnout.app.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_env(home, **extra),
    )


def state(home: Path) -> dict | None:
    try:
        return json.loads((home / "prefect-server" / "state.json").read_text())
    except FileNotFoundError:
        return None


def turnout_processes(home: Path) -> dict[int, dict]:
    """Every process carrying this TURNOUT_HOME, with its parent and what it is."""
    mark = f"TURNOUT_HOME={home}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        kind = (
            "supervisor"
            if "turnout.app.prefect_supervisor" in cmd
            else "warm"
            if "turnout.app.warm" in cmd
            else "server"
            if ("prefect" in cmd and "server" in cmd) or "uvicorn" in cmd
            else "other"
        )
        found[int(entry)] = {"ppid": int(fields[1]), "cmd": cmd, "kind": kind}
    return found


def servers(home: Path) -> dict[int, dict]:
    return {pid: p for pid, p in turnout_processes(home).items() if p["kind"] == "server"}


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def kill_everything_started(home: Path) -> None:
    """Stop the shared server the tests started; then, by pid, anything of this home still running."""
    turnout(home, "server", "stop", "--force", timeout=120)
    for pid, p in turnout_processes(home).items():
        if p["kind"] in ("supervisor", "server", "warm"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One TURNOUT_HOME for the module (the server's database is created once), cleaned up at the end."""
    h = tmp_path_factory.mktemp("turnout-home")
    yield h
    kill_everything_started(h)
    assert not any(p["kind"] in ("supervisor", "server", "warm") for p in turnout_processes(h).values())


def running(home: Path, **opts: str) -> dict:
    """The shared server's status after `turnout server start`."""
    args = [a for k, v in opts.items() for a in (f"--{k}", v)]
    r = turnout(home, "server", "start", *args, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads(r.stdout)
    assert st["running"] and st["answering"], st
    return st


# --- the server's life ---------------------------------------------------------------------------


def test_server_start_status_stop(home: Path):
    turnout(home, "server", "stop", "--force")
    r = turnout(home, "server", "status")
    assert r.returncode == 0 and "not running" in r.stdout, r.stdout
    st = running(home, idle="0")
    assert st["url"].startswith("http://127.0.0.1:") and st["api_url"] == st["url"] + "/api"
    assert httpx.get(st["api_url"] + "/health", timeout=5).status_code == 200
    assert httpx.get(st["url"], timeout=5).status_code == 200  # the UI
    procs = turnout_processes(home)
    assert procs[st["pid"]]["kind"] == "server" and procs[st["pid"]]["ppid"] == st["supervisor_pid"]
    assert procs[st["supervisor_pid"]]["kind"] == "supervisor"
    assert Path(st["prefect_home"], "prefect.db").is_file()  # its own PREFECT_HOME, SQLite

    r = turnout(home, "server", "status")
    assert st["url"] in r.stdout and str(st["pid"]) in r.stdout and str(st["port"]) in r.stdout
    assert "runs until `turnout server stop`" in r.stdout and str(home) in r.stdout
    assert running(home)["pid"] == st["pid"]  # a second start reuses it

    r = turnout(home, "server", "stop")
    assert r.returncode == 0 and str(st["pid"]) in r.stdout
    assert not pid_alive(st["pid"]) and not pid_alive(st["supervisor_pid"])
    assert not servers(home) and state(home) is None
    assert "not running" in turnout(home, "server", "status").stdout


def test_two_commands_starting_at_once_start_one_server(home: Path):
    turnout(home, "server", "stop", "--force")
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "turnout.app.cli", "server", "start", "--idle", "0", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=user_env(home),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in starts]
    assert all(p.returncode == 0 for p in starts), [o[1][-2000:] for o in outs]
    pids = {json.loads(o[0])["pid"] for o in outs}
    assert len(pids) == 1 and set(servers(home)) == pids


def test_a_stale_state_file_is_replaced_and_foreign_pids_are_never_signalled(home: Path):
    turnout(home, "server", "stop", "--force")
    sdir = home / "prefect-server"
    sdir.mkdir(parents=True, exist_ok=True)
    # A recycled pid: a live process that is not the one recorded (its start time differs).
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        (sdir / "state.json").write_text(
            json.dumps(
                {
                    "supervisor_pid": stranger.pid,
                    "supervisor_ticks": start_ticks(stranger.pid) - 1,
                    "server_pid": stranger.pid,
                    "server_ticks": start_ticks(stranger.pid) - 1,
                    "port": 1,
                    "url": "http://127.0.0.1:1",
                    "api_url": "http://127.0.0.1:1/api",
                    "status": "ready",
                }
            )
        )
        st = running(home, idle="0")
        assert st["pid"] != stranger.pid and stranger.poll() is None, "a recycled pid was signalled"
    finally:
        stranger.kill()
        stranger.wait()
    # Our own processes (pid and start time match) behind a server that does not answer: replaced, and stopped.
    turnout(home, "server", "stop", "--force")
    hung = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    try:
        (sdir / "state.json").write_text(
            json.dumps(
                {
                    "supervisor_pid": hung[0].pid,
                    "supervisor_ticks": start_ticks(hung[0].pid),
                    "server_pid": hung[1].pid,
                    "server_ticks": start_ticks(hung[1].pid),
                    "port": 9,
                    "url": "http://127.0.0.1:9",
                    "api_url": "http://127.0.0.1:9/api",
                    "status": "ready",
                }
            )
        )
        st = running(home, idle="0")
        assert st["pid"] not in (hung[0].pid, hung[1].pid)
        assert all(p.wait(timeout=30) is not None for p in hung), "the stale server was left running"
    finally:
        for p in hung:
            if p.poll() is None:
                p.kill()
    # A dead supervisor: its server (parent gone) is stopped and a new pair started.
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(st["pid"]), 30, "the server to follow its killed supervisor")
    st2 = running(home, idle="0")
    assert st2["pid"] != st["pid"] and set(servers(home)) == {st2["pid"]}


def _api(st: dict, method: str, path: str, body: dict | None = None):
    """One call to the server's REST API, retried on 503 as Prefect's own client does (a server that just
    started answers 503 while its SQLite database is busy)."""
    deadline = time.monotonic() + 30
    while True:
        r = httpx.request(method, st["api_url"] + path, json=body, timeout=10)
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    r.raise_for_status()
    return r.json() if r.content else None


def test_idle_stop_waits_for_active_flow_runs_and_crashes_a_killed_commands_run(home: Path):
    turnout(home, "server", "stop", "--force")
    # This test process holds a lease (as a running command does) while it sets the scene up.
    lease = home / "prefect-server" / "clients" / f"{os.getpid()}-{start_ticks(os.getpid())}"
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.touch()
    try:
        st = running(home, idle="1")
        flow = _api(st, "POST", "/flows/", {"name": "turnout-idle-test"})
        paused = _api(
            st,
            "POST",
            "/flow_runs/",
            {"flow_id": flow["id"], "name": "waiting-for-approval", "state": {"type": "PAUSED", "name": "Paused"}},
        )
    finally:
        lease.unlink()  # a lease left behind would keep the next tests from stopping the server
    gone = subprocess.Popen(["sleep", "300"])
    tag = f"turnout-cli:{gone.pid}:{start_ticks(gone.pid)}"
    gone.kill()
    gone.wait()
    orphan = _api(
        st,
        "POST",
        "/flow_runs/",
        {
            "flow_id": flow["id"],
            "name": "killed-command",
            "tags": [tag],
            "state": {"type": "RUNNING", "name": "Running"},
        },
    )
    # The killed command's run is marked Crashed; the paused run keeps the server up well past its idle time.
    wait_for(
        lambda: _api(st, "GET", f"/flow_runs/{orphan['id']}")["state"]["type"] == "CRASHED",
        60,
        "the supervisor to mark the run of a killed command Crashed",
    )
    time.sleep(5)
    assert pid_alive(st["pid"]) and state(home)["server_pid"] == st["pid"], "stopped with a run waiting for approval"
    _api(
        st,
        "POST",
        f"/flow_runs/{paused['id']}/set_state",
        {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True},
    )
    wait_for(
        lambda: not pid_alive(st["pid"]) and not pid_alive(st["supervisor_pid"]), 90, "the idle server to stop itself"
    )
    assert state(home) is None and not servers(home)


def test_bad_settings_are_refused_before_anything_starts(home: Path, project: Project):
    turnout(home, "server", "stop", "--force")
    r = turnout(home, "server", "start", cwd=project.root, TURNOUT_SERVER_IDLE="soon")
    assert r.returncode == 2 and "TURNOUT_SERVER_IDLE" in r.stderr and state(home) is None
    r = turnout(home, "blue-green", "--image", "demo v1", "-e", "staging", cwd=project.root)
    assert r.returncode == 2 and state(home) is None and not servers(home), "bad input started a server"


# --- commands that need no Prefect ---------------------------------------------------------------

HARNESS = (
    "import sys, json, runpy; sys.argv = ['turnout'] + json.loads(sys.argv[1])\n"
    "code = 0\n"
    "try: runpy.run_module('turnout.app.cli', run_name='__main__')\n"
    "except SystemExit as e: code = e.code\n"
    "print(json.dumps({'code': code, 'modules': sorted(m for m in sys.modules)}), file=sys.stderr)"
)


def modules_of(home: Path, project: Project, *args: str) -> tuple[int, set[str], str]:
    r = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(list(args))],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
        env=user_env(home),
    )
    report = json.loads(r.stderr.strip().splitlines()[-1])
    return report["code"], {m.split(".")[0] for m in report["modules"]}, r.stdout


def test_read_only_commands_and_a_recover_with_nothing_to_do_import_no_heavy_library(tmp_path, project: Project, nginx):
    fresh = tmp_path / "home"  # no server: the commands run in their own process
    for args in (
        ["status", "-e", "staging"],
        ["history", "-e", "staging"],
        ["plugins"],
        ["validate", "-e", "staging"],
        ["logs", "-e", "staging", "--slot", "blue", "-n", "5"],
        ["recover", "-e", "staging"],
    ):
        code, mods, out = modules_of(fresh, project, *args)
        assert code in (0, None), (args, out)
        assert not mods & set(FORBIDDEN), f"turnout {' '.join(args)} imported {sorted(mods & set(FORBIDDEN))}"
    assert "CONSISTENT" in out  # recover had nothing to do: it said so without a flow run
    assert not (fresh / "prefect-server" / "state.json").exists(), "a command that runs no flow started a server"


def test_logs_prints_a_slots_output(tmp_path, project: Project, prefect_server, nginx):
    project.deploy("demo:v1")
    slot_log = project.state_dir / "slots" / "blue" / "replica-0.out.log"
    slot_log.write_text(slot_log.read_text() + "".join(f"line {i}\n" for i in range(50)))
    r = turnout(tmp_path / "home", "logs", "-e", "staging", "--slot", "blue", "-n", "3", cwd=project.root)
    assert r.returncode == 0 and "line 49" in r.stdout and "line 46" not in r.stdout, r.stdout
    r = turnout(tmp_path / "home", "logs", "-e", "staging", cwd=project.root)
    assert (
        "--- slot blue ---" in r.stdout
        and "--- slot green ---" in r.stdout
        and "(no output from slot green)" in r.stdout
    )
    assert turnout(tmp_path / "home", "logs", "-e", "staging", "--slot", "red", cwd=project.root).returncode == 2


# --- crash hygiene -------------------------------------------------------------------------------


def test_sigkilled_commands_leave_no_prefect_server_behind(home: Path, project: Project, nginx):
    """A new user's blue-green and canary, SIGKILLed mid-run: only the shared server remains, owned by its
    supervisor; `turnout server stop` leaves nothing."""
    turnout(home, "server", "stop", "--force")
    project.extra += "\n[canary]\nstages = [10, 50, 100]\nduration = 120\ninterval = 5\nmin_requests = 5\n"
    project.write()
    r = turnout(home, "blue-green", "--image", "demo:v1", "-e", "staging", cwd=project.root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "shared Prefect server" in r.stderr and "/runs/flow-run/" in r.stderr  # started; the run's UI page printed

    r = turnout(
        home, "blue-green", "--image", "demo:v2", "-e", "staging", cwd=project.root, TURNOUT_CRASH_AT="post-switch"
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]

    st = state(home)
    wait_for(lambda: (home / "prefect-server" / "warm.sock").exists(), 120, "the warm runner")
    canary = subprocess.Popen(
        [sys.executable, "-m", "turnout.app.cli", "canary", "--image", "demo:v3", "-e", "staging", "--auto-promote"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=user_env(home),
    )
    try:
        rt = project.runtime()

        def at_first_stage():
            split = rt.router.get_split()
            return split is not None and len(split.live_slots()) == 2 and rt.ledger.lock_holder("staging")

        holder = wait_for(at_first_stage, 180, "the canary's first stage")["pid"]
        assert turnout_processes(home)[holder]["ppid"] == st["warm_pid"]  # it ran in a fork of the warm runner
    finally:
        canary.kill()  # SIGKILL
        canary.communicate()
    wait_for(lambda: not pid_alive(holder), 30, "the killed canary's command to die with it")

    procs = turnout_processes(home)
    st = state(home)
    assert {pid for pid, p in procs.items() if p["kind"] == "server"} == {st["server_pid"]}, procs
    assert procs[st["server_pid"]]["ppid"] == st["supervisor_pid"]  # owned by turnout's supervisor, not a command
    assert procs[st["supervisor_pid"]]["ppid"] not in procs  # which belongs to no command
    assert {pid for pid, p in procs.items() if p["kind"] == "warm"} == {st["warm_pid"]}, procs

    r = turnout(home, "recover", "-e", "staging", "--json", cwd=project.root)
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["outcome"] == "recovered", r.stderr[-3000:]
    r = turnout(home, "server", "stop")
    assert r.returncode == 0, r.stderr
    wait_for(
        lambda: not any(p["kind"] in ("supervisor", "server", "warm") for p in turnout_processes(home).values()),
        30,
        "every server process to stop",
    )


def test_a_command_in_the_warm_runner_answers_as_in_its_own_process(home: Path, project: Project, nginx):
    running(home, idle="0")
    wait_for(lambda: (home / "prefect-server" / "warm.sock").exists(), 120, "the warm runner")
    log = home / "prefect-server" / "server.log"
    for args in (
        ["validate", "-e", "staging"],
        ["history", "-e", "staging", "--json"],
        ["status", "-e", "nope"],
        ["blue-green", "--image", "demo v1", "-e", "staging"],
        ["recover", "-e", "staging", "--json"],
    ):
        before = log.read_text().count(f"turnout {args[0]} runs as pid")
        warm = turnout(home, *args, cwd=project.root)
        assert log.read_text().count(f"turnout {args[0]} runs as pid") == before + 1, "not run by the warm runner"
        cold = turnout(home, *args, cwd=project.root, TURNOUT_WARM="0")
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), args
    assert state(home) and not project.runtime().ledger.history("staging", 5)  # the bad image touched nothing


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_command_in_the_warm_runner_aborts_it_safely(home: Path, project: Project, nginx, sig):
    """Ctrl-C or SIGTERM reach the command's fork: it ends like an abort, traffic on v1, the slot stopped."""
    running(home, idle="0")
    wait_for(lambda: (home / "prefect-server" / "warm.sock").exists(), 120, "the warm runner")
    project.health_timeout = 60
    project.write()
    r = turnout(home, "blue-green", "--image", "demo:v1", "-e", "staging", cwd=project.root)
    assert r.returncode == 0, r.stderr[-3000:]
    cmd = subprocess.Popen(
        [sys.executable, "-m", "turnout.app.cli", "blue-green", "--image", "demo:v4", "-e", "staging", "--json"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=user_env(home),
    )
    try:
        rt = project.runtime()
        holder = wait_for(
            lambda: rt.target.status("green").running and rt.ledger.lock_holder("staging"),
            120,
            "the never-ready v4 in its health gate",
        )["pid"]
        assert holder != cmd.pid and turnout_processes(home)[holder]["ppid"] == state(home)["warm_pid"]
        time.sleep(1)
        cmd.send_signal(sig)
        out, err = cmd.communicate(timeout=60)
    finally:
        if cmd.poll() is None:
            cmd.kill()
    assert cmd.returncode == 1, err[-3000:]
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["outcome"] == "aborted" and signal.Signals(sig).name in outcome["reason"], outcome
    assert rt.router.get_split().weight("blue") == 100 and project.get("/").headers["x-release"] == "demo:v1"
    assert not rt.target.status("green").running and rt.ledger.lock_holder("staging") is None
