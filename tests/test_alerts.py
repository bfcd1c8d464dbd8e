"""Alerts → rollback: the shipped rules (promtool), the receiver against the real Prefect API, and the whole
path end to end: Prometheus → Alertmanager → turnout alert-receiver → Prefect automation → worker → rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, Project, free_port, require
from turnout.loadgen import Load

RULES = ROOT / "deployments" / "alerts" / "turnout.yml"
PREFECT = [sys.executable, "-m", "prefect"]
TOKEN = "s3cret-token-0123456789abcdef"  # the receiver's bearer token in these tests


def test_the_shipped_rules_pass_promtool_check_and_their_unit_tests():
    promtool = require("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0 and "4 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        [promtool, "test", "rules", str(RULES.with_name("turnout_test.yml"))], capture_output=True, text=True
    )
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def alert(
    status: str = "firing",
    environment: str | None = "staging",
    name: str = "TurnoutHighErrorRate",
    release: str = "demo:v2",
) -> dict:
    labels = {"alertname": name, "severity": "critical", "release": release, "slot": "green"}
    if environment:
        labels["environment"] = environment
    return {
        "version": "4",
        "status": status,
        "receiver": "turnout",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": "5xx rate 50%"},
                "startsAt": "2026-11-28T12:00:00Z",
                "fingerprint": f"fp{time.monotonic_ns()}",
            }
        ],
    }


@pytest.fixture
def receiver(prefect_server):
    """`turnout alert-receiver`'s server (uvicorn in a thread of this process), posting to the test Prefect
    server; start(...) returns its /alertmanager URL. Every server is stopped, and its thread joined, after."""
    from turnout.alert_receiver import AlertReceiver
    from turnout.alert_server import AlertServer, Limits

    servers = []

    def start(api: str | None = None, *, token: str | None = None, limits: Limits | None = None) -> str:
        core = AlertReceiver(api or os.environ["PREFECT_API_URL"], {"staging", "production"}, token=token)
        servers.append(AlertServer(core, ("127.0.0.1", 0), limits or Limits()).start())
        return f"http://127.0.0.1:{servers[-1].address[1]}/alertmanager"

    yield start
    for srv in servers:
        srv.stop()


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


@pytest.mark.parametrize(
    "body, why",
    [
        (alert(status="resolved"), "resolved"),
        (alert(environment="nope"), "unknown environment 'nope'"),
        (alert(environment=None), "no 'environment' label"),
    ],
)
def test_resolved_unknown_or_unlabelled_alerts_trigger_nothing(receiver, body, why):
    r = httpx.post(receiver(), json=body)
    assert r.status_code == 200 and r.json()["accepted"] == 0 and why in r.json()["skipped"][0], r.text


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"version": "4"}',
        b'{"version": "3", "status": "firing", "alerts": []}',
        json.dumps({**alert(), "alerts": [{"status": "on fire", "labels": {}}]}).encode(),
    ],
)
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
    """A real Alertmanager (Debian prometheus-alertmanager) on 127.0.0.1, routing everything to `webhook`
    with the bearer token in `token_file` (the stanza the README shows)."""

    def __init__(self, root: Path, webhook: str, token_file: Path):
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
    http_config:
      authorization:
        type: Bearer
        credentials_file: {token_file}
""")
        self.log = open(root / "alertmanager.log", "w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={conf}",
                f"--storage.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
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
    return subprocess.run(
        [*PREFECT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PWD": str(ROOT)},
    )


def scrape_config(p: Project, alertmanager_port: int) -> str:
    """Prometheus scraping both slots with the labels the shipped rules need, alerting to Alertmanager."""
    jobs = "".join(
        f"""  - targets: ['{addr}']
    labels: {{environment: {p.name}, slot: {slot}}}
"""
        for slot, addr in (("blue", p.blue), ("green", p.green))
    )
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
    project: Project, prometheus_for, tmp_path
):
    started = datetime.now(UTC)
    # v1 then v2 promoted (no watch: the alert path is what is tested), v1 kept warm in blue.
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    assert project.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"

    r = prefect("work-pool", "create", "local-process", "--type", "process", "--overwrite")
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect("--no-prompt", "deploy", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rollback/staging" in prefect("deployment", "ls").stdout

    rport = free_port()
    token_file = tmp_path / "alert-token"
    token_file.write_text(TOKEN + "\n")  # as `openssl rand -hex 32 > FILE` leaves it: both sides strip the newline
    token_file.chmod(0o600)
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("receiver", "worker")}
    procs = []
    am = load = None
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "turnout.app.cli",
                    "alert-receiver",
                    "--listen",
                    f"127.0.0.1:{rport}",
                    "--config-dir",
                    str(project.cdir),
                    "--token-file",
                    str(token_file),
                ],
                stdout=logs["receiver"],
                stderr=subprocess.STDOUT,
                cwd=project.root,
            )
        )
        _wait_http(f"http://127.0.0.1:{rport}/-/healthy", procs[-1], "alert-receiver")
        procs.append(
            subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", "local-process", "--limit", "2"],
                cwd=ROOT,
                stdout=logs["worker"],
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PWD": str(ROOT),
                    "TURNOUT_CONFIG_DIR": str(project.cdir),
                },
            )
        )
        am = Alertmanager(tmp_path / "am", f"http://127.0.0.1:{rport}/alertmanager", token_file)
        prometheus_for([], config=scrape_config(project, am.port))  # the fixture stops it

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
            pytest.fail(
                "no rollback within 180 s:\n"
                + "\n".join(f"--- {n}\n{(tmp_path / f'{n}.log').read_text()[-3000:]}" for n in logs)
            )
        # the flow still runs its post-rollback checks and reports to Prefect: do not stop its worker under it
        api = os.environ["PREFECT_API_URL"]
        final = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")

        def rollback_runs() -> list[dict]:
            """This test's rollback runs (the session's server also holds other tests' runs, some Failed)."""
            runs = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["rollback"]}}}).json()
            return [r for r in runs if datetime.fromisoformat(r["created"]) >= started]

        while time.monotonic() < deadline and not (
            rollback_runs() and all(r["state_type"] in final for r in rollback_runs())
        ):
            time.sleep(0.5)
        first_runs = len(rollback_runs())
        # a storm: the same alert again and again must not roll back a second time
        for _ in range(3):
            assert (
                httpx.post(
                    f"http://127.0.0.1:{rport}/alertmanager", json=alert(), headers={"Authorization": f"Bearer {TOKEN}"}
                ).status_code
                == 200
            )
        storm_end = time.monotonic() + 90
        while time.monotonic() < storm_end and not (
            len(rollback_runs()) >= first_runs + 3 and all(r["state_type"] in final for r in rollback_runs())
        ):
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
    states = [(r["state_type"], r["state_name"], (r.get("state") or {}).get("message")) for r in runs]
    assert len(runs) >= 4 and {t for t, _, _ in states} <= {"COMPLETED", "CANCELLED"}, states
    history = project.runtime().ledger.history("staging", 10)
    assert [d["strategy"] for d in history].count("rollback") == 1, "the storm rolled back only once"
    assert project.get("/").headers["x-release"] == "demo:v1"
    assert "firing alert TurnoutHighErrorRate for staging" in (tmp_path / "receiver.log").read_text()


