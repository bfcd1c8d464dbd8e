"""The NGINX router against a real NGINX: managed and external modes, failures restore the old file."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from backends import Backend
from conftest import free_port
from turnout.config import Environment, PluginTable
from turnout.errors import BackendError
from turnout.models import Split
from turnout.plugins.nginx import NginxConfig, NginxRouter
from turnout.procs import pid_alive


@pytest.fixture
def backends():
    b, g = Backend("blue"), Backend("green")
    yield {"blue": [b.address], "green": [g.address]}
    b.close()
    g.close()


def make_env(tmp_path: Path) -> Environment:
    return Environment(
        name="t-1",
        state_dir=tmp_path / "state",
        root=tmp_path,
        router=PluginTable(kind="nginx"),
        target=PluginTable(kind="process"),
    )


@pytest.fixture
def managed(tmp_path, nginx):
    router = NginxRouter(NginxConfig(listen=f"127.0.0.1:{free_port()}"), make_env(tmp_path))
    yield router
    router.stop()


def served_by(url: str, n: int) -> Counter:
    with httpx.Client(timeout=5) as c:
        return Counter(c.get(url).headers["x-release"] for _ in range(n))


def test_managed_first_switch_starts_nginx_and_verifies(managed, backends):
    assert managed.get_split() is None
    managed.apply(Split.all_to("blue"), backends)
    evidence = managed.verify(Split.all_to("blue"), backends)
    assert evidence["generation"] == 1 and set(evidence["slots_seen"]) == {"blue"}
    assert managed.get_split() == Split.all_to("blue")
    assert served_by(f"http://{managed.config.listen}/", 20) == {"blue": 20}


def test_weighted_split_is_exact(managed, backends):
    managed.apply(Split(blue=90, green=10), backends)
    managed.verify(Split(blue=90, green=10), backends)
    assert managed.get_split() == Split(blue=90, green=10)
    assert served_by(f"http://{managed.config.listen}/", 200) == {"blue": 180, "green": 20}


def test_switch_is_verified_and_complete(managed, backends):
    managed.apply(Split.all_to("blue"), backends)
    managed.verify(Split.all_to("blue"), backends)
    managed.apply(Split.all_to("green"), backends)
    ev = managed.verify(Split.all_to("green"), backends)
    assert ev["generation"] == 2
    assert served_by(f"http://{managed.config.listen}/", 30) == {"green": 30}


def test_verify_waits_until_no_worker_with_the_old_config_accepts(managed, backends):
    """A reload is in force only when the old workers stop accepting: until then a new connection may
    still meet the old split (seen under CPU load: recovery read the old generation right after a
    verified switch back and refused to stop the canary). The old worker is held with SIGSTOP, so it
    cannot take its quit order; verify must wait for it rather than trust the new workers' answers."""
    import signal
    import threading
    import time

    from turnout.plugins.nginx import _accepting
    from turnout.procs import children_of

    managed.apply(Split.all_to("blue"), backends)
    managed.verify(Split.all_to("blue"), backends)
    (old,) = children_of(managed._master_pid())
    os.kill(old, signal.SIGSTOP)
    held = threading.Timer(1.5, os.kill, (old, signal.SIGCONT))
    try:
        held.start()
        t0 = time.monotonic()
        managed.apply(Split.all_to("green"), backends)
        managed.verify(Split.all_to("green"), backends)
        took = time.monotonic() - t0
        assert not _accepting(old), f"verify returned after {took:.2f}s while the old worker still accepts"
    finally:
        held.cancel()
        os.kill(old, signal.SIGCONT) if pid_alive(old) else None
    assert {managed.observe().generation for _ in range(20)} == {2}


def test_apply_is_idempotent(managed, backends):
    managed.apply(Split.all_to("blue"), backends)
    text = managed.include.read_text()
    managed.apply(Split.all_to("blue"), backends)
    assert managed.include.read_text() == text and managed.generation() == 1


def test_config_is_built_with_crossplane_and_parses_back(managed, backends):
    import crossplane

    managed.apply(Split(blue=25, green=75), backends)
    parsed = crossplane.parse(str(managed.main_conf))
    assert parsed["status"] == "ok", parsed["errors"]
    servers = {
        d["args"][0]: d["args"][1:] for d in parsed["config"][1]["parsed"][0]["block"] if d["directive"] == "server"
    }
    assert servers == {backends["blue"][0]: ["weight=1"], backends["green"][0]: ["weight=3"]}


def test_replicas_share_their_slot_weight(managed, backends):
    extra = Backend("blue")
    try:
        two = {"blue": backends["blue"] + [extra.address], "green": backends["green"]}
        managed.apply(Split(blue=50, green=50), two)
        managed.verify(Split(blue=50, green=50), two)
        assert managed.get_split() == Split(blue=50, green=50)
        assert served_by(f"http://{managed.config.listen}/", 100) == {"blue": 50, "green": 50}
    finally:
        extra.close()


def test_never_an_upstream_without_a_live_server(managed, backends):
    with pytest.raises(ValueError):
        Split(blue=0, green=0)
    with pytest.raises(BackendError, match="no address"):
        managed.apply(Split.all_to("green"), {"blue": backends["blue"], "green": []})
    assert not managed.include.exists() and not managed.running()


