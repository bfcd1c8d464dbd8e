"""Faults in what turnout depends on end in a safe, recorded state: the metrics source answering NaN or
garbage, a service whose metric names are not the configured ones."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Project
from turnout.errors import BackendError
from turnout.loadgen import Load
from turnout.metrics import SlotMetrics

CANARY = "\n[canary]\nstages = [25, 100]\nduration = 4\ninterval = 1\nmin_requests = 5\n"


@pytest.mark.parametrize(
    "field, value", [("requests", math.nan), ("requests", math.inf), ("errors", -1.0), ("window", math.nan)]
)
def test_a_metrics_source_answering_nonsense_is_a_measurement_error(field, value):
    fields = {
        "slot": "green",
        "window": 1.0,
        "requests": 10.0,
        "errors": 0.0,
        field: value,
        "source": {"kind": "prometheus"},
    }
    with pytest.raises(BackendError, match=f"unusable {field} for slot green"):
        SlotMetrics.measured(**fields)


def test_nan_in_a_latency_bucket_is_a_measurement_error():
    with pytest.raises(BackendError, match="buckets"):
        SlotMetrics.measured(slot="blue", window=1, requests=3, buckets=[(0.1, 1.0), (math.inf, math.nan)])


class _Garbage(BaseHTTPRequestHandler):
    body = b'http_requests_total{code="200"} not-a-number\n'

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "body",
    [b'http_requests_total{code="200"} not-a-number\n', b'http_requests_total{code="200"} NaN\n', b"\x00\xff{{{\n"],
)
def test_the_scrape_provider_turns_garbage_into_a_measurement_error(tmp_path, body):
    from turnout.config import load_environment
    from turnout.registry import get_registry

    handler = type("H", (_Garbage,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p = Project(tmp_path).write()
        env = load_environment(p.name, p.cdir)
        from turnout.config import PluginTable

        provider = get_registry().create("metrics", PluginTable(kind="scrape"), env, "metrics")
        ep = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(BackendError):
            provider.begin("green", [ep])
            provider.measure("green", [ep])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("prefect_server", "nginx")
def test_prometheus_answering_nan_mid_canary_aborts_with_traffic_on_stable(project, prometheus_for):
    prom = prometheus_for([project.blue, project.green])
    project.extra += CANARY
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    # a real Prometheus answering NaN for the canary's request count: 0/0 in PromQL
    project.write(
        project.toml() + f'\n[metrics]\nkind = "prometheus"\nurl = "{prom.url}"\n[metrics.queries]\n'
        "requests = 'sum(increase(http_requests_total{slot=\"$slot\"}[$window])) * (0/0)'\n"
    )
    load = Load(project.url + "api/items", connections=2, max_requests=20000, max_seconds=60).start()
    try:
        r = project.cli("canary", "--image", "demo:v3", "-e", "staging", "--auto-promote", "--json")
    finally:
        load.stop()
    assert r.returncode == 1, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "aborted" and "measurement error" in out["reason"], out
    rt = project.runtime()
    assert rt.router.get_split().weight("blue") == 100 and project.get("/").headers["x-release"] == "demo:v1"
    assert not rt.target.status("green").running
    verdicts = rt.ledger.deployment(out["deployment_id"])["verdicts"]
    assert any(v["outcome"] == "error" and "unusable requests" in v["reason"] for v in verdicts), verdicts
    r = project.cli("recover", "-e", "staging", "--json")
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "consistent", r.stdout


@pytest.mark.usefixtures("prefect_server", "nginx")
def test_metric_names_that_do_not_match_are_refused_before_anything_moves(project):
    project.extra += CANARY + '\n[metrics]\nkind = "scrape"\nrequests_metric = "app_requests_total"\n'
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    rt = project.runtime()
    before = (rt.router.get_split(), len(rt.ledger.history("staging", 100)))
    r = project.cli("canary", "--image", "demo:v2", "-e", "staging", "--auto-promote")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no counter app_requests_total (metrics.requests_metric)" in r.stderr, r.stderr
    assert "http_requests (counter)" in r.stderr, r.stderr  # what the service does expose
    assert (rt.router.get_split(), len(rt.ledger.history("staging", 100))) == before
    assert not rt.target.status("green").running
