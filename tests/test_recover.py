"""Crash recovery: SIGKILL the deploying process at each phase (TURNOUT_CRASH_AT), then `turnout recover`."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import Project
from turnout.loadgen import Load

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")

CANARY = '\n[canary]\nstages = [25, 50, 100]\nduration = 2\ninterval = 1\nmin_requests = 5\n'


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


@pytest.mark.parametrize("point, release", [
    ("start:done", "demo:v1"),             # started, never routed: stopped, traffic stays on v1
    ("shift:before-apply", "demo:v1"),     # intent written, router untouched
    ("shift:applied", "demo:v2"),          # router switched, not verified: v2 healthy, the switch is finished
    ("shift:verified", "demo:v2"),
    ("post-switch", "demo:v2"),
])
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

