"""The warm runner: turnout commands run in a fork of a process that has Prefect and the flows loaded.

Importing Prefect and the flows costs a new process 1-2 s, more than a blue-green deployment itself.
The shared Prefect server's supervisor therefore also keeps one *warm* process
(`python -m turnout.app.warm`) that has imported all of it once and listens on a Unix socket
(`<TURNOUT_HOME>/prefect-server/warm.sock`, only this user). `turnout …` (`try_warm`, called first
by the CLI's entry point) hands its command over instead of importing anything:

    turnout (client)  ──connect, send argv/env/cwd + its stdin/stdout/stderr (SCM_RIGHTS)──►  warm
         ▲                                                                                    │ fork
         └──────────── exit status (or the signal that killed the command) ◄──────────────── child:
                                                                   runs the command exactly as the CLI would

The child *is* the command: its output goes straight to the client's terminal or pipes, it holds the
environment's lock, and its lifetime is the client's. A signal the client receives (Ctrl-C,
SIGTERM) is forwarded to it; when the client dies, even by SIGKILL, the child SIGKILLs itself at
once, so killing a command kills its deployment just as when it ran in-process (and `turnout
recover` finishes it). A child killed by a signal makes the client die of the same signal.

The client runs the command itself (the cold path: in-process, as before) whenever the warm runner
could behave differently: no warm runner yet, `--verbose`, any `PREFECT_*` setting or a configured
Prefect API URL (a team's server: never the shared one), another Python, or turnout's own code
changed since the warm process loaded it (it then exits and the supervisor starts a fresh one).
`TURNOUT_WARM=0` turns it off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["WARM_COMMANDS", "socket_path", "try_warm", "serve", "main"]

# Commands worth a hand-over: they run flows (or may: recover), or read the ledger through the
# same imports. `server` commands never go warm (they manage the process that would run them).
WARM_COMMANDS = {
    "blue-green",
    "canary",
    "rollback",
    "recover",
    "migrate",
    "demo",
    "status",
    "history",
    "logs",
    "validate",
    "plugins",
}
# Modules a first flow run imports lazily: loaded before forking so no child pays for them.
_PRELOAD = (
    "urllib.request",
    "turnout.app.cli",
    "turnout.app.console",
    "turnout.runtime",
    "turnout.recovery",
    "turnout.app.prefect_server",
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.artifacts",
    "prefect.concurrency.sync",
    "prefect.concurrency.v1.context",
    "prefect.utilities.visualization",
    "prefect.telemetry.run_telemetry",
    "prefect._internal.control_listener",
    "prefect._internal.attempt_control",
    "prefect.client.orchestration",
    "prefect.logging.handlers",
    "fastapi.encoders",
    "anyio._backends._asyncio",
    "sqlalchemy.dialects.sqlite",
    "http.cookies",
    "turnout.flows.blue_green",
    "turnout.flows.canary",
    "turnout.flows.rollback",
    "turnout.flows.recover",
    "turnout.flows.migrate",
    "turnout.app.demo",
)
_CODE_PACKAGES = ("turnout",)  # flows, tasks and plugins are installed as turnout.flows, ...


def socket_path() -> Path:
    """The warm runner's socket."""
    from turnout.app.prefect_server import server_dir

    return server_dir() / "warm.sock"


def _send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def _recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """One framed message (None on EOF) and any file descriptors that came with it."""
    fds: list[int] = []
    if with_fds:
        buf, fds, _, _ = socket.recv_fds(sock, 65536, 3)
    else:
        buf = sock.recv(65536)
    if not buf:
        return None, fds
    while len(buf) < 4 or len(buf) < 4 + struct.unpack("!I", buf[:4])[0]:
        more = sock.recv(65536)
        if not more:
            return None, fds
        buf += more
    n = struct.unpack("!I", buf[:4])[0]
    return json.loads(buf[4 : 4 + n]), fds


# --- the client side (the `turnout` process) -----------------------------------------------------


def _eligible(argv: list[str]) -> bool:
    if os.environ.get("TURNOUT_WARM", "1") == "0" or len(argv) < 2 or argv[1] not in WARM_COMMANDS:
        return False
    if "-v" in argv or "--verbose" in argv:
        return False
    if any(k.startswith("PREFECT_") and k != "PREFECT_SERVER_ANALYTICS_ENABLED" for k in os.environ):
        return False
    from turnout.app.prefect_server import configured_api_url

    return configured_api_url() is None


