"""Alerts → rollback: the shipped rules (promtool), the receiver against the real Prefect API, and the whole
path end to end: Prometheus → Alertmanager → turnout alert-receiver → Prefect automation → worker → rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, Project, free_port, require
from turnout.loadgen import Load

RULES = ROOT / "deployments" / "alerts" / "turnout.yml"
PREFECT = [sys.executable, "-m", "prefect"]


def test_the_shipped_rules_pass_promtool_check_and_their_unit_tests():
    promtool = require("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0 and "4 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", str(RULES.with_name("turnout_test.yml"))],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def alert(status: str = "firing", environment: str | None = "staging", name: str = "TurnoutHighErrorRate",
          release: str = "demo:v2") -> dict:
    labels = {"alertname": name, "severity": "critical", "release": release, "slot": "green"}
    if environment:
        labels["environment"] = environment
    return {"version": "4", "status": status, "receiver": "turnout", "groupKey": "{}:{}",
            "alerts": [{"status": status, "labels": labels, "annotations": {"summary": "5xx rate 50%"},
                        "startsAt": "2026-11-28T12:00:00Z", "fingerprint": f"fp{time.monotonic_ns()}"}]}


@pytest.fixture
def receiver(prefect_server):
    """`turnout alert-receiver`'s server in this process, posting to the test Prefect server."""
    from turnout.alert_receiver import AlertReceiver

    servers = []

    def start(api: str | None = None):
        srv = AlertReceiver(("127.0.0.1", free_port()), api or os.environ["PREFECT_API_URL"], {"staging", "production"})
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/alertmanager"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def prefect_events(event_id: str) -> list[dict]:
    api = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = httpx.post(f"{api}/events/filter", json={"filter": {"id": {"id": [event_id]}}, "limit": 5})
        found = r.json().get("events", [])
        if found:
            return found
        time.sleep(0.3)
    return []


def test_a_firing_alert_becomes_a_prefect_event_with_the_environment(receiver):
    r = httpx.post(receiver(), json=alert())
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    [event] = prefect_events(r.json()["events"][0])
    assert event["event"] == "turnout.alert.firing"
    assert event["resource"]["turnout.environment"] == "staging"
    assert event["resource"]["release"] == "demo:v2" and event["payload"]["annotations"]["summary"] == "5xx rate 50%"


@pytest.mark.parametrize("body, why", [
    (alert(status="resolved"), "resolved"),
    (alert(environment="nope"), "unknown environment 'nope'"),
    (alert(environment=None), "no 'environment' label"),
])
def test_resolved_unknown_or_unlabelled_alerts_trigger_nothing(receiver, body, why):
    r = httpx.post(receiver(), json=body)
    assert r.status_code == 200 and r.json()["accepted"] == 0 and why in r.json()["skipped"][0], r.text


@pytest.mark.parametrize("body", [b"not json", b'{"version": "4"}', b'{"version": "3", "status": "firing", "alerts": []}',
                                  json.dumps({**alert(), "alerts": [{"status": "on fire", "labels": {}}]}).encode()])
def test_a_malformed_payload_is_400_and_triggers_nothing(receiver, body):
    r = httpx.post(receiver(), content=body)
    assert r.status_code == 400 and "payload" in r.json()["error"], r.text


def test_prefect_not_accepting_the_event_is_502_so_alertmanager_retries(receiver):
    r = httpx.post(receiver(api=f"http://127.0.0.1:{free_port()}/api"), json=alert())
    assert r.status_code == 502 and "unreachable" in r.json()["error"]


def test_the_cli_refuses_a_bad_listen_address_or_no_prefect_api(project: Project):
    r = project.cli("alert-receiver", "--listen", "nowhere", "--prefect-api-url", "http://127.0.0.1:1/api")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
    r = project.cli("alert-receiver", "--prefect-api-url", "", env={"PREFECT_API_URL": ""})
    assert r.returncode == 2 and "--prefect-api-url" in r.stderr


