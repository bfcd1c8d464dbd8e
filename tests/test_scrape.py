"""The scrape metrics provider against real demo-service processes behind real NGINX, with real load."""

from __future__ import annotations

import pytest

from conftest import Project
from turnout.config import ThresholdsConfig
from turnout.errors import BackendError
from turnout.health import wait_healthy
from turnout.loadgen import Load
from turnout.measurement import StageMeasurement
from turnout.models import Outcome, Split
from turnout.plugins.threshold import ThresholdJudge

pytestmark = pytest.mark.usefixtures("nginx")


def canary_setup(project: Project, stable: str, canary: str):
    project.write(project.toml() + '\n[metrics]\nkind = "scrape"\n')
    rt = project.runtime()
    for slot, release in (("blue", stable), ("green", canary)):
        urls = rt.target.start(slot, release)
        v = wait_healthy(
            urls, ["/health/ready"], max_response_time=1, timeout=20, status=lambda s=slot: rt.target.status(s)
        )
        assert v.passed, v.reason
    rt.router.apply(Split(blue=90, green=10), rt.backends())
    rt.router.verify(Split(blue=90, green=10), rt.backends())
    provider = rt.registry.create("metrics", rt.environment.metrics, rt.environment, "metrics")
    return rt, provider


def measure_under_load(project: Project, rt, provider, requests: int = 1000):
    for slot in ("blue", "green"):
        provider.begin(slot, rt.target.endpoints(slot))
    Load(project.url + "api/items", connections=4, max_requests=requests, max_seconds=60).start().wait()
    return {slot: provider.measure(slot, rt.target.endpoints(slot)) for slot in ("blue", "green")}


def test_an_erroring_canary_is_measured_and_failed(project):
    rt, provider = canary_setup(project, "demo:v1", "demo:v3")  # v3: 5xx on 20% of API calls
    # 300 canary requests: enough that a 20% error rate is over the 5-point limit with the judge's
    # 99% confidence however the draw falls (100 requests at an unlucky 14% are not yet)
    m = measure_under_load(project, rt, provider, requests=3000)
    assert m["blue"].requests == 2700 and m["green"].requests == 300  # NGINX's weights are exact
    assert m["blue"].errors == 0 and 25 <= m["green"].errors <= 110
    assert m["green"].p95 is not None and m["green"].p95 < 1.0
    v = ThresholdJudge(ThresholdsConfig()).judge(StageMeasurement.of(m["green"], m["blue"]))
    assert v.outcome is Outcome.FAIL and "5xx" in v.reason


def test_a_healthy_canary_passes(project):
    rt, provider = canary_setup(project, "demo:v1", "demo:v2")
    m = measure_under_load(project, rt, provider)
    assert m["green"].errors == 0 and m["green"].availability == 1.0
    assert ThresholdJudge(ThresholdsConfig()).judge(StageMeasurement.of(m["green"], m["blue"])).outcome is Outcome.PASS


def test_a_restarted_canary_counts_from_zero(project):
    rt, provider = canary_setup(project, "demo:v1", "demo:v2")
    measure_under_load(project, rt, provider, 500)  # counters are now well above zero
    provider.begin("green", rt.target.endpoints("green"))
    rt.target.start("green", "demo:v2")  # restart: its counters reset
    assert wait_healthy([f"http://{project.green}"], ["/health/ready"], max_response_time=1, timeout=20).passed
    m = provider.measure("green", rt.target.endpoints("green"))
    assert 0 <= m.requests <= 5  # only the health probe, never negative


def test_a_dead_canary_is_a_measurement_error(project):
    rt, provider = canary_setup(project, "demo:v1", "demo:v2")
    provider.begin("green", rt.target.endpoints("green"))
    rt.target.stop("green")
    with pytest.raises(BackendError, match=r"scrape of http://.*/metrics failed"):
        provider.measure("green", rt.target.endpoints("green"))