def try_warm(argv: list[str]) -> None:
    """Run the command in the warm runner and exit with its status; return when it must run here."""
    if not _eligible(argv):
        return
    path = socket_path()
    if not path.exists():
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(str(path))
        _send(
            sock,
            {
                "argv": argv,
                "env": dict(os.environ),
                "cwd": os.getcwd(),
                "path0": sys.path[0],
                "executable": sys.executable,
                "prog_name": _prog_name(),
            },
            [0, 1, 2],
        )
        reply, _ = _recv(sock)
    except (OSError, ValueError):
        sock.close()
        return  # no warm runner answering: run it here
    if not reply or not reply.get("accepted"):
        sock.close()
        return
    sock.settimeout(None)
    # From here on the command runs in the child: never run it a second time here.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda signum, frame: _forward(sock, signum))
    while True:
        try:
            msg, _ = _recv(sock)
            break
        except InterruptedError:
            continue
    sys.stdout.flush()
    if msg is None:
        print("turnout: lost the warm runner before the command ended; check `turnout status`", file=sys.stderr)
        os._exit(3)
    code = msg["exit"]
    if code < 0:  # the command was killed by a signal: so is this process, as if it had run here
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _prog_name() -> str | None:
    """The name click shows in usage lines, as this process would show it."""
    try:
        from click.utils import _detect_program_name

        return _detect_program_name()
    except Exception:
        return None


def _forward(sock: socket.socket, signum: int) -> None:
    try:
        sock.sendall(bytes([signum]))
    except OSError:
        pass


# --- the warm process ----------------------------------------------------------------------------

_REGISTRY_ENV = ("TURNOUT_LOAD_PLUGINS", "TURNOUT_PLUGIN_MODULES", "TURNOUT_TRACE_HOOKS")


def _registry_key() -> tuple:
    return tuple(os.environ.get(k) for k in _REGISTRY_ENV)


def _fingerprint() -> dict[str, float]:
    """Modification times of every loaded module of turnout's own packages, and of the import path's
    directories (installing or removing a package, a third-party plugin say, changes them)."""
    out = {p: os.stat(p).st_mtime for p in sys.path[1:] if p and os.path.isdir(p)}  # [0]: this process's cwd
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if (name == "__main__" or name.split(".")[0] in _CODE_PACKAGES) and file:
            try:
                out[file] = os.stat(file).st_mtime
            except OSError:
                out[file] = -1.0
    return out


def _changed(fp: dict[str, float]) -> bool:
    for path, mtime in fp.items():
        try:
            if os.stat(path).st_mtime != mtime:
                return True
        except OSError:
            return True
    return False


def serve() -> int:
    """Preload, listen, fork one child per command; exit 0 when asked to stop, 3 when the code changed."""
    import gc
    import importlib
    import importlib.metadata
    import selectors

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # a module that cannot load here loads (and fails) in the command itself
            print(f"warm: could not preload {name}: {e}", file=sys.stderr, flush=True)
    for ep in importlib.metadata.entry_points(group="turnout"):
        try:
            ep.load()
        except Exception:
            pass
    from turnout.app import prefect_server
    from turnout.health import http_client

    http_client(1.0).close()  # its shared SSL context, built once here instead of in every command
    from turnout.registry import get_registry

    registry_key = _registry_key()
    try:
        get_registry()  # the plugins as a command with the same TURNOUT_* plugin settings loads them
    except Exception as e:
        print(f"warm: could not load the plugins: {e}", file=sys.stderr, flush=True)

    prefect_server.PREFECT_ENV_AT_IMPORT = prefect_server.prefect_env_key()  # a command with these skips a re-read
    fingerprint = _fingerprint()
    gc.collect()
    gc.freeze()  # children share these pages instead of copying them on the first collection

    path = socket_path()
    tmp = path.with_name(f".warm.{os.getpid()}.sock")
    tmp.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.umask(0o077)
    listener.bind(str(tmp))
    listener.listen(16)
    os.replace(tmp, path)
    # A child's exit wakes the loop at once (its status goes to its client without delay).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    print(f"warm[{os.getpid()}]: ready on {path} ({len(sys.modules)} modules loaded)", flush=True)
    children: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in sel.select(timeout=1.0):
                if key.fileobj == wake_r:
                    os.read(wake_r, 512)
                    continue
                conn, _ = listener.accept()
                verdict = _admit(conn, fingerprint)
                if verdict == "stale":
                    print(f"warm[{os.getpid()}]: turnout's code changed: exiting for a fresh runner", flush=True)
                    return 3
                if verdict is not None:
                    verdict["registry_key"] = registry_key
                    pid = _fork_command(conn, verdict, [listener, *children.values()], (wake_r, wake_w))
                    children[pid] = conn
                    print(
                        f"warm[{os.getpid()}]: turnout {' '.join(verdict['argv'][1:2])} runs as pid {pid}", flush=True
                    )
            _reap(children)
            if os.getppid() == 1 or not path.exists():  # the supervisor is gone, or another runner took over
                return 0
    finally:
        try:
            if os.stat(path).st_ino == os.fstat(listener.fileno()).st_ino:
                path.unlink()
        except OSError:
            pass
        listener.close()


