"""The shared Prefect server's supervisor: `python -m turnout.app.prefect_supervisor --port P --idle S`.

Started detached (its own session) by `turnout.app.prefect_server.ensure_server`. It runs `prefect
server start` as its child (in the child's own process group, with a parent-death signal so the
server never outlives it), then the warm runner (`turnout.app.warm`, restarted when it exits: after a
code change at once), records the processes in the state file, and stops them:

- on SIGTERM/SIGINT/SIGHUP (`turnout server stop`);
- when the server exits on its own (the state file goes, the next command starts a new one);
- when the state file no longer names this supervisor (replaced by hand: never two servers);
- after `--idle` seconds (0 = never) during which no command used it (the `last-used` file), no
  command holding a lease runs, and no flow run is Running, Pending or Paused. A run tagged by a
  turnout command that no longer runs (SIGKILLed) is marked Crashed instead of keeping the server up.

Plain HTTP to the server's REST API (urllib): the supervisor does not import Prefect.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

from turnout.app import prefect_server as ps
from turnout.procs import start_ticks

__all__ = ["main", "Supervisor"]

ACTIVE_STATES = ["RUNNING", "PENDING", "PAUSED", "CANCELLING"]


def _say(msg: str) -> None:
    print(f"{datetime.now():%Y-%m-%d %H:%M:%S} supervisor[{os.getpid()}]: {msg}", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_port(requested: int, attempt: int) -> int:
    """The configured port, else the last one used (a stable UI address) when free, else a free one."""
    if requested:
        return requested
    last = ps.server_dir() / "last-port"
    try:
        previous = int(last.read_text())
    except (OSError, ValueError):
        previous = 0
    if attempt == 0 and previous and _port_free(previous):
        return previous
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server child: SIGTERM when the supervisor dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _api(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


class Supervisor:
    """One server's life: start, watch, stop."""

    def __init__(self, port: int, idle: float):
        self.requested_port, self.idle = port, idle
        self.proc: subprocess.Popen | None = None
        self.warm: subprocess.Popen | None = None
        self.warm_started = 0.0
        self.stopping: str | None = None
        self.state: dict[str, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = f"signal {signal.Signals(signum).name}"

    def run(self) -> int:
        """Start the server, supervise it, stop it; the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            if not self._start():
                return 1
            self._watch()
            return 0
        finally:
            self._stop()
            ps.remove_state(owner=os.getpid())
            _say(f"stopped ({self.stopping or 'error'})")

    def _start(self) -> bool:
        d = ps.server_dir()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")
        }  # the user's client settings stay out
        env.update(
            PREFECT_HOME=str(d / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        timeout = ps._start_timeout()
        for attempt in range(3):
            port = _pick_port(self.requested_port, attempt)
            url = f"http://127.0.0.1:{port}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=sys.stdout,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=d,
                process_group=0,
                preexec_fn=_die_with_parent,
            )
            self.state = {
                "supervisor_pid": os.getpid(),
                "supervisor_ticks": start_ticks(os.getpid()),
                "server_pid": self.proc.pid,
                "server_ticks": start_ticks(self.proc.pid),
                "port": port,
                "url": url,
                "api_url": f"{url}/api",
                "status": "starting",
                "idle": self.idle,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "prefect_home": str(d / "prefect"),
                "log": str(d / "server.log"),
            }
            ps.write_state(self.state)
            _say(
                f"prefect server pid {self.proc.pid} starting on {url} (idle stop: "
                f"{f'{self.idle:g} s' if self.idle else 'never'})"
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None and not self.stopping:
                if ps.healthy(self.state["api_url"], timeout=1.0):
                    self.state["status"] = "ready"
                    self.state["ready_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                    ps.write_state(self.state)
                    (d / "last-port").write_text(str(port))
                    ps.touch_last_used()
                    _say(f"ready on {url}")
                    self._start_warm()
                    return True
                time.sleep(0.3)
            if self.stopping or self.proc.poll() is None or self.requested_port:
                _say("the server did not become ready" if not self.stopping else "stopped while starting")
                return False
            _say(f"the server exited with {self.proc.returncode} (port {port} taken?); trying another port")
        return False

    def _watch(self) -> None:
        proc = self.proc
        assert proc is not None  # run() watches only a server _start() started
        interval = max(0.25, min(15.0, self.idle / 4)) if self.idle else 15.0
        next_check = time.monotonic() + interval
        while not self.stopping:
            time.sleep(0.25)
            if proc.poll() is not None:
                self.stopping = f"the server exited with {proc.returncode}"
                return
            if self.warm is not None and self.warm.poll() is not None:
                # exit 3: turnout's code changed, start a fresh one now; anything else: not more than every 30 s
                if self.warm.returncode == 3 or time.monotonic() - self.warm_started > 30:
                    _say(f"warm runner exited with {self.warm.returncode}: starting a new one")
                    self._start_warm()
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + interval
            current = ps.read_state()
            if not current or current.get("supervisor_pid") != os.getpid():
                self.stopping = "the state file no longer names this supervisor"
                return
            try:
                active = self._active_runs()  # also marks a killed command's runs Crashed
            except Exception as e:  # cannot tell: count as busy (a command replaces a server that stopped answering)
                _say(f"cannot list flow runs ({e})")
                active = [{}]  # one run we cannot see
            if self.idle and not active and self._idle():
                self.stopping = f"idle for {self.idle:g} s"

    def _idle(self) -> bool:
        """No command used the server for `idle` seconds and none holding a lease still runs."""
        try:
            quiet = time.time() - (ps.server_dir() / "last-used").stat().st_mtime
        except OSError:
            quiet = float("inf")
        return quiet >= self.idle and not ps.live_leases(clean=True)

    def _active_runs(self) -> list[dict[str, Any]]:
        """Flow runs that need the server; a killed command's runs are marked Crashed and not counted."""
        api = self.state["api_url"]
        runs = (
            _api(
                "POST",
                f"{api}/flow_runs/filter",
                {"flow_runs": {"state": {"type": {"any_": ACTIVE_STATES}}}, "limit": 200},
            )
            or []
        )
        active = []
        for run in runs:
            owner = next((t for t in run.get("tags") or [] if t.startswith(ps.RUN_TAG_PREFIX)), None)
            if owner:
                pid_s, _, ticks_s = owner[len(ps.RUN_TAG_PREFIX) :].partition(":")
                if pid_s.isdigit() and ticks_s.isdigit() and not ps.same_process(int(pid_s), int(ticks_s)):
                    _api(
                        "POST",
                        f"{api}/flow_runs/{run['id']}/set_state",
                        {
                            "state": {
                                "type": "CRASHED",
                                "name": "Crashed",
                                "message": f"the turnout command that ran it (pid {pid_s}) is gone",
                            },
                            "force": True,
                        },
                    )
                    _say(f"flow run {run['id']} ({run.get('name')}): its command pid {pid_s} is gone: marked Crashed")
                    continue
            active.append(run)
        return active

    def _start_warm(self) -> None:
        """The warm runner (`turnout.app.warm`) with exactly the Prefect settings a command gets from turnout."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.state["api_url"],
            PREFECT_UI_URL=self.state["url"],
            PREFECT_SERVER_EPHEMERAL_ENABLED="false",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL",
        )
        self.warm_started = time.monotonic()
        self.warm = subprocess.Popen(
            [sys.executable, "-m", "turnout.app.warm"],
            stdin=subprocess.DEVNULL,
            stdout=sys.stdout,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ps.server_dir(),
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        self.state["warm_pid"] = self.warm.pid
        self.state["warm_ticks"] = start_ticks(self.warm.pid)
        ps.write_state(self.state)

    def _stop(self) -> None:
        if self.warm is not None and self.warm.poll() is None:
            # the runner only: commands it forked run in their own groups and finish on their own
            self.warm.terminate()
            try:
                self.warm.wait(10)
            except subprocess.TimeoutExpired:
                self.warm.kill()
            (ps.server_dir() / "warm.sock").unlink(missing_ok=True)
        if self.proc is None or self.proc.poll() is not None:
            return
        _say(f"stopping the prefect server pid {self.proc.pid}")
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m turnout.app.prefect_supervisor")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--idle", type=float, default=ps.DEFAULT_IDLE)
    args = ap.parse_args(argv)
    return Supervisor(args.port, args.idle).run()


if __name__ == "__main__":
    sys.exit(main())
