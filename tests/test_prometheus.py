"""The prometheus metrics provider against a real Prometheus scraping real demo-service processes."""

from __future__ import annotations

import time

import pytest

from conftest import Project
from turnout.config import ThresholdsConfig
from turnout.errors import BackendError, ConfigError
from turnout.health import wait_healthy
from turnout.loadgen import Load
from turnout.measurement import StageMeasurement
from turnout.models import Outcome, Split
from turnout.plugins.threshold import ThresholdJudge

pytestmark = pytest.mark.usefixtures("nginx")


def setup(project: Project, prom_url: str, stable: str, canary: str, queries: str = ""):
    project.write(project.toml() + f'\n[metrics]\nkind = "prometheus"\nurl = "{prom_url}"\n{queries}')
    rt = project.runtime()
    for slot, release in (("blue", stable), ("green", canary)):
        urls = rt.target.start(slot, release)
        assert wait_healthy(
            urls, ["/health/ready"], max_response_time=1, timeout=20, status=lambda s=slot: rt.target.status(s)
        ).passed
    rt.router.apply(Split(blue=90, green=10), rt.backends())
    rt.router.verify(Split(blue=90, green=10), rt.backends())
    return rt


def test_an_erroring_canary_is_measured_through_promql(project, prometheus_for):
    prom = prometheus_for([project.blue, project.green])
    rt = setup(project, prom.url, "demo:v1", "demo:v3")
    provider = rt.metrics_provider()
    time.sleep(2)  # a first scrape of both slots: counters exist before the window
    for slot in ("blue", "green"):
        provider.begin(slot, [])
    Load(project.url + "api/items", connections=4, max_requests=20000, max_seconds=4).start().wait()
    time.sleep(2.5)  # the last requests reach Prometheus at its next 1 s scrape
    m = {slot: provider.measure(slot, []) for slot in ("blue", "green")}
    assert m["green"].requests > 50 and m["blue"].requests > 5 * m["green"].requests
    assert m["blue"].errors == 0  # no 5xx series at all for blue: zero, not "no data"
    assert m["green"].errors > 0 and m["green"].p95 is not None
    v = ThresholdJudge(ThresholdsConfig()).judge(StageMeasurement.of(m["green"], m["blue"]))
    assert v.outcome is Outcome.FAIL and "5xx" in v.reason
    assert "increase(http_requests_total" in str(v.evidence["canary"]["source"]["queries"])


def test_a_template_prometheus_rejects_is_a_config_error_before_traffic_moves(project, prometheus_for):
    prom = prometheus_for([project.blue])
    project.write(
        project.toml() + f'\n[metrics]\nkind = "prometheus"\nurl = "{prom.url}"\n'
        '[metrics.queries]\nrequests = "sum(rate(http_requests_total[$window]"\n'
    )
    with pytest.raises(ConfigError, match=r"metrics\.queries: Prometheus rejects"):
        project.runtime().metrics_provider()
    r = project.cli("canary", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2 and "Prometheus rejects" in r.stderr
    assert not (project.state_dir / "slots").exists()


def test_prometheus_going_down_is_a_measurement_error(project, prometheus_for):
    prom = prometheus_for([project.blue, project.green])
    rt = setup(project, prom.url, "demo:v1", "demo:v2")
    provider = rt.metrics_provider()
    provider.begin("green", [])
    prom.stop()
    with pytest.raises(BackendError, match="did not answer"):
        provider.measure("green", [])


def test_prometheus_down_mid_stage_aborts_and_never_promotes(project, prometheus_for, prefect_server):
    import json
    import subprocess
    import sys

    prom = prometheus_for([project.blue, project.green])
    project.extra += (
        f'\n[metrics]\nkind = "prometheus"\nurl = "{prom.url}"\n'
        "\n[canary]\nstages = [25, 100]\nduration = 30\ninterval = 1\nmin_requests = 5\n"
    )
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    load = Load(project.url + "api/items", connections=2, max_requests=100000, max_seconds=120).start()
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turnout.app.cli",
            "canary",
            "--image",
            "demo:v2",
            "-e",
            "staging",
            "--auto-promote",
            "--json",
        ],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rt = project.runtime()
        deadline = time.monotonic() + 180  # a bound, not a speed: the flow starts, the canary gets healthy
        while rt.router.get_split() != Split(blue=75, green=25):
            assert time.monotonic() < deadline, "the canary never reached 25%"
            time.sleep(0.2)
        time.sleep(1.5)
        prom.stop()
        out, err = run.communicate(timeout=120)
    finally:
        load.stop()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["outcome"] == "aborted" and "measurement errors in a row" in result["reason"]
    assert project.runtime().router.get_split() == Split(blue=100, green=0)


def test_templates_selecting_no_series_are_refused_before_anything_moves(project, prometheus_for, prefect_server):
    prom = prometheus_for([project.blue, project.green])
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    project.write(
        project.toml() + f'\n[metrics]\nkind = "prometheus"\nurl = "{prom.url}"\nseries_wait = 2\n'
        "[metrics.queries]\n"
        "requests = 'sum(increase(app_requests_total{slot=\"$slot\"}[$window]))'\n"
    )
    rt = project.runtime()
    deadline = time.monotonic() + 30  # the stable slot's series reach Prometheus at its first scrape
    while not rt.metrics_provider()._names().count("http_requests_total") and time.monotonic() < deadline:
        time.sleep(0.5)
    rows = len(rt.ledger.history("staging", 100))
    r = project.cli("canary", "--image", "demo:v2", "-e", "staging", "--auto-promote")
    assert r.returncode == 2, r.stderr[-2000:]
    assert 'no series match requests (app_requests_total{slot="blue"})' in r.stderr, r.stderr[-2000:]
    assert "http_requests_total" in r.stderr  # what Prometheus does hold
    assert len(rt.ledger.history("staging", 100)) == rows and not rt.target.status("green").running