# ---- hardening (issue 9 item 6): the tests marked "reproduced" failed on the http.server receiver ----


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def raw_request(port: int, data: bytes, *, wait: float = 30.0) -> tuple[int | None, bool]:
    """Send `data` on a fresh connection; (the answer's status or None, whether the server closed the
    connection), waiting at most `wait` s."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            s.sendall(data)
        except OSError:  # the server answered and closed before taking it all: read what it said
            pass
        got, closed, deadline = b"", False, time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
        return (int(got.split()[1]) if got else None), closed


def head(path: str = "/alertmanager", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_negative_content_length_is_400_at_once_without_reading_the_body(receiver):
    # reproduced: http.server did rfile.read(-1), reading to EOF past the 1 MiB limit (a 50 MiB body was
    # buffered); here the connection stays open after the body, so it waited for ever
    body = json.dumps(alert()).encode()
    status, closed = raw_request(_port(receiver()), head(Content_Type="application/json", Content_Length="-1") + body)
    assert status == 400 and closed


def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_sent(receiver):
    status, closed = raw_request(_port(receiver()), head(Content_Length=str(50 << 20)))
    assert status == 413 and closed


def test_a_chunked_body_over_the_limit_is_413_without_waiting_for_its_end(receiver):
    # reproduced: http.server ignored chunked bodies (400 "not an Alertmanager payload")
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"1\r\nx"  # 1 MiB + 1 byte, unfinished
    status, closed = raw_request(_port(receiver()), head(Transfer_Encoding="chunked") + body)
    assert status == 413 and closed


def test_a_chunked_alert_is_accepted(receiver):
    # reproduced: 400 from http.server
    body = json.dumps(alert(status="resolved")).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    data = head(Transfer_Encoding="chunked", Content_Type="application/json") + chunked
    status, _ = raw_request(_port(receiver()), data)
    assert status == 200


def test_stalled_uploads_are_cut_off_and_the_receiver_still_takes_alerts(receiver):
    # reproduced: http.server had no read timeout: 50 stalled uploads held 50 threads, none ever answered
    import socket

    from turnout.alert_server import Limits

    url = receiver(limits=Limits(read_timeout=1))
    stalled = [socket.create_connection(("127.0.0.1", _port(url)), timeout=60) for _ in range(50)]
    try:
        for s in stalled[:25]:  # a body promised and never finished
            s.sendall(head(Content_Length="1000") + b'{"version": ')
        for s in stalled[25:]:  # a head never finished (slow loris)
            s.sendall(b"POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + 60
        answers = []
        for s in stalled:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                answers.append(s.recv(65536).split(b"\r\n")[0])
            except TimeoutError:
                answers.append(None)
        assert None not in answers, f"{answers.count(None)} of 50 stalled connections still open after 60 s"
        assert set(answers[:25]) == {b"HTTP/1.1 408 Request Timeout"} and set(answers[25:]) == {b""}
    finally:
        for s in stalled:
            s.close()
    assert httpx.post(url, json=alert(status="resolved"), timeout=10).status_code == 200


def test_past_the_connection_bound_a_request_is_answered_503_at_once(receiver):
    import socket

    from turnout.alert_server import Limits

    url = receiver(limits=Limits(max_connections=4, read_timeout=120))
    idle = [socket.create_connection(("127.0.0.1", _port(url)), timeout=10) for _ in range(4)]
    try:
        r = httpx.post(url, json=alert(status="resolved"), timeout=30)
        assert r.status_code == 503, r.text  # Alertmanager retries a 5xx
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 30  # the server sees the closes asynchronously
    while (
        status := httpx.post(url, json=alert(status="resolved"), timeout=30).status_code
    ) == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_an_idle_keep_alive_connection_is_closed(receiver):
    import socket

    from turnout.alert_server import Limits

    url = receiver(limits=Limits(keep_alive=0.5))
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=30) as s:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):  # until the server closes the idle connection (TimeoutError after 30 s)
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b'{"status":"ok"}'), got
    assert b"connection: close" not in got.lower()  # closed for idling, not at once


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer"],
)
def test_with_a_token_a_caller_without_it_gets_401_and_triggers_nothing(receiver, authorization):
    url = receiver(token=TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.post(url, json=alert(environment="nope"), headers=headers)
    assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(url, json=alert(), headers=headers)
    assert r.status_code == 401 and "accepted" not in r.text
    r = httpx.post(url, json=alert(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert prefect_events(r.json()["events"][0]), "the authenticated alert reached Prefect"


def test_an_authenticated_caller_is_told_the_known_environments(receiver):
    r = httpx.post(receiver(token=TOKEN), json=alert(environment="nope"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["known_environments"] == ["production", "staging"], r.text


def test_an_unauthenticated_caller_is_not_told_the_environment_names(receiver):
    # reproduced: /-/healthy and the unknown-environment line listed every environment
    url = receiver()
    r = httpx.get(url.replace("/alertmanager", "/-/healthy"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.post(url, json=alert(environment="nope"))
    assert r.status_code == 200 and "'nope'" in r.json()["skipped"][0] and "production" not in r.text, r.text
    r = httpx.post(url.replace("/alertmanager", "/other%0Aline"), json=alert())
    assert r.status_code == 404 and "line" not in r.text  # the path is not echoed


def test_a_newline_in_an_alert_field_cannot_forge_a_log_line(receiver, caplog):
    # reproduced: the alert name reached the log raw, so this forged a "firing alert" line for production
    caplog.set_level("INFO", logger="turnout")
    forged = "Real\n2026-11-28 12:00:00,000 INFO firing alert Forged for production -> Prefect event 1"
    url = receiver()
    assert httpx.post(url, json=alert(name=forged)).json()["accepted"] == 1
    assert httpx.post(url, json=alert(name=forged, environment="nope\r\nx")).json()["accepted"] == 0
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("turnout")]
    assert any("firing alert Real\\n2026" in line for line in lines), lines
    assert any("not triggering" in line and "nope\\r\\nx" in line for line in lines), lines
    assert not [line for line in lines if "\n" in line or "\r" in line]


@pytest.mark.parametrize(
    "value, logged",
    [
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("esc\x1b[31mred", "esc\\u001b[31mred"),
        ("line\u2028sep\u2029para\x85nel", "line\\u2028sep\\u2029para\\u0085nel"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("back\\nslash", "back\\\\nslash"),
        ("Ünïcode ok", "Ünïcode ok"),
    ],
)
def test_log_fields_are_escaped(value, logged):
    from turnout.alert_receiver import log_field

    assert log_field(value) == logged


def test_over_long_log_fields_are_cut():
    from turnout.alert_receiver import log_field

    assert log_field("x" * 1000) == "x" * 200 + "...(+800 chars)"


@pytest.mark.parametrize("listen", ["192.0.2.10:9099", "[2001:db8::1]:9099", "alerts.example:9099"])
def test_listening_beyond_loopback_without_a_token_is_refused_before_anything_starts(project: Project, listen):
    # reproduced: http.server started (or failed to bind) with no authentication at all.
    # Documentation addresses: never this host's, so nothing is exposed even if the check were missing.
    r = project.cli(
        "alert-receiver",
        "--listen",
        listen,
        "--prefect-api-url",
        "http://127.0.0.1:1/api",
        env={"TURNOUT_ALERT_TOKEN": ""},
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "--token-file" in r.stderr and "TURNOUT_ALERT_TOKEN" in r.stderr and "loopback" in r.stderr, r.stderr


def test_beyond_loopback_a_token_lets_it_past_the_check(project: Project, tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    r = project.cli(
        "alert-receiver",
        "--listen",
        "192.0.2.10:9099",
        "--prefect-api-url",
        "http://127.0.0.1:1/api",
        "--token-file",
        str(tmp_path / "token"),
        timeout=60,
    )
    assert r.returncode == 2 and "cannot listen on 192.0.2.10:9099" in r.stderr, r.stderr  # not this host's address


@pytest.mark.parametrize("case", ["both", "empty", "short", "spaces", "missing"])
def test_a_bad_token_is_refused_at_start_without_echoing_it(project: Project, tmp_path, case):
    token_file, env = tmp_path / "token", {"TURNOUT_ALERT_TOKEN": ""}
    token_file.write_text(
        {"both": TOKEN, "empty": " \n", "short": "abc123", "spaces": "not a bearer token at all", "missing": ""}[case]
    )
    if case == "both":
        env = {"TURNOUT_ALERT_TOKEN": TOKEN}
    if case == "missing":
        token_file.unlink()
    r = project.cli(
        "alert-receiver",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--prefect-api-url",
        "http://127.0.0.1:1/api",
        "--token-file",
        str(token_file),
        env=env,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.startswith("turnout: error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert TOKEN not in r.stderr and "abc123" not in r.stderr and "bearer token at all" not in r.stderr


def test_the_cli_honours_a_token_from_the_environment_on_loopback_and_stops_on_sigterm(project: Project, tmp_path):
    port = free_port()
    with open(tmp_path / "receiver.log", "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "turnout.app.cli",
                "alert-receiver",
                "--listen",
                f"127.0.0.1:{port}",
                "--prefect-api-url",
                "http://127.0.0.1:1/api",
                "--config-dir",
                str(project.cdir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=project.root,
            env={**os.environ, "TURNOUT_ALERT_TOKEN": TOKEN},
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/-/healthy", proc, "alert-receiver")
            url = f"http://127.0.0.1:{port}/alertmanager"
            assert httpx.post(url, json=alert(status="resolved")).status_code == 401
            r = httpx.post(url, json=alert(status="resolved"), headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.json()["accepted"] == 0, r.text
            proc.terminate()
            proc.wait(30)
        finally:
            _stop(proc)
    log = (tmp_path / "receiver.log").read_text()
    assert "bearer token required" in log and TOKEN not in log, log


def test_a_stopped_server_leaves_no_thread_and_no_listening_port(prefect_server):
    import socket

    from turnout.alert_receiver import AlertReceiver
    from turnout.alert_server import AlertServer, Limits

    before = set(threading.enumerate())
    # stopped right after handling a request, again and again: the threads that ran it are gone each time
    # (anyio's worker threads used to end a moment after the server's loop, now and then after stop())
    for _ in range(20):
        server = AlertServer(
            AlertReceiver(os.environ["PREFECT_API_URL"], {"staging"}), ("127.0.0.1", 0), Limits(read_timeout=1)
        ).start()
        assert httpx.post(f"http://127.0.0.1:{server.address[1]}/alertmanager", content=b"{}").status_code == 400
        server.stop()
        assert set(threading.enumerate()) <= before
    server = AlertServer(
        AlertReceiver(os.environ["PREFECT_API_URL"], {"staging"}), ("127.0.0.1", 0), Limits(read_timeout=1)
    ).start()
    port = server.address[1]
    assert httpx.post(f"http://127.0.0.1:{port}/alertmanager", json=alert()).status_code == 200
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(head(Content_Length="100") + b"{")  # a request still reading when asked to stop
    try:
        server.stop()
    finally:
        stalled.close()
    assert set(threading.enumerate()) <= before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=2)