def test_plan_shows_the_diff_and_changes_nothing(managed, backends):
    managed.apply(Split.all_to("blue"), backends)
    before = managed.include.read_text()
    diff = managed.plan(Split.all_to("green"), backends)
    assert f"-    server {backends['blue'][0]} weight=1;" in diff
    assert f"+    server {backends['green'][0]} weight=1;" in diff
    assert managed.include.read_text() == before and managed.generation() == 1


def test_verify_fails_when_the_split_never_shows(managed, backends):
    managed.apply(Split.all_to("blue"), backends)
    managed.include.write_text(managed.include.read_text().replace("default 1;", "default 7;"))
    with pytest.raises(BackendError, match="did not confirm"):
        managed.verify(Split.all_to("blue"), backends, timeout=1)


def test_stop_stops_only_our_master(managed, backends):
    managed.apply(Split.all_to("blue"), backends)
    pid = int(managed.pid_file.read_text())
    managed.stop()
    assert not managed.running()
    assert not pid_alive(pid)


# --- external mode: an operator's NGINX that includes turnout's file -----------------------------


class OperatorNginx:
    """An NGINX the operator runs (here: started by the test) with turnout's include inside http {}."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.include = root / "conf.d" / "turnout.conf"
        self.include.parent.mkdir(parents=True)
        (root / "logs").mkdir()
        self.conf = root / "nginx.conf"
        self.conf.write_text(f"""
pid {root}/nginx.pid;
error_log {root}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    include {self.include};
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://turnout_t_1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Turnout-Generation $turnout_t_1_generation always;
            add_header X-Turnout-Slot $turnout_t_1_slot always;
        }}
    }}
}}
""")
        self.ctl = ["nginx", "-p", str(root), "-c", str(self.conf), "-e", f"{root}/logs/error.log"]

    def start(self) -> None:
        """Start it and wait for its pid file: the daemonized master writes it after `nginx` returns."""
        import time

        from turnout.procs import pid_alive

        subprocess.run(self.ctl, check=True, capture_output=True)
        deadline = time.monotonic() + 30  # a bound, not a speed: a loaded machine starts NGINX slowly
        while time.monotonic() < deadline:
            try:
                if pid_alive(int((self.root / "nginx.pid").read_text())):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"the operator's NGINX wrote no pid file; see {self.root / 'logs/error.log'}")

    def stop(self) -> None:
        """Signal the master by its pid file: `nginx -s stop` would refuse when a test broke the config."""
        import signal
        import time

        from turnout.procs import pid_alive

        try:
            pid = int((self.root / "nginx.pid").read_text())
        except (OSError, ValueError):
            return
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def router(self, env: Environment, verify_url: bool) -> NginxRouter:
        return NginxRouter(
            NginxConfig(
                mode="external",
                include_file=str(self.include),
                pid_file=str(self.root / "nginx.pid"),
                test_command=[*self.ctl, "-t", "-q"],
                reload_command=[*self.ctl, "-s", "reload"],
                verify_url=f"http://127.0.0.1:{self.port}/" if verify_url else None,
            ),
            env,
        )


@pytest.fixture
def operator(tmp_path, nginx, backends):
    op = OperatorNginx(tmp_path / "operator")
    # the operator's NGINX needs a valid include before it can start at all
    seed = op.router(make_env(tmp_path), verify_url=True)
    op.include.write_text(seed.render_include(Split.all_to("blue"), backends, 1))
    op.start()
    yield op
    op.stop()


@pytest.mark.parametrize("verify_url", [True, False], ids=["verify-url", "verify-workers"])
def test_external_switch(tmp_path, operator, backends, verify_url):
    router = operator.router(make_env(tmp_path), verify_url)
    router.apply(Split.all_to("green"), backends)
    ev = router.verify(Split.all_to("green"), backends)
    assert ev["verified_by"] == (f"http://127.0.0.1:{operator.port}/" if verify_url else "new workers")
    assert served_by(f"http://127.0.0.1:{operator.port}/", 20) == {"green": 20}


def test_external_config_test_failure_restores_the_previous_file(tmp_path, operator, backends):
    router = operator.router(make_env(tmp_path), True)
    before = operator.include.read_text()
    # the operator's own config is broken elsewhere: nginx -t fails, so nothing may be reloaded
    operator.conf.write_text(operator.conf.read_text().replace("access_log off;", "access_log off"))
    with pytest.raises(BackendError, match="nginx config test failed"):
        router.apply(Split.all_to("green"), backends)
    assert operator.include.read_text() == before
    assert served_by(f"http://127.0.0.1:{operator.port}/", 10) == {"blue": 10}


def test_external_nginx_not_running_restores_the_previous_file(tmp_path, operator, backends):
    router = operator.router(make_env(tmp_path), True)
    before = operator.include.read_text()
    operator.stop()
    import time

    deadline = time.monotonic() + 30  # a bound, not a speed: a loaded machine stops NGINX slowly
    while router.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not router.running(), "the operator's NGINX did not stop"
    with pytest.raises(BackendError, match="not running"):
        router.apply(Split.all_to("green"), backends)
    assert operator.include.read_text() == before
