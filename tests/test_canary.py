"""Canary end to end: real NGINX weights, real demo-service processes, real load, the scrape provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import Project
from turnout.loadgen import Load

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")

CANARY = "\n[canary]\nstages = [25, 50, 100]\nduration = 2\ninterval = 1\nmin_requests = 15\n"


@pytest.fixture
def live(project: Project):
    """staging with demo:v1 live in blue and canary settings fit for a test."""
    project.extra += CANARY
    project.write()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    return project


def canary(p: Project, image: str, **kw):
    from turnout.flows import canary as flow

    return flow.run(environment=p.name, image=image, config_dir=str(p.cdir), **kw)


def test_healthy_canary_ramps_and_promotes_under_load(live):
    load = Load(live.url + "api/items", connections=4, max_requests=50000, max_seconds=90).start()
    out = canary(live, "demo:v2", auto_promote=True)
    res = load.stop()
    assert out["outcome"] == "promoted" and out["slot"] == "green"
    assert res.non_2xx == 0 and res.connection_errors == 0, res.as_dict()
    assert {live.get().headers["x-release"] for _ in range(5)} == {"demo:v2"}
    dep = live.runtime().ledger.deployment(out["deployment_id"])
    steps = [v for v in dep["verdicts"] if v["phase"] == "step"]
    assert {v["evidence"]["weight"] for v in steps} == {25, 50} and all(v["outcome"] == "pass" for v in steps)
    assert steps[0]["evidence"]["canary"]["requests"] >= 15
    from prefect.artifacts import Artifact

    assert Artifact.get("turnout-staging-canary-analysis") is not None


def test_erroring_canary_is_aborted_at_the_first_stage_with_evidence(live):
    load = Load(live.url + "api/items", connections=4, max_requests=50000, max_seconds=90).start()
    try:
        r = live.cli("canary", "--image", "demo:v3", "-e", "staging", "--auto-promote", "--json")
    finally:
        load.stop()
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 1 and out["outcome"] == "aborted", r.stderr
    assert "canary analysis at 25%" in out["reason"] and "5xx" in out["reason"]
    assert "stage  25% #1: canary" in r.stderr  # the live line
    from pathlib import Path

    chart = Path(out["report"]).with_suffix(".svg")
    assert chart.is_file() and "<svg" in chart.read_text()[:500]
    assert "![canary vs stable](" in Path(out["report"]).read_text()
    assert {live.get().headers["x-release"] for _ in range(10)} == {"demo:v1"}
    rt = live.runtime()
    assert rt.router.get_split().as_dict() == {"blue": 100, "green": 0}
    assert rt.target.status("green").state == "stopped"
    failed = [v for v in rt.ledger.deployment(out["deployment_id"])["verdicts"] if v["outcome"] == "fail"]
    assert failed and failed[0]["evidence"]["canary"]["errors"] > 0 and failed[0]["evidence"]["stable"]["errors"] == 0


def test_without_traffic_the_canary_is_inconclusive_and_never_promoted(live):
    out = canary(live, "demo:v2", auto_promote=True)
    assert out["outcome"] == "aborted" and "inconclusive" in out["reason"]
    assert live.get().headers["x-release"] == "demo:v1"


def _waiting_canary(live: Project) -> subprocess.Popen:
    """`turnout canary demo:v2` (no auto-promote) once it holds at the first stage waiting for approval."""
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turnout.app.cli",
            "canary",
            "--image",
            "demo:v2",
            "-e",
            "staging",
            "--approval-timeout",
            "60",
            "--json",
        ],
        cwd=live.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events = live.state_dir / "events.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and first.poll() is None:
        if events.exists() and "waiting for promotion" in events.read_text():
            return first
        time.sleep(0.3)
    first.kill()
    pytest.fail(f"the canary never waited for promotion: {first.communicate()[1][-2000:]}")


def _paused_run_id(live: Project) -> str:
    """The Prefect flow run of the waiting canary, once the server shows it Paused."""
    run_id = live.runtime().ledger.history(live.name, limit=1)[0]["flow_run_id"]
    api = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]
        if state["type"] == "PAUSED":
            return run_id
        time.sleep(0.3)
    pytest.fail(f"flow run {run_id} never paused: {state}")


def _finish(first: subprocess.Popen) -> dict:
    out, err = first.communicate(timeout=120)
    assert first.returncode in (0, 1), err
    return json.loads(out.strip().splitlines()[-1])


def test_waits_after_the_first_stage_until_promoted(live):
    load = Load(live.url + "api/items", connections=4, max_requests=80000, max_seconds=120).start()
    first = _waiting_canary(live)
    try:
        assert live.runtime().router.get_split().as_dict() == {"blue": 75, "green": 25}
        r = live.cli("canary", "--promote", "-e", "staging")
        assert r.returncode == 0 and "promotion requested" in r.stdout
        out = _finish(first)
    finally:
        load.stop()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and out["outcome"] == "promoted"
    assert live.get().headers["x-release"] == "demo:v2"


def test_approval_from_the_prefect_ui_form_continues_the_ramp(live):
    """The UI's Resume button posts the form to /flow_runs/{id}/resume: do exactly that."""
    load = Load(live.url + "api/items", connections=4, max_requests=80000, max_seconds=120).start()
    first = _waiting_canary(live)
    try:
        run_id = _paused_run_id(live)
        api = os.environ["PREFECT_API_URL"]
        schema = httpx.post(
            f"{api}/flow_runs/{run_id}/input/filter", json={"prefix": "paused-promote", "limit": 10}
        ).json()
        assert any("approved" in json.dumps(item) for item in schema), schema  # the form the UI renders
        r = _resume_as_the_ui(run_id, {"approved": True, "approver": "alice", "comment": "graphs look fine"})
        assert r.status_code == 201, r.text
        out = _finish(first)
    finally:
        load.stop()
        if first.poll() is None:
            first.kill()
    assert out["outcome"] == "promoted"
    assert live.get().headers["x-release"] == "demo:v2"
    verdicts = live.runtime().ledger.deployment(out["deployment_id"])["verdicts"]
    assert any(v["gate"] == "approval" and "alice" in v["reason"] for v in verdicts), verdicts