class Alertmanager:
    """A real Alertmanager (Debian prometheus-alertmanager) on 127.0.0.1, routing everything to `webhook`."""

    def __init__(self, root: Path, webhook: str):
        binary = require("prometheus-alertmanager")
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        conf = root / "alertmanager.yml"
        conf.write_text(f"""route:
  receiver: turnout
  group_by: [alertname, environment]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: turnout
  webhook_configs:
  - url: {webhook}
    send_resolved: true
""")
        self.log = open(root / "alertmanager.log", "w")
        self.proc = subprocess.Popen([binary, f"--config.file={conf}", f"--storage.path={root / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _wait_http(f"http://127.0.0.1:{self.port}/-/ready", self.proc, "alertmanager")

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    _stop(proc)
    pytest.fail(f"{what} did not become ready at {url}")


def _stop(proc: subprocess.Popen, grace: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.send_signal(2)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*PREFECT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PWD": str(ROOT)})


def scrape_config(p: Project, alertmanager_port: int) -> str:
    """Prometheus scraping both slots with the labels the shipped rules need, alerting to Alertmanager."""
    jobs = "".join(f"""  - targets: ['{addr}']
    labels: {{environment: {p.name}, slot: {slot}}}
""" for slot, addr in (("blue", p.blue), ("green", p.green)))
    return f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['{RULES}']
alerting:
  alertmanagers:
  - static_configs:
    - targets: ['127.0.0.1:{alertmanager_port}']
scrape_configs:
- job_name: turnout
  honor_labels: true
  static_configs:
{jobs}"""


@pytest.mark.usefixtures("prefect_server", "nginx")
def test_a_release_turning_bad_after_promotion_is_rolled_back_by_an_alert_with_no_human(
        project: Project, prometheus_for, tmp_path):
    # v1 then v2 promoted (no watch: the alert path is what is tested), v1 kept warm in blue.
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    assert project.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"

    r = prefect("work-pool", "create", "local-process", "--type", "process", "--overwrite")
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect("--no-prompt", "deploy", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rollback/staging" in prefect("deployment", "ls").stdout

    rport = free_port()
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("receiver", "worker")}
    procs = []
    am = prom = load = None
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "turnout.cli", "alert-receiver", "--listen", f"127.0.0.1:{rport}",
             "--config-dir", str(project.cdir)], stdout=logs["receiver"], stderr=subprocess.STDOUT, cwd=project.root))
        _wait_http(f"http://127.0.0.1:{rport}/-/healthy", procs[-1], "alert-receiver")
        procs.append(subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "local-process", "--limit", "2"], cwd=ROOT,
            stdout=logs["worker"], stderr=subprocess.STDOUT,
            env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(ROOT),
                 "TURNOUT_CONFIG_DIR": str(project.cdir)}))
        am = Alertmanager(tmp_path / "am", f"http://127.0.0.1:{rport}/alertmanager")
        prom = prometheus_for([], config=scrape_config(project, am.port))

        load = Load(project.url + "api/items", connections=2, max_requests=200000, max_seconds=240).start()
        time.sleep(3)
        r = httpx.post(f"http://{project.green}/admin/fault", json={"error_rate": 0.5})  # v2 turns bad, live
        assert r.status_code == 200
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if project.get("/").headers["x-release"] == "demo:v1":
                break
            time.sleep(0.5)
        else:
            pytest.fail("no rollback within 180 s:\n" + "\n".join(
                f"--- {n}\n{(tmp_path / f'{n}.log').read_text()[-3000:]}" for n in logs))
        # the flow still runs its post-rollback checks and reports to Prefect: do not stop its worker under it
        api = os.environ["PREFECT_API_URL"]
        final = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")

        def rollback_runs() -> list[dict]:
            return httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["rollback"]}}}).json()
        while time.monotonic() < deadline and not (rollback_runs() and all(r["state_type"] in final
                                                                            for r in rollback_runs())):
            time.sleep(0.5)
        first_runs = len(rollback_runs())
        # a storm: the same alert again and again must not roll back a second time
        for _ in range(3):
            assert httpx.post(f"http://127.0.0.1:{rport}/alertmanager", json=alert()).status_code == 200
        storm_end = time.monotonic() + 90
        while time.monotonic() < storm_end and not (len(rollback_runs()) >= first_runs + 3 and all(
                r["state_type"] in final for r in rollback_runs())):
            time.sleep(0.5)
        runs = rollback_runs()
    finally:
        if load:
            load.stop()
        for proc in reversed(procs):
            _stop(proc)
        if am:
            am.stop()
        for f in logs.values():
            f.close()

    dep = project.runtime().ledger.history("staging", 1)[0]
    assert dep["strategy"] == "rollback" and dep["status"] == "rolled-back", dep
    assert "alert TurnoutHighErrorRate" in dep["reason"]
    assert project.runtime().ledger.release_verdict("staging", "demo:v2")["verdict"] == "bad"
    states = [(r["state_type"], r["state_name"]) for r in runs]
    assert len(runs) >= 4 and {t for t, _ in states} <= {"COMPLETED", "CANCELLED"}, states
    history = project.runtime().ledger.history("staging", 10)
    assert [d["strategy"] for d in history].count("rollback") == 1, "the storm rolled back only once"
    assert project.get("/").headers["x-release"] == "demo:v1"
    assert "firing alert TurnoutHighErrorRate for staging" in (tmp_path / "receiver.log").read_text()
