"""The watch after promotion and `turnout rollback`: real NGINX, real demo-service processes, real load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import DEMO_APP, Project
from turnout.loadgen import Load

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")

WATCH = "watch = 30\ninterval = 1\nmin_requests = 10\nhealth_failing_for = 2"


def fault(p: Project, slot: str, **behaviour) -> None:
    """Make the process in `slot` misbehave now (the demo service's /admin/fault)."""
    addr = p.blue if slot == "blue" else p.green
    r = httpx.post(f"http://{addr}/admin/fault", json=behaviour, timeout=5)
    assert r.status_code == 200, r.text


def when_watching(p: Project, then, timeout: float = 60) -> threading.Thread:
    """Run `then()` in a thread as soon as the events say the watch started."""

    def wait():
        events = p.state_dir / "events.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if events.exists() and '"phase": "watch"' in events.read_text():
                time.sleep(0.5)
                then()
                return
            time.sleep(0.1)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t


@pytest.fixture
def watched(project: Project):
    """staging with a 30 s watch (1 s measurements) and demo:v1 live in blue."""
    project.rollback = WATCH
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"  # a first deployment has nothing to watch against
    return project


def test_a_clean_watch_makes_the_release_last_known_good_and_retires_the_old_slot(watched):
    load = Load(watched.url + "api/items", connections=2, max_requests=30000, max_seconds=60).start()
    try:
        out = watched.deploy("demo:v2", watch=4)
    finally:
        res = load.stop()
    assert out["outcome"] == "promoted" and "watch clean" in out["reason"], out
    assert res.non_2xx == 0
    st = watched.runtime().ledger.environment_state("staging")
    assert st["last_known_good"] == "demo:v2"
    assert not watched.runtime().target.status("blue").running


def test_a_release_turning_bad_during_the_watch_is_rolled_back_at_once(watched):
    load = Load(watched.url + "api/items", connections=2, max_requests=60000, max_seconds=90).start()
    try:
        when_watching(watched, lambda: fault(watched, "green", error_rate=0.5))
        t0 = time.monotonic()
        out = watched.deploy("demo:v2")
        took = time.monotonic() - t0
    finally:
        load.stop()
    assert out["outcome"] == "rolled-back" and out["exit_code"] == 1, out
    assert "5xx rate" in out["reason"] and "traffic is back on blue (demo:v1)" in out["reason"]
    assert took < 25, "rolled back long before the 30 s watch ended"
    assert watched.get("/").headers["x-release"] == "demo:v1"
    ledger = watched.runtime().ledger
    assert ledger.release_verdict("staging", "demo:v2")["verdict"] == "bad"
    assert ledger.environment_state("staging")["last_known_good"] == "demo:v1"
    incidents = list((watched.state_dir / "incidents").iterdir())
    assert len(incidents) == 1 and {"output.log", "metrics.txt", "incident.json"} <= {
        f.name for f in incidents[0].iterdir()
    }
    assert "http_requests_total" in (incidents[0] / "metrics.txt").read_text()  # taken before the slot was stopped
    assert "Incident" in open(out["report"]).read()


def test_the_release_process_dying_during_the_watch_rolls_back(watched):
    def kill():
        os.kill(watched.runtime().target.status("green").pid, 9)

    load = Load(watched.url + "api/items", connections=2, max_requests=60000, max_seconds=90).start()
    try:
        when_watching(watched, kill)
        out = watched.deploy("demo:v2")
    finally:
        load.stop()
    assert out["outcome"] == "rolled-back" and "stopped running" in out["reason"], out
    assert watched.get("/").headers["x-release"] == "demo:v1"


def test_health_failing_longer_than_the_limit_rolls_back(watched):
    load = Load(watched.url + "api/items", connections=2, max_requests=60000, max_seconds=90).start()
    try:
        when_watching(watched, lambda: fault(watched, "green", ready=0))
        out = watched.deploy("demo:v2")
    finally:
        load.stop()
    assert out["outcome"] == "rolled-back" and "health checks failing for" in out["reason"], out
    assert watched.get("/").headers["x-release"] == "demo:v1"


def test_a_watch_without_traffic_keeps_the_release_live_but_not_known_good(watched):
    out = watched.deploy("demo:v2", watch=3)
    assert out["outcome"] == "promoted" and "inconclusive" in out["reason"], out
    rt = watched.runtime()
    assert rt.ledger.environment_state("staging")["last_known_good"] == "demo:v1"
    assert rt.target.status("blue").running, "the old slot stays warm when the watch could not judge"
    assert watched.get("/").headers["x-release"] == "demo:v2"


def test_turnout_rollback_during_a_watch_is_done_by_the_watching_run(watched):
    load = Load(watched.url + "api/items", connections=2, max_requests=60000, max_seconds=90).start()
    results = {}
    try:
        asker = when_watching(
            watched,
            lambda: results.setdefault(
                "cli", watched.cli("rollback", "-e", "staging", "--reason", "pager says so", "--json")
            ),
        )
        out = watched.deploy("demo:v2")
        asker.join(timeout=120)
    finally:
        load.stop()
    assert out["outcome"] == "rolled-back" and "rollback requested: pager says so" in out["reason"], out
    r = results["cli"]
    assert r.returncode == 0, r.stderr
    assert "rolled itself back" in json.loads(r.stdout.strip().splitlines()[-1])["reason"]
    assert watched.get("/").headers["x-release"] == "demo:v1"


@pytest.fixture
def two_good(project: Project, tmp_path, monkeypatch):
    """v1 then v2 promoted without a watch: both known good, v2 live in green, blue stopped."""
    releases = tmp_path / "releases.toml"
    shutil.copy(DEMO_APP / "releases.toml", releases)
    monkeypatch.setenv("DEMO_RELEASES_FILE", str(releases))
    project.write(project.toml().replace("stop_grace = 5", 'stop_grace = 5\npass_env = ["DEMO_RELEASES_FILE"]'))
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    assert project.deploy("demo:v2")["outcome"] == "promoted"
    project.releases = releases
    return project


def test_rollback_starts_the_last_known_good_in_the_idle_slot(two_good):
    p = two_good
    r = p.cli("rollback", "-e", "staging", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "rolled-back" and out["release"] == "demo:v1", out
    assert p.get("/").headers["x-release"] == "demo:v1"
    ledger = p.runtime().ledger
    assert ledger.release_verdict("staging", "demo:v2")["verdict"] == "bad"
    assert ledger.history("staging", 1)[0]["strategy"] == "rollback"
    assert not p.runtime().target.status("green").running


def test_rollback_dry_run_prints_the_plan_and_changes_nothing(two_good):
    p = two_good
    before = p.runtime().ledger.history("staging", 5)
    r = p.cli("rollback", "-e", "staging", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert (
        "demo:v1 in slot blue" in r.stdout and "(started there first)" in r.stdout and "nothing was changed" in r.stdout
    )
    assert p.runtime().ledger.history("staging", 5) == before
    assert p.get("/").headers["x-release"] == "demo:v2"


def test_the_warm_slot_dead_falls_back_to_starting_the_last_known_good(project):
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    assert project.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"
    rt = project.runtime()
    os.kill(rt.target.status("blue").pid, 9)
    time.sleep(0.5)
    r = project.cli("rollback", "-e", "staging", "--dry-run")
    assert "not running" in r.stdout and "(started there first)" in r.stdout, r.stdout
    r = project.cli("rollback", "-e", "staging")
    assert r.returncode == 0, r.stderr
    assert project.get("/").headers["x-release"] == "demo:v1"


def test_the_last_known_good_failing_its_health_check_stops_and_needs_a_human(two_good):
    p = two_good
    p.releases.write_text(p.releases.read_text().replace("[v1]\n", "[v1]\nready = false\n"))
    out = _rollback_in_process(p)
    assert out["outcome"] == "failed" and out["exit_code"] == 3, out
    assert "failed its health check" in out["reason"] and "a human is needed" in out["reason"]
    assert p.get("/").headers["x-release"] == "demo:v2", "traffic stays where it is healthiest"
    assert not p.runtime().target.status("blue").running
    urgent = [
        json.loads(line)
        for line in (p.state_dir / "events.jsonl").read_text().splitlines()
        if json.loads(line).get("urgent")
    ]
    assert urgent and "a human is needed" in urgent[-1]["message"]


def _rollback_in_process(p: Project, **kw):
    from turnout.flows import rollback

    return rollback.run(environment=p.name, config_dir=str(p.cdir), **kw)


def test_rollback_with_no_history_is_refused(project):
    r = project.cli("rollback", "-e", "staging")
    assert r.returncode == 2 and "nothing was ever deployed in staging" in r.stderr


@pytest.mark.parametrize(
    "target, message",
    [
        ("demo:v9;rm -rf /", "invalid"),
        ("demo:v5", "has never run that release"),
    ],
)
def test_rollback_to_a_malformed_or_unknown_release_is_refused(two_good, target, message):
    r = two_good.cli("rollback", "-e", "staging", "--rollback-to", target)
    assert r.returncode == 2 and message in r.stderr.lower() + r.stderr, r.stderr
    assert two_good.get("/").headers["x-release"] == "demo:v2"


def test_two_rollbacks_at_once_one_runs(two_good):
    p = two_good
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "turnout.app.cli", "rollback", "-e", "staging", "--json"],
            cwd=p.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [(pr.wait(timeout=120), pr.communicate()) for pr in procs]
    assert [rc for rc, _ in outs] == [0, 0], [err[-500:] for _, (_, err) in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for _, (out, _) in outs]
    assert sum("ran while this one waited" in r["reason"] for r in results) == 1, results
    assert [d["strategy"] for d in p.runtime().ledger.history("staging", 5)].count("rollback") == 1
    assert p.get("/").headers["x-release"] == "demo:v1"


def test_a_reason_with_newlines_and_markup_cannot_forge_history_or_the_report(project):
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    assert project.deploy("demo:v2")["outcome"] == "promoted"
    reason = (
        "oops\n#9    2030-01-01 00:00:00 blue-green demo:evil   blue -> green    1.0s promoted \n"
        "# Forged heading\n| 9 | x | forged-row |\n<script>alert(1)</script> <img src=x onerror=alert(1)> [link](http://evil)"
    )
    r = project.cli("rollback", "-e", "staging", "--reason", reason, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rows = project.cli("history", "-e", "staging").stdout.splitlines()
    assert len(rows) == 3 and [row.split()[0] for row in rows] == ["#3", "#2", "#1"], rows
    report = open(out["report"]).read()
    assert "<script" not in report and "<img" not in report and "&lt;script&gt;" in report
    assert not any(line.startswith(("# Forged", "| 9 |", "#9 ")) for line in report.splitlines())
    assert "[link](http://evil)" not in report
    assert "Forged heading" in report  # escaped, not dropped
