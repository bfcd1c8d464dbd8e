"""Shared fixtures: real components (NGINX, a Prefect server, demo-service processes) on 127.0.0.1.

With CI=true a missing component fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = ROOT / "examples" / "demo_app"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Prefect reads its settings from the environment: fix them before anything imports prefect.
_PREFECT_PORT = free_port()
_PREFECT_HOME = tempfile.mkdtemp(prefix="turnout-test-prefect-")
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
)
os.environ.pop("TURNOUT_CONFIG_DIR", None)
os.environ.pop("TURNOUT_PLUGIN_MODULES", None)
os.environ.pop("TURNOUT_LOAD_PLUGINS", None)


def require(binary: str) -> str:
    """The path of `binary`, or fail (CI) / skip (elsewhere) naming what is missing."""
    path = shutil.which(binary)
    if path is None:
        package = {
            "nginx": "nginx-light",
            "prometheus-alertmanager": "prometheus-alertmanager",
            "promtool": "prometheus",
        }.get(binary, binary)
        msg = f"{binary} is not installed (Debian: apt-get install {package})"
        if CI:
            pytest.fail(msg + " and CI=true requires every real component")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def prefect_server():
    """A real `prefect server start` on a free port with a temporary PREFECT_HOME (SQLite)."""
    log = open(Path(_PREFECT_HOME) / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(_PREFECT_PORT),
            "--no-ui",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": ""},
    )
    url = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (Path(_PREFECT_HOME) / "server.log").read_text()[-2000:]
            pytest.fail(f"prefect server exited with {proc.returncode}: {log}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("prefect server did not answer /api/health within 120 s")
    yield url
    try:  # send buffered run logs while the server is still there
        from prefect.logging.handlers import APILogHandler

        APILogHandler.flush()
    except Exception:
        pass
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class Project:
    """A throw-away project directory with one environment file and helpers to drive it."""

    def __init__(self, root: Path, name: str = "staging"):
        self.root, self.name = root, name
        self.cdir = root / "deployments"
        self.cdir.mkdir(parents=True, exist_ok=True)
        self.listen, self.blue, self.green = (f"127.0.0.1:{free_port()}" for _ in range(3))
        self.state_dir = root / ".turnout" / name
        self.extra = ""
        self.router_extra = ""
        self.health_timeout = 15
        self.rollback = "watch = 0"

    @property
    def url(self) -> str:
        return f"http://{self.listen}/"

    def toml(self) -> str:
        from turnout.app.demo import demo_environment

        return demo_environment(
            self.name,
            f".turnout/{self.name}",
            self.listen,
            self.blue,
            self.green,
            app=DEMO_APP,
            router_extra=f"verify_timeout = 10\n{self.router_extra}",
            health=f"timeout = {self.health_timeout}\nmax_response_time = 1.0\ninterval = 0.2",
            extra=f'\n[[notifiers]]\nkind = "log"\n{self.extra}',
            rollback=self.rollback,
        )

    def write(self, text: str | None = None) -> Project:
        (self.cdir / f"{self.name}.toml").write_text(text if text is not None else self.toml())
        return self

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run `turnout ARGS` in the project directory, as an operator or a CI job would."""
        return subprocess.run(
            [sys.executable, "-m", "turnout.app.cli", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def runtime(self):
        from turnout.runtime import open_runtime

        return open_runtime(self.name, self.cdir, check=False)

    def deploy(self, image: str, **kw: Any) -> dict[str, Any]:
        """Run the blue-green flow in this process (against the test Prefect server)."""
        from turnout.flows import blue_green

        return blue_green.run(environment=self.name, image=image, config_dir=str(self.cdir), **kw)

    def get(self, path: str = "/") -> httpx.Response:
        return httpx.get(self.url.rstrip("/") + path, headers={"Connection": "close"}, timeout=5)

    def cleanup(self) -> None:
        """Stop every process this project's environment started (by recorded PID) and its NGINX."""
        from turnout.config import load_environment
        from turnout.registry import get_registry

        try:  # only the router and the target: a gate from an uninstalled package must not stop cleanup
            env = load_environment(self.name, self.cdir)
            reg = get_registry()
            target = reg.create("target", env.target, env, "target")
            router = reg.create("router", env.router, env, "router")
        except Exception:
            return
        for slot in ("blue", "green"):
            try:
                target.stop(slot)
            except Exception:
                pass
        try:
            router.stop()
        except Exception:
            pass


@pytest.fixture
def project(tmp_path):
    """A project whose environment uses managed NGINX and the demo service; cleaned up afterwards."""
    p = Project(tmp_path).write()
    yield p
    p.cleanup()


@pytest.fixture
def nginx():
    """The nginx binary (a real component)."""
    return require("nginx")


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees the plugins its own environment variables select."""
    from turnout.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


class Prometheus:
    """A real Prometheus (Debian package) on a free port, scraping `targets` every second."""

    def __init__(self, root: Path, targets: list[str], config: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        conf = root / "prometheus.yml"
        conf.write_text(
            config
            or (
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                "- job_name: slots\n  static_configs:\n  - targets: [" + ", ".join(f"'{t}'" for t in targets) + "]\n"
            )
        )
        self.log = open(root / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={conf}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail("prometheus did not become ready in 30 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path):
    """Start a real Prometheus scraping the given targets; stopped after the test."""
    require("prometheus")
    started = []

    def start(targets: list[str], config: str | None = None) -> Prometheus:
        p = Prometheus(tmp_path / f"prometheus-{len(started)}", targets, config)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


class Tmpfs:
    """Small tmpfs filesystems mounted over a project's directories (a full disk, a read-only one)."""

    def __init__(self, project: Project):
        self.project, self.mounted = project, []

    def mount(self, path: Path, size: str = "4m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
        self.mounted.append(path)
        return path

    def read_only(self, path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)

    def fill(self, path: Path) -> None:
        """Write a filler file until the filesystem is full."""
        from plugins_for_tests.fill_disk import fill

        fill(path)

    def unmount_all(self) -> None:
        self.project.cleanup()  # its processes and NGINX keep files open on the mount: stop them first
        for path in reversed(self.mounted):
            subprocess.run(["umount", str(path)], check=False)
            if os.path.ismount(path):  # still busy (a process we did not start): detach, freed when it lets go
                subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tmpfs(project):
    """Mount tmpfs filesystems in `project` (needs root); unmounted after the test, the project's processes first."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        if CI:
            pytest.fail("mounting a tmpfs needs root and mount(8), and CI=true requires the disk-fault tests")
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    t = Tmpfs(project)
    yield t
    t.unmount_all()


def snapshot(p: Project) -> dict[str, Any]:
    """What "nothing touched" is checked on: the router's config file, the ledger's rows, the slots' processes."""
    import sqlite3

    from turnout.addresses import parse_address, port_in_use
    from turnout.procs import pid_alive

    upstream = p.state_dir / "nginx" / "upstream.conf"
    ledger = p.state_dir / "ledger.sqlite"
    rows: Any = None
    if ledger.is_file() and ledger.stat().st_size:
        wal = ledger.with_name(ledger.name + "-wal")
        # With no write-ahead log the file holds everything: read it as immutable, which needs no -shm file
        # (a full disk has no room for one). Otherwise read it as turnout does.
        con = (
            sqlite3.connect(ledger)
            if wal.is_file() and wal.stat().st_size
            else sqlite3.connect(f"file:{ledger}?immutable=1", uri=True)
        )
        try:
            rows = {
                t: con.execute(f"select * from {t} order by 1").fetchall()
                for t in ("deployments", "actions", "locks", "slots", "environments")
            }
        finally:
            con.close()
    elif ledger.exists():
        rows = ledger.read_bytes()
    pids = sorted(json.loads(f.read_text())["pid"] for f in p.state_dir.glob("slots/*/replica-*.json"))
    return {
        "router_config": upstream.read_text() if upstream.is_file() else None,
        "ledger": rows,
        "processes": [(pid, pid_alive(pid)) for pid in pids],
        "listening": [a for a in (p.listen, p.blue, p.green) if port_in_use(*parse_address(a))],
    }