def _resume_as_the_ui(run_id: str, run_input: dict) -> httpx.Response:
    """The REST call the UI's Resume form makes; a 503 (the SQLite-backed test server's "database is locked"
    under load) is retried, as Prefect's own client does."""
    for attempt in range(6):
        r = httpx.post(f"{os.environ['PREFECT_API_URL']}/flow_runs/{run_id}/resume", json={"run_input": run_input})
        if r.status_code != 503:
            return r
        time.sleep(0.5 * 2**attempt)
    return r


def test_rejection_from_the_prefect_ui_aborts_with_traffic_back_on_stable(live):
    load = Load(live.url + "api/items", connections=4, max_requests=80000, max_seconds=120).start()
    first = _waiting_canary(live)
    try:
        run_id = _paused_run_id(live)
        r = _resume_as_the_ui(run_id, {"approved": False, "approver": "bob", "comment": "p95 creeping up"})
        assert r.status_code == 201, r.text
        out = _finish(first)
    finally:
        load.stop()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1 and out["outcome"] == "aborted"
    assert "p95 creeping up" in out["reason"] and "bob" in out["reason"]
    assert live.runtime().router.get_split().as_dict() == {"blue": 100, "green": 0}
    assert live.get().headers["x-release"] == "demo:v1"


def test_the_canary_dying_mid_stage_aborts_with_traffic_back_on_stable(live):
    load = Load(live.url + "api/items", connections=2, max_requests=50000, max_seconds=90).start()
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turnout.app.cli",
            "canary",
            "--image",
            "demo:v2",
            "-e",
            "staging",
            "--duration",
            "20",
            "--auto-promote",
            "--json",
        ],
        cwd=live.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rt = live.runtime()
        deadline = time.monotonic() + 60
        while (rt.router.get_split() or None) != rt.router.get_split().__class__(blue=75, green=25):
            assert time.monotonic() < deadline, "the canary never reached 25%"
            time.sleep(0.2)
        import os
        import signal

        for rec in rt.target._records("green"):
            os.kill(rec["pid"], signal.SIGKILL)
        out, err = first.communicate(timeout=120)
    finally:
        load.stop()
    assert first.returncode == 1, err
    result = json.loads(out.strip().splitlines()[-1])
    assert "the canary stopped running" in result["reason"] and "back on blue" in result["reason"]
    assert live.runtime().router.get_split().as_dict() == {"blue": 100, "green": 0}


