"""The shared local Prefect server: one per user, started on first need, reused by every command.

Without `PREFECT_API_URL` (a team's server), Prefect would start a throw-away server inside every
process: 6-7 s per command, a ~200 MB server left behind by every SIGKILLed command, and runs no UI
ever shows. Instead the first command that runs a flow starts one local server and later commands
reuse it:

    TURNOUT_HOME (default $XDG_STATE_HOME/turnout or ~/.local/state/turnout)
    └── prefect-server/
        ├── state.json     supervisor and server pid + start time (`turnout.procs.start_ticks`), port, URLs
        ├── lock           flock: two commands starting at once start one server
        ├── last-used      touched by every command that uses the server (the idle clock)
        ├── clients/       one lease per running command (pid-starttime): a live one keeps the server up
        ├── warm.sock      the warm runner's socket (`turnout.app.warm`: commands run in a fork of it)
        ├── server.log     the supervisor's, the server's and the warm runner's output
        └── prefect/       the server's own PREFECT_HOME (SQLite database, UI build)

The server (`prefect server start`, 127.0.0.1, a free or configured port) runs under a small
supervisor (`turnout.app.prefect_supervisor`) started in its own session, so it belongs to no
command: a killed command leaves nothing behind but its lease. The supervisor stops the server
after `TURNOUT_SERVER_IDLE` seconds (default 3600; 0 = until `turnout server stop`) during which
no command used it, no command holding a lease is alive and no flow run is Running, Pending or
Paused (a canary waiting for approval keeps it up). A state file whose processes are gone, whose
pids were recycled (start time differs) or whose server does not answer `/api/health` is stale: it
is replaced, and what is left of the old server is stopped by pid *and* start time.

No Prefect import here: this module runs before Prefect is imported, so Prefect reads the URL
it sets, and on the hot path of commands that never need Prefect.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeGuard

from turnout.errors import BackendError, ConfigError
from turnout.procs import pid_alive, start_ticks

__all__ = [
    "DEFAULT_IDLE",
    "turnout_home",
    "server_dir",
    "idle_setting",
    "port_setting",
    "read_state",
    "alive",
    "healthy",
    "ensure_server",
    "stop_server",
    "server_status",
    "configured_api_url",
    "use_prefect",
    "run_tag",
    "lease_path",
    "live_leases",
    "prefect_env_key",
]

DEFAULT_IDLE = 3600.0
RUN_TAG_PREFIX = "turnout-cli:"  # flow runs carry `turnout-cli:<pid>:<start ticks>` of the command that ran them


def turnout_home() -> Path:
    """`$TURNOUT_HOME`, else `$XDG_STATE_HOME/turnout`, else `~/.local/state/turnout`."""
    if os.environ.get("TURNOUT_HOME"):
        return Path(os.environ["TURNOUT_HOME"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "turnout"


def server_dir() -> Path:
    """Where the shared server keeps its state."""
    return turnout_home() / "prefect-server"


def idle_setting(value: str | float | None = None) -> float:
    """Seconds of idleness after which the server stops (`TURNOUT_SERVER_IDLE`; 0 = never)."""
    raw = os.environ.get("TURNOUT_SERVER_IDLE", DEFAULT_IDLE) if value is None else value
    try:
        idle = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"TURNOUT_SERVER_IDLE={raw!r} is not a number of seconds (0 = until stopped)") from None
    if idle < 0 or idle != idle:
        raise ConfigError(f"TURNOUT_SERVER_IDLE={raw!r} must be 0 (until stopped) or more seconds")
    return idle


def port_setting(value: str | int | None = None) -> int:
    """The configured port (`TURNOUT_SERVER_PORT`), or 0 for a free one."""
    raw = os.environ.get("TURNOUT_SERVER_PORT", "0") if value is None else value
    if not str(raw).isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(f"TURNOUT_SERVER_PORT={raw!r} is not a port (1-65535, or 0 for a free one)")
    return int(raw)


def _start_timeout() -> float:
    try:
        return float(os.environ.get("TURNOUT_SERVER_START_TIMEOUT", "180"))
    except ValueError:
        return 180.0


# --- the state file ------------------------------------------------------------------------------


def read_state() -> dict[str, Any] | None:
    """The state file's content, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((server_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(state: dict[str, Any]) -> None:
    """Replace the state file atomically (readers never see half a file)."""
    d = server_dir()
    tmp = d / f".state.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, d / "state.json")


