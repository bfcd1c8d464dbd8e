"""Faults in what turnout depends on, beyond the metrics source (test_faults.py): each ends in a safe,
recorded state. The Prefect server unreachable, Prometheus too slow to answer, a slot that cannot be
stopped. (A PostgreSQL restart and a signal mid-migration: test_migrate_faults.py; NGINX's config test
failing: test_blue_green.py and test_nginx.py; the metrics source down or answering NaN: test_faults.py
and test_prometheus.py.)"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import Project, free_port, snapshot
from turnout.loadgen import Load

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")


@pytest.fixture
def live(project: Project):
    """staging with demo:v1 live in blue."""
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    return project


def test_an_unreachable_prefect_server_is_one_clear_line_and_nothing_is_touched(live):
    before = snapshot(live)
    dead = f"http://127.0.0.1:{free_port()}/api"
    r = live.cli("blue-green", "--image", "demo:v2", "-e", "staging", env={"PREFECT_API_URL": dead}, timeout=120)
    assert r.returncode in (2, 3), (r.returncode, r.stderr[-2000:])
    assert "Prefect" in r.stderr and dead.rsplit("/api", 1)[0] in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert snapshot(live) == before
    assert live.get("/").headers["x-release"] == "demo:v1"


class _SlowProxy(BaseHTTPRequestHandler):
    """Prometheus's API, with every instant query answered `delay` seconds late (the series API at once)."""

    upstream = ""
    delay = 5.0

    def do_GET(self):
        if self.path.startswith("/api/v1/query"):
            time.sleep(self.delay)
        r = httpx.get(self.upstream + self.path, timeout=30)
        self._answer(r)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/api/v1/query"):
            time.sleep(self.delay)
        r = httpx.post(
            self.upstream + self.path,
            content=body,
            headers={"Content-Type": self.headers.get("Content-Type", "")},
            timeout=30,
        )
        self._answer(r)

    def _answer(self, r):
        try:
            self.send_response(r.status_code)
            self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)
        except OSError:
            pass  # the client gave up (its timeout): that is the point

    def log_message(self, *args):
        pass


def test_prometheus_too_slow_to_answer_aborts_the_canary_with_traffic_on_stable(live, prometheus_for):
    prom = prometheus_for([live.blue, live.green])
    handler = type("Slow", (_SlowProxy,), {"upstream": prom.url, "delay": 0.0})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        live.write(
            live.toml() + "\n[canary]\nstages = [25, 100]\nduration = 4\ninterval = 1\nmin_requests = 5\n"
            f'\n[metrics]\nkind = "prometheus"\nurl = "http://127.0.0.1:{proxy.server_address[1]}"\n'
            "timeout = 1\n"
        )
        stop = threading.Event()

        def slow_once_the_canary_takes_traffic():  # the preflight is answered in time: the fault is mid-stage
            rt = live.runtime()
            while not stop.is_set():
                split = rt.router.get_split()
                if split is not None and split.weight("green") > 0:
                    handler.delay = 4.0
                    return
                time.sleep(0.1)

        threading.Thread(target=slow_once_the_canary_takes_traffic, daemon=True).start()
        load = Load(live.url + "api/items", connections=2, max_requests=20000, max_seconds=90).start()
        try:
            r = live.cli("canary", "--image", "demo:v2", "-e", "staging", "--auto-promote", "--json")
        finally:
            stop.set()
            load.stop()
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert r.returncode == 1 and r.stdout.strip(), (r.returncode, r.stdout[-1000:], r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "aborted" and "measurement error" in out["reason"], out
    rt = live.runtime()
    assert rt.router.get_split().weight("blue") == 100 and live.get("/").headers["x-release"] == "demo:v1"
    assert not rt.target.status("green").running
    verdicts = rt.ledger.deployment(out["deployment_id"])["verdicts"]
    assert any(v["outcome"] == "error" and "did not answer" in v["reason"] for v in verdicts), verdicts


def test_an_old_slot_that_cannot_be_stopped_leaves_the_promotion_recorded_and_says_so(live, monkeypatch):
    from turnout.errors import BackendError
    from turnout.plugins.process import ProcessTarget

    real_stop = ProcessTarget.stop

    def stop(self, slot):
        if slot == "blue":
            raise BackendError("slot blue: the process would not stop (injected)")
        return real_stop(self, slot)

    monkeypatch.setattr(ProcessTarget, "stop", stop)
    out = live.deploy("demo:v2")
    rt = live.runtime()
    state = rt.router_state()
    assert state.serving and state.split.live_slots() == ["green"], state.describe()
    assert live.get("/").headers["x-release"] == "demo:v2"
    dep = rt.ledger.history("staging", 1)[0]
    assert dep["status"] != "running" and rt.ledger.lock_holder("staging") is None
    assert "would not stop" in (out.get("reason") or ""), out
    slots = rt.ledger.environment_state("staging")["slots"]
    assert slots["blue"]["state"] != "stopped", slots  # the ledger does not claim what did not happen