def test_promote_with_no_canary_in_progress_is_refused(project):
    r = project.cli("canary", "--promote", "-e", "staging")
    assert r.returncode == 2 and "no canary is in progress in staging" in r.stderr


@pytest.mark.parametrize(
    "args, why",
    [
        (["--ramp-stages", ""], "must not be empty"),
        (["--ramp-stages", "10,5,100"], "strictly increasing"),
        (["--ramp-stages", "0,50,100"], "within 1..100"),
        (["--ramp-stages", "10,150"], "within 1..100"),
        (["--ramp-stages", "10,50"], "must be 100"),
        (["--ramp-stages", "ten"], "comma-separated"),
        (["--duration", "0"], "--duration"),
        (["--duration", "-3"], "--duration"),
    ],
)
def test_bad_canary_input_exits_2_before_anything_moves(project, args, why):
    r = project.cli("canary", "--image", "demo:v2", "-e", "staging", *args)
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert not project.state_dir.exists()


def test_no_approval_within_the_timeout_aborts_never_promotes(live):
    load = Load(live.url + "api/items", connections=4, max_requests=40000, max_seconds=60).start()
    try:
        out = canary(live, "demo:v2", approval_timeout=3)
    finally:
        load.stop()
    assert out["outcome"] == "aborted" and "no promotion within 3s" in out["reason"]
    assert live.runtime().router.get_split().as_dict() == {"blue": 100, "green": 0}
    assert live.get().headers["x-release"] == "demo:v1"


def counting_env(count) -> dict[str, str]:
    """The environment of a `turnout` process that loads the counting metrics provider (tests/plugins_for_tests)."""
    return {
        "PYTHONPATH": str(Path(__file__).parent),
        "TURNOUT_PLUGIN_MODULES": "plugins_for_tests.counting_metrics",
        "TURNOUT_COUNT_FILE": str(count),
    }


def test_the_command_line_resolves_a_runs_inputs_once(live, tmp_path):
    """`turnout canary` checks its inputs before Prefect starts and the flow runs with those very inputs:
    the metrics source is built, validated and checked against the live slot once, not again in the flow."""
    count = tmp_path / "count.txt"
    live.extra += '\n[metrics]\nkind = "counting"\n'
    live.write()
    env = counting_env(count)
    load = Load(live.url + "api/items", connections=2, max_requests=20000, max_seconds=60).start()
    try:
        r = live.cli("canary", "--image", "demo:v2", "-e", "staging", "--auto-promote", "--json", env=env)
    finally:
        load.stop()
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "promoted", r.stderr
    calls = [line.split(" pid=")[0] for line in count.read_text().splitlines()]
    assert calls == ["built", "validated", "check_series live", "check_series new"], calls


def test_a_bad_metrics_source_is_refused_before_prefect_starts(live, tmp_path):
    """A metrics source that cannot read the live slot's series: exit 2 from the command line's own
    check, no flow run created (its refusal never reaches the flow), nothing moved."""
    before = live.runtime().router.get_split()
    live.extra += '\n[metrics]\nkind = "counting"\nrequests_metric = "no_such_requests_total"\n'
    live.write()
    count = tmp_path / "count.txt"
    r = live.cli("canary", "--image", "demo:v2", "-e", "staging", "--auto-promote", env=counting_env(count))
    assert r.returncode == 2 and "no_such_requests_total" in r.stderr, r.stderr
    assert "Prefect UI" not in r.stderr  # no flow run was created for a refused input
    assert {live.get().headers["x-release"] for _ in range(5)} == {"demo:v1"}
    assert before is not None and before.blue == 100
    assert [line.split(" pid=")[0] for line in count.read_text().splitlines()] == [
        "built",
        "validated",
        "check_series live",
    ]