def remove_state(owner: int | None = None) -> None:
    """Remove the state file (only when `owner`, if given, is the supervisor it names)."""
    if owner is not None and (read_state() or {}).get("supervisor_pid") != owner:
        return
    try:
        (server_dir() / "state.json").unlink()
    except FileNotFoundError:
        pass


def same_process(pid: int | None, ticks: int | None) -> bool:
    """True when `pid` runs and is the very process recorded (same start time: not a recycled pid)."""
    return bool(pid and pid_alive(pid) and ticks is not None and start_ticks(pid) == ticks)


def alive(state: dict[str, Any] | None) -> dict[str, bool]:
    """Which of the recorded processes still run: {"supervisor": bool, "server": bool}."""
    state = state or {}
    return {
        "supervisor": same_process(state.get("supervisor_pid"), state.get("supervisor_ticks")),
        "server": same_process(state.get("server_pid"), state.get("server_ticks")),
    }


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when the server answers `GET /api/health` with 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


@contextmanager
def _locked(timeout: float) -> Iterator[None]:
    """Hold the server's flock (waiting at most `timeout` seconds)."""
    d = server_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "lock", "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BackendError(
                        f"another turnout command holds {d / 'lock'} (starting the shared "
                        f"Prefect server?) for more than {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- leases: which commands are using the server right now -------------------------------------


def lease_path(pid: int | None = None) -> Path:
    """This (or `pid`'s) command's lease file."""
    pid = pid or os.getpid()
    return server_dir() / "clients" / f"{pid}-{start_ticks(pid)}"


def live_leases(clean: bool = False) -> list[int]:
    """The pids of commands holding a lease that still run (with `clean`, dead leases are removed)."""
    d = server_dir() / "clients"
    pids = []
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        pid_s, _, ticks_s = p.name.partition("-")
        if pid_s.isdigit() and ticks_s.isdigit() and same_process(int(pid_s), int(ticks_s)):
            pids.append(int(pid_s))
        elif clean:
            p.unlink(missing_ok=True)
    return pids


def touch_last_used() -> None:
    """Restart the idle clock."""
    p = server_dir() / "last-used"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.touch()


def _take_lease() -> None:
    path = lease_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    touch_last_used()

    def release() -> None:
        path.unlink(missing_ok=True)
        try:
            touch_last_used()  # idle counts from the end of the last command
        except OSError:
            pass

    atexit.register(release)


def run_tag() -> str:
    """The tag this command's flow runs carry, so the supervisor can tell a killed command's runs."""
    return f"{RUN_TAG_PREFIX}{os.getpid()}:{start_ticks(os.getpid())}"


# --- start, stop, status -------------------------------------------------------------------------


def _terminate(state: dict[str, Any], grace: float = 15.0) -> list[str]:
    """Stop the recorded supervisor and server (only the very processes recorded); what was stopped."""
    stopped = []
    now = alive(state)
    if now["supervisor"]:
        os.kill(state["supervisor_pid"], signal.SIGTERM)  # it stops its server and removes the state
        stopped.append(f"supervisor {state['supervisor_pid']}")
        _wait_gone(state["supervisor_pid"], state["supervisor_ticks"], grace)
        if same_process(state["supervisor_pid"], state["supervisor_ticks"]):
            os.kill(state["supervisor_pid"], signal.SIGKILL)
    if same_process(state.get("server_pid"), state.get("server_ticks")):
        pid = state["server_pid"]
        _signal_group(pid, signal.SIGTERM)  # its own process group: the server and anything it started
        _wait_gone(pid, state["server_ticks"], grace)
        if same_process(pid, state["server_ticks"]):
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, state["server_ticks"], 5)
    if now["server"]:
        stopped.append(f"server {state['server_pid']}")
    if same_process(state.get("warm_pid"), state.get("warm_ticks")):  # its supervisor would have stopped it
        os.kill(state["warm_pid"], signal.SIGTERM)
        _wait_gone(state["warm_pid"], state["warm_ticks"], 5)
    return stopped


