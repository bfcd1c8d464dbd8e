"""SIGTERM and SIGINT end a run the way an abort does: traffic safe, slot stopped, ledger true, lock released."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import Project
from turnout.loadgen import Load
from turnout.models import Split

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")

CANARY = "\n[canary]\nstages = [25, 100]\nduration = 60\ninterval = 1\nmin_requests = 5\n"


@pytest.fixture
def live(project: Project):
    """staging with demo:v1 live in blue."""
    project.extra += CANARY
    project.health_timeout = 60
    project.rollback = "watch = 0\ninterval = 1"
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    return project


def start(p: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "turnout.app.cli", *args, "-e", "staging", "--json"],
        cwd=p.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(p: Project, what: str, pred, timeout: float = 90) -> None:
    rt = p.runtime()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(rt):
            return
        time.sleep(0.2)
    pytest.fail(f"never saw {what}")


def last_action(rt) -> str:
    dep = rt.ledger.history("staging", 1)[0]
    actions = rt.ledger.deployment(dep["id"])["actions"]
    return f"{actions[-1]['phase']}/{actions[-1]['name']}" if actions else ""


def stopped(proc: subprocess.Popen, sig: int) -> tuple[int, dict]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)  # "within a few seconds": a health gate alone would take 60 s
    assert out.strip(), err[-2000:]
    return proc.returncode, json.loads(out.strip().splitlines()[-1])


def assert_safe_on_v1(p: Project) -> None:
    rt = p.runtime()
    assert rt.router.get_split().weight("blue") == 100
    assert all(p.get("/").headers["x-release"] == "demo:v1" for _ in range(5))
    st = rt.ledger.environment_state("staging")
    assert st["lock"] is None, "the lock was left held"
    assert st["last_deployment"]["status"] == "aborted", st["last_deployment"]
    assert not rt.target.status("green").running, "the new slot was left running"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_health_gate_aborts_at_once(live, sig):
    proc = start(live, "blue-green", "--image", "demo:v4", "--health-check-timeout", "60")  # v4 never ready
    wait_for(live, "the health gate", lambda rt: rt.target.status("green").running)
    time.sleep(1)
    code, out = stopped(proc, sig)
    assert code == 1 and out["outcome"] == "aborted", out
    assert signal.Signals(sig).name in out["reason"], out
    assert_safe_on_v1(live)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_canary_puts_all_traffic_back_on_stable(live, sig):
    load = Load(live.url + "api/items", connections=2, max_requests=30000, max_seconds=90).start()
    try:
        proc = start(live, "canary", "--image", "demo:v2", "--auto-promote")
        wait_for(
            live, "the canary at 25%", lambda rt: (rt.router.get_split() or Split.all_to("blue")).weight("green") == 25
        )
        time.sleep(1.5)
        code, out = stopped(proc, sig)
    finally:
        res = load.stop()
    assert code == 1 and out["outcome"] == "aborted", out
    assert_safe_on_v1(live)
    assert res.connection_errors == 0 and res.non_2xx == 0, res.as_dict()


def test_a_second_signal_does_not_cut_the_cleanup_short(live):
    proc = start(live, "blue-green", "--image", "demo:v4", "--health-check-timeout", "60")
    wait_for(live, "the health gate", lambda rt: rt.target.status("green").running)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    code, out = stopped(proc, signal.SIGINT)
    assert code == 1 and out["outcome"] == "aborted", out
    assert_safe_on_v1(live)


def test_a_signal_during_a_rollback_leaves_a_recorded_safe_state(live):
    assert live.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"
    live.runtime().target.stop("blue")  # no warm slot: the rollback must start v1 again in blue
    proc = start(live, "rollback")
    wait_for(live, "the rollback starting v1", lambda rt: rt.target.status("blue").running)
    _code, _out = stopped(proc, signal.SIGTERM)
    rt = live.runtime()
    st = rt.ledger.environment_state("staging")
    assert st["lock"] is None and st["last_deployment"]["status"] != "running", st["last_deployment"]
    split = rt.router.get_split()
    assert len(split.live_slots()) == 1, split
    live_slot = split.live_slots()[0]
    assert rt.target.status(live_slot).running
    assert live.get("/").status_code == 200


def test_a_rollback_during_the_traffic_switch_delay_stops_the_deployment_before_the_switch(live):
    proc = start(live, "blue-green", "--image", "demo:v2", "--traffic-switch-delay", "30")

    def in_delay(rt) -> bool:
        dep = rt.ledger.history("staging", 1)[0]
        return (
            dep["release"] == "demo:v2"
            and dep["status"] == "running"
            and any(
                v["gate"] == "health" and v["phase"] == "pre-traffic" and v["outcome"] == "pass"
                for v in rt.ledger.deployment(dep["id"])["verdicts"]
            )
        )

    wait_for(live, "the switch delay", in_delay)
    r = live.cli("rollback", "-e", "staging", "--json", "--reason", "changed my mind")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (err[-2000:], r.stdout, r.stderr[-2000:])
    deployed = json.loads(out.strip().splitlines()[-1])
    assert deployed["outcome"] == "aborted" and "changed my mind" in deployed["reason"], deployed
    assert r.returncode == 0, r.stderr[-2000:]
    assert_safe_on_v1(live)
