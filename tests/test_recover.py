"""Crash recovery: SIGKILL the deploying process at each phase (TURNOUT_CRASH_AT), then `turnout recover`."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import Project
from turnout.loadgen import Load

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")

CANARY = "\n[canary]\nstages = [25, 50, 100]\nduration = 2\ninterval = 1\nmin_requests = 5\n"


@pytest.fixture
def live(project: Project):
    """staging with demo:v1 live in blue."""
    project.extra += CANARY
    project.rollback = "watch = 0\ninterval = 1"
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    return project


def crash(p: Project, point: str, *args: str) -> None:
    """Run a deploying command that SIGKILLs itself at `point`; it must really die there."""
    r = p.cli(*args, "-e", "staging", env={"TURNOUT_CRASH_AT": point}, timeout=120)
    assert r.returncode == -signal.SIGKILL, f"did not crash at {point}: rc={r.returncode}\n{r.stderr[-1500:]}"


def recover(p: Project) -> dict:
    r = p.cli("recover", "-e", "staging", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_safe(p: Project, release: str) -> None:
    """Whole traffic on a healthy slot serving `release`; the ledger agrees and nothing is left running."""
    rt = p.runtime()
    split = rt.router.get_split()
    assert len(split.live_slots()) == 1, split
    live = split.live_slots()[0]
    assert rt.target.status(live).running
    assert p.get("/").headers["x-release"] == release
    st = rt.ledger.environment_state("staging")
    assert st["split"] == split and st["lock"] is None
    assert st["last_deployment"]["status"] != "running"
    other = "green" if live == "blue" else "blue"
    if st["slots"][other]["state"] != "warm":
        assert not rt.target.status(other).running, "a slot that is neither live nor warm was left running"


@pytest.mark.parametrize(
    "point, release",
    [
        ("start:done", "demo:v1"),  # started, never routed: stopped, traffic stays on v1
        ("shift:before-apply", "demo:v1"),  # intent written, router untouched
        ("shift:applied", "demo:v2"),  # router switched, not verified: v2 healthy, the switch is finished
        ("shift:verified", "demo:v2"),
        ("post-switch", "demo:v2"),
    ],
)
def test_blue_green_killed_at_each_phase_is_recovered(live, point, release):
    crash(live, point, "blue-green", "--image", "demo:v2")
    out = recover(live)
    assert out["outcome"] == "recovered", out
    assert_safe(live, release)
    dep = live.runtime().ledger.history("staging", 1)[0]
    assert dep["release"] == "demo:v2" and dep["status"] in ("aborted", "promoted")
    assert "recovered" in dep["reason"] and "crashed" in dep["reason"]


def test_blue_green_killed_during_the_watch_keeps_the_old_slot_warm(live):
    crash(live, "watch", "blue-green", "--image", "demo:v2", "--watch", "30")
    recover(live)
    assert_safe(live, "demo:v2")
    rt = live.runtime()
    assert rt.target.status("blue").running, "the previous release stays warm: the watch never finished"
    assert rt.ledger.environment_state("staging")["last_known_good"] == "demo:v1"


@pytest.mark.parametrize("point", ["shift:applied@stage", "analysis"])
def test_canary_killed_mid_ramp_goes_back_to_stable(live, point):
    load = Load(live.url + "api/items", connections=2, max_requests=30000, max_seconds=60).start()
    try:
        crash(live, point, "canary", "--image", "demo:v2", "--auto-promote")
        assert len(live.runtime().router.get_split().live_slots()) == 2, "the crash left traffic split"
        out = recover(live)
    finally:
        load.stop()
    assert out["outcome"] == "recovered"
    assert_safe(live, "demo:v1")
    assert live.runtime().ledger.history("staging", 1)[0]["status"] == "aborted"


def test_the_next_deployment_recovers_a_crashed_run_by_itself(live):
    load = Load(live.url + "api/items", connections=2, max_requests=30000, max_seconds=90).start()
    try:
        crash(live, "analysis", "canary", "--image", "demo:v2", "--auto-promote")
        r = live.cli("blue-green", "--image", "demo:v5", "-e", "staging", "--json")
    finally:
        load.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "promoted"
    assert_safe(live, "demo:v5")
    statuses = [d["status"] for d in live.runtime().ledger.history("staging", 3)]
    assert statuses[:2] == ["promoted", "aborted"], statuses


def test_recover_on_a_consistent_environment_changes_nothing(live):
    before = live.runtime().ledger.history("staging", 5)
    out = recover(live)
    assert out["outcome"] == "consistent" and "agree" in out["reason"]
    assert live.runtime().ledger.history("staging", 5) == before


def test_a_router_changed_behind_the_ledgers_back_is_put_back(live):
    from turnout.models import Split

    assert live.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"
    rt = live.runtime()
    rt.router.apply(Split.canary("green", 50), rt.backends())  # someone edited the proxy by hand
    out = recover(live)
    assert out["outcome"] == "recovered" and "ledger's split is put back" in out["reason"], out
    assert_safe(live, "demo:v2")


def test_recover_is_refused_for_an_unknown_environment(project):
    r = project.cli("recover", "-e", "nope")
    assert r.returncode == 2 and "nope" in r.stderr


# --- recovery believes the router, not the file it wrote (issue 9, defect 1) -------------------------


def _all_ok(p: Project, n: int = 10) -> list[int]:
    """Status codes of `n` requests through NGINX (a refused connection counts as 0)."""
    import httpx

    codes = []
    for _ in range(n):
        try:
            codes.append(p.get("/api/items").status_code)
        except httpx.HTTPError:
            codes.append(0)
    return codes


def test_a_rollback_killed_between_writing_the_router_file_and_the_reload_never_stops_the_serving_slot(live):
    assert live.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"  # v2 in green, v1 warm in blue
    crash(live, "router:written", "rollback")
    rt = live.runtime()
    assert rt.router.get_split().weight("blue") == 100  # the file says the rollback's target ...
    assert live.get("/").headers["x-release"] == "demo:v2"  # ... NGINX still serves green: never loaded
    assert _all_ok(live) == [200] * 10
    out = recover(live)
    assert out["outcome"] == "recovered", out
    assert _all_ok(live) == [200] * 10
    assert_safe(live, "demo:v1")  # the rollback is finished: traffic moved to the warm v1 first
    again = recover(live)
    assert again["outcome"] == "consistent", again


def test_a_blue_green_killed_between_writing_and_reloading_is_not_taken_for_a_finished_switch(live):
    crash(live, "router:written", "blue-green", "--image", "demo:v2")
    assert live.runtime().router.get_split().weight("green") == 100  # the file says green ...
    assert live.get("/").headers["x-release"] == "demo:v1"  # ... NGINX serves blue
    load = Load(live.url + "api/items", connections=2, max_requests=20000, max_seconds=60).start()
    try:
        r = live.cli("blue-green", "--image", "demo:v5", "-e", "staging", "--json")
    finally:
        res = load.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    assert res.non_2xx == 0 and res.connection_errors == 0, res.as_dict()
    assert_safe(live, "demo:v5")


def test_recover_restarts_a_stopped_managed_nginx(live):
    rt = live.runtime()
    rt.router.stop()
    assert _all_ok(live, 3) == [0, 0, 0]
    out = recover(live)
    assert out["outcome"] == "recovered" and "not serving" in out["reason"], out
    assert _all_ok(live) == [200] * 10
    assert_safe(live, "demo:v1")


def test_status_shows_what_nginx_serves_not_what_the_file_says(live):
    crash(live, "router:written", "blue-green", "--image", "demo:v2")
    r = live.cli("status", "-e", "staging")
    assert r.returncode == 0, r.stderr
    assert "blue=100 green=0 (turnout's file says blue=0 green=100, never loaded)" in r.stdout, r.stdout


def test_recover_during_a_deployment_is_refused_at_once_naming_the_holder(live):
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turnout.app.cli",
            "blue-green",
            "--image",
            "demo:v2",
            "-e",
            "staging",
            "--traffic-switch-delay",
            "30",
        ],
        cwd=live.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rt = live.runtime()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (rt.ledger.lock_holder("staging") or {}).get("deployment_id"):
            time.sleep(0.2)
        r = live.cli("recover", "-e", "staging", timeout=30)  # the lock wait was 60 s
        assert r.returncode == 2, r.stderr[-1500:]
        assert f"pid {proc.pid}" in r.stderr and "busy" in r.stderr, r.stderr
    finally:
        proc.terminate()
        proc.wait(60)


# --- a failed run never leaves the environment stuck (issue 9, defect 2) -----------------------------


def _failed_mid_canary(p: Project) -> None:
    """What an unexpected error mid-canary used to leave: traffic split, the deployment `failed`."""
    crash(p, "analysis", "canary", "--image", "demo:v3", "--auto-promote")
    rt = p.runtime()
    dep = rt.ledger.history("staging", 1)[0]
    rt.ledger.finish_deployment(dep["id"], "failed", "unexpected error: ValidationError (the old behaviour)")
    assert len(rt.router.get_split().live_slots()) == 2


def test_recover_puts_traffic_left_split_by_a_failed_canary_back_on_stable(live):
    _failed_mid_canary(live)
    out = recover(live)
    assert out["outcome"] == "recovered" and "split" in out["reason"], out
    assert_safe(live, "demo:v1")
    assert recover(live)["outcome"] == "consistent"


@pytest.mark.parametrize("args", [(), ("--rollback-to", "demo:v1")])
def test_rollback_takes_a_failed_canary_to_a_safe_state(live, args):
    _failed_mid_canary(live)
    r = live.cli("rollback", "-e", "staging", "--json", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_safe(live, "demo:v1")


def test_a_new_deployment_after_a_failed_canary_recovers_first(live):
    _failed_mid_canary(live)
    r = live.cli("blue-green", "--image", "demo:v5", "-e", "staging", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert_safe(live, "demo:v5")