def _admit(conn: socket.socket, fingerprint: dict[str, float]) -> Any:
    """The request when this process may run it, "stale" when its code is outdated, else None (refused)."""
    try:
        conn.settimeout(5)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        req, fds = _recv(conn, with_fds=True)
        conn.settimeout(None)
    except (OSError, ValueError):
        conn.close()
        return None
    why = None
    if uid != os.getuid():
        why = "another user"
    elif not req or len(fds) != 3:
        why = "bad request"
    elif req.get("executable") != sys.executable:
        why = "another Python"
    elif _changed(fingerprint):
        why = "stale"
    if why:
        for fd in fds:
            os.close(fd)
        try:
            _send(conn, {"accepted": False, "why": why})
        except OSError:
            pass
        conn.close()
        return "stale" if why == "stale" else None
    assert req is not None  # else "bad request" above
    req["fds"] = fds
    return req


def _fork_command(
    conn: socket.socket, req: dict[str, Any], inherited: list[socket.socket], wake: tuple[int, int]
) -> int:
    """Fork; in the parent return the child's pid; the child runs the command and exits."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in req["fds"]:
            os.close(fd)
        try:
            _send(conn, {"accepted": True, "pid": pid})
        except OSError:
            pass
        return pid
    code = 3
    try:
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        for sock in inherited:
            sock.close()
        code = _become(conn, req)
    except BaseException as e:  # never return into the warm loop
        import traceback

        traceback.print_exc()
        print(f"turnout: the warm runner could not run the command: {e}", file=sys.stderr)
    _exit(code)


def _exit(code: int) -> NoReturn:
    """End the child as the interpreter ends a command, minus tearing down 1600 modules (0.1-0.4 s, and
    a copy of every shared page): threads joined, exit handlers run (Prefect's log and event
    flushes, the lease), stdio flushed."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter does first at exit
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _become(conn: socket.socket, req: dict[str, Any]) -> int:
    """Take over the client's stdio, directory, environment and arguments; run the CLI; its exit code."""
    import importlib
    import threading

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.setpgid(0, 0)  # its own group: nothing aimed at the runner's group reaches a running command
    for target, fd in zip((0, 1, 2), req["fds"], strict=False):  # a client without a terminal may send fewer
        os.dup2(fd, target)
        os.close(fd)
    # Fresh stdio objects, buffered as Python buffers them for these descriptors (line-buffered on a tty).
    # They stay open for the command's whole life, so no `with`.
    enc, errors = sys.stdout.encoding, "backslashreplace"
    stdin = open(0, encoding=sys.stdin.encoding if sys.stdin else None, closefd=False)  # noqa: SIM115
    stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, encoding=enc, errors=errors, closefd=False)  # noqa: SIM115
    stderr = open(2, "w", buffering=1, encoding=enc, errors=errors, closefd=False)  # noqa: SIM115
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    # typeshed marks the originals Final; this process becomes the client's command, so they change too
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdin, stdout, stderr  # type: ignore[misc]
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = list(req["argv"])
    if req.get("path0") is not None and sys.path:
        sys.path[0] = req["path0"]
    importlib.invalidate_caches()
    if _registry_key() != tuple(req["registry_key"]):  # other plugin settings: load them afresh
        from turnout.registry import reset_registry

        reset_registry()

    def watch() -> None:
        """Signals from the client are raised here; the client gone means this command is gone."""
        while True:
            try:
                data = conn.recv(64)
            except OSError:
                data = b""
            if not data:
                os.kill(os.getpid(), signal.SIGKILL)
            for signum in data:
                os.kill(os.getpid(), signum)

    threading.Thread(target=watch, daemon=True, name="turnout-client-watch").start()
    from turnout.app.cli import cli

    try:
        cli(prog_name=req.get("prog_name"))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            except OSError:
                pass
            conn.close()


def main() -> int:
    """`python -m turnout.app.warm`: run the warm process until its supervisor goes."""
    return serve()


if __name__ == "__main__":
    sys.exit(main())