def _signal_group(pid: int, sig: int) -> None:
    """Signal `pid`'s process group when it leads one (the server, and anything it started), else `pid`."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, ticks: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while same_process(pid, ticks) and time.monotonic() < deadline:
        time.sleep(0.1)


def _log_tail(n: int = 15) -> str:
    try:
        lines = (server_dir() / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _usable(state: dict[str, Any] | None, checks: int = 1) -> TypeGuard[dict[str, Any]]:
    """The recorded server runs, is ready, and answers its health check (retried `checks` times)."""
    if not state or state.get("status") != "ready" or not all(alive(state).values()):
        return False
    return any(healthy(state["api_url"], timeout=2.0 if i == 0 else 5.0) for i in range(checks))


def ensure_server(
    *, port: int | None = None, idle: float | None = None, echo: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The running shared server's state, starting it first when there is none (or a stale one).

    `port` and `idle` apply only to a server this call starts (default: the settings). Raises
    BackendError when the server cannot be started (the message ends with its log).
    """
    state = read_state()
    if _usable(state):
        return state
    port = port_setting() if port is None else port
    idle = idle_setting() if idle is None else idle
    timeout = _start_timeout()
    with _locked(timeout + 30):
        state = read_state()
        if state and state.get("status") == "starting" and all(alive(state).values()):
            # another command started it and gave up (or was killed) while it came up: wait for it
            if _wait_ready(state["supervisor_pid"], None, timeout):
                return read_state() or {}
        state = read_state()
        if _usable(state, checks=3):
            return state
        if state:
            stopped = _terminate(state)
            if echo and stopped:
                echo(f"turnout: replaced a stale shared Prefect server ({', '.join(stopped)})")
            remove_state()
        return _start(port, idle, timeout, echo)


def _start(port: int, idle: float, timeout: float, echo: Callable[[str], None] | None) -> dict[str, Any]:
    d = server_dir()
    (d / "prefect").mkdir(parents=True, exist_ok=True)
    log_path = d / "server.log"
    if log_path.exists() and log_path.stat().st_size > 5_000_000:
        log_path.replace(d / "server.log.1")
    if echo:
        echo(f"turnout: starting the shared Prefect server (state in {d}; the first start takes 10-30 s)")
    with open(log_path, "a") as log, open(os.devnull) as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "turnout.app.prefect_supervisor", "--port", str(port), "--idle", f"{idle:g}"],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=d,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if not _wait_ready(proc.pid, proc, timeout):
        if proc.poll() is None:
            state = read_state()
            if state and state.get("supervisor_pid") == proc.pid:
                _terminate(state)
            else:
                proc.kill()
            proc.wait(10)
            remove_state(owner=proc.pid)
            raise BackendError(
                f"the shared Prefect server did not become ready within {timeout:.0f} s "
                f"(TURNOUT_SERVER_START_TIMEOUT); its log:\n{_log_tail()}"
            )
        raise BackendError(f"the shared Prefect server could not start (log {log_path}):\n{_log_tail()}")
    state = read_state() or {}
    if echo:
        echo(f"turnout: shared Prefect server ready: UI {state.get('url')}")
    return state


def _wait_ready(supervisor_pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state()
        if state and state.get("supervisor_pid") == supervisor_pid and state.get("status") == "ready":
            return True
        if proc is not None and proc.poll() is not None:
            return False
        if proc is None and not pid_alive(supervisor_pid):
            return False
        time.sleep(0.2)
    return False


def stop_server(force: bool = False) -> dict[str, Any]:
    """Stop the shared server this turnout home started (matched by pid and start time).

    Returns {"stopped": [...], "state": the state it had}. Without `force`, refuses (ConfigError)
    while a turnout command holding a lease is still running (a canary waiting for approval).
    """
    with _locked(60):
        state = read_state()
        if not state:
            return {"stopped": [], "state": None}
        users = [p for p in live_leases(clean=True) if p != os.getpid()]
        if users and not force:
            raise ConfigError(
                f"the shared Prefect server is in use by turnout command(s) pid "
                f"{', '.join(map(str, users))}; wait for them or use --force"
            )
        stopped = _terminate(state)
        remove_state()
        return {"stopped": stopped, "state": state}


def server_status() -> dict[str, Any]:
    """Everything `turnout server status` shows (the server is neither started nor stopped)."""
    state = read_state() or {}
    d = server_dir()
    procs = alive(state)
    running = bool(state) and all(procs.values())
    answering = running and state.get("status") == "ready" and healthy(state["api_url"])
    try:
        last = (d / "last-used").stat().st_mtime
    except OSError:
        last = None
    idle = (state or {}).get("idle", idle_setting())
    out = {
        "running": running,
        "answering": answering,
        "status": (state or {}).get("status") if running else "stopped",
        "url": (state or {}).get("url") if running else None,
        "api_url": (state or {}).get("api_url") if running else None,
        "port": (state or {}).get("port") if running else None,
        "pid": (state or {}).get("server_pid") if running else None,
        "supervisor_pid": (state or {}).get("supervisor_pid") if running else None,
        "warm_pid": state.get("warm_pid")
        if running and same_process(state.get("warm_pid"), state.get("warm_ticks"))
        else None,
        "started_at": (state or {}).get("started_at") if running else None,
        "idle": idle,
        "idle_for": round(time.time() - last, 1) if last and running else None,
        "users": live_leases() if running else [],
        "home": str(d),
        "prefect_home": str(d / "prefect"),
        "log": str(d / "server.log"),
        "stale": bool(state) and not running,
        "configured_api_url": configured_api_url(),
    }
    return out


# --- which server a command uses ----------------------------------------------------------------


def configured_api_url() -> str | None:
    """A Prefect API URL the user configured: `PREFECT_API_URL`, else the active Prefect profile's."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        import tomllib

        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    url = (profiles.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL") if active else None
    return str(url) if url else None


def use_prefect(echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Point this process's Prefect client at the team's server or the shared local one.

    Call before Prefect is imported. A configured API URL is used as is; otherwise the shared server
    is started or reused, `PREFECT_API_URL` set to it, and Prefect's ephemeral mode switched off so
    no second server can ever appear in this process. Returns {"api_url", "ui_url", "shared"}.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    team = configured_api_url()
    if team:
        _check_reachable(team)
        info = {"api_url": team, "ui_url": os.environ.get("PREFECT_UI_URL") or _ui_of(team), "shared": False}
    else:
        state = ensure_server(echo=echo)
        _take_lease()
        os.environ["PREFECT_API_URL"] = state["api_url"]
        os.environ["PREFECT_UI_URL"] = state["url"]
        info = {"api_url": state["api_url"], "ui_url": state["url"], "shared": True}
    os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
    if "prefect.context" in sys.modules and prefect_env_key() != PREFECT_ENV_AT_IMPORT:
        # Prefect read its settings when it was imported (a precheck needed a flow module): re-read them
        sys.modules["prefect.context"].refresh_global_settings_context()
    return info


def _check_reachable(api_url: str) -> None:
    """A configured Prefect server that does not answer is one clear line (exit 2) before anything moves."""
    import urllib.error
    import urllib.request

    from turnout.errors import ConfigError

    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=10) as r:
            if r.status == 200:
                return
            why = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        why = f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        why = str(getattr(e, "reason", None) or e) or type(e).__name__
    raise ConfigError(
        f"the Prefect server at {api_url} (PREFECT_API_URL) does not answer: {why}; start it, or unset "
        "PREFECT_API_URL to use turnout's shared local server. Nothing was changed"
    )


#: `prefect_env_key()` when this process imported Prefect, if it recorded it (the warm runner does).
PREFECT_ENV_AT_IMPORT: tuple | None = None


def prefect_env_key() -> tuple:
    """What Prefect's settings are built from: every PREFECT_* variable and the home directory."""
    prefect = sorted((k, v) for k, v in os.environ.items() if k.startswith("PREFECT_"))
    return (*prefect, ("HOME", os.environ.get("HOME")))


def _ui_of(api_url: str) -> str:
    return api_url[: -len("/api")] if api_url.rstrip("/").endswith("/api") else api_url
