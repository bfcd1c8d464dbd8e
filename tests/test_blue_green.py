"""Blue-green end to end: real NGINX, real demo-service processes, a real Prefect server.

Every outcome is checked where an operator would look: the traffic through NGINX, the processes,
the ledger, the report, the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Project
from turnout.loadgen import Load
from turnout.procs import pid_alive

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")
FAULTS = {"PYTHONPATH": str(ROOT / "tests"), "TURNOUT_PLUGIN_MODULES": "plugins_for_tests.faults"}


def releases_seen(p: Project, n: int = 10) -> set[str]:
    return {p.get().headers["x-release"] for _ in range(n)}


def ledger_of(p: Project):
    return p.runtime().ledger


def run_json(p: Project, *args: str, env=None) -> tuple[int, dict]:
    r = p.cli(*args, "--json", env=env)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON outcome (rc {r.returncode}): {r.stdout}\n{r.stderr}"
    return r.returncode, json.loads(lines[-1])


def test_v1_then_v2_under_load_with_zero_errors(project):
    out = project.deploy("demo:v1")
    assert out["outcome"] == "promoted" and out["slot"] == "blue"
    assert releases_seen(project) == {"demo:v1"}
    blue_pid = project.runtime().target.status("blue").pid

    load = Load(project.url, connections=8, max_requests=20000, max_seconds=60).start()
    time.sleep(0.3)
    out = project.deploy("demo:v2")
    time.sleep(0.3)
    res = load.stop()
    assert out["outcome"] == "promoted" and out["slot"] == "green"
    assert res.non_2xx == 0 and res.connection_errors == 0, res.as_dict()
    assert res.by_release["demo:v1"] > 0 and res.by_release["demo:v2"] > 0
    assert releases_seen(project) == {"demo:v2"}
    assert not pid_alive(blue_pid), "the old slot was not retired"

    st = ledger_of(project).environment_state("staging")
    assert st["last_known_good"] == "demo:v2" and st["split"].as_dict() == {"blue": 0, "green": 100}
    dep = ledger_of(project).deployment(out["deployment_id"])
    names = [(a["name"], a["state"]) for a in dep["actions"]]
    assert ("start-release", "done") in names and ("shift-traffic", "done") in names
    assert [v["phase"] for v in dep["verdicts"]] == ["pre-traffic", "post-switch"]
    assert all(c["status"] == 200 for c in dep["verdicts"][0]["evidence"]["checks"])
    report = open(out["report"]).read()
    assert "**Outcome: promoted**" in report and "shift-traffic" in report
    events = [json.loads(line)["kind"] for line in (project.state_dir / "events.jsonl").read_text().splitlines()]
    assert events.count("deployment.finished") == 2 and "traffic.shifted" in events

    from prefect.artifacts import Artifact

    art = Artifact.get("turnout-staging-report")
    assert art is not None and "demo:v2" in art.data


def test_cli_exit_codes_and_a_release_that_never_becomes_ready(project):
    rc, out = run_json(project, "blue-green", "--image", "demo:v1", "-e", "staging")
    assert rc == 0 and out["outcome"] == "promoted"
    gen = project.runtime().router.generation()
    rc, out = run_json(project, "blue-green", "--image", "demo:v4", "-e", "staging", "--health-check-timeout", "2")
    assert rc == 1 and out["outcome"] == "aborted"
    assert (
        "health" in out["reason"]
        and "/health/ready: HTTP 503" in out["reason"]
        and "traffic untouched" in out["reason"]
    )
    assert releases_seen(project) == {"demo:v1"}
    assert project.runtime().router.generation() == gen, "NGINX was reloaded although traffic never moved"
    assert project.runtime().target.status("green").state == "stopped"
    slots = ledger_of(project).environment_state("staging")["slots"]
    assert slots["green"]["state"] == "failed" and slots["green"]["release"] == "demo:v4"
    status = project.cli("status", "-e", "staging")
    assert status.returncode == 0 and "demo:v1" in status.stdout and "aborted" in status.stdout
    hist = project.cli("history", "-e", "staging")
    assert "demo:v4" in hist.stdout and "aborted" in hist.stdout


def test_a_release_that_crashes_at_start_is_aborted_at_once(project):
    project.deploy("demo:v1")
    out = project.deploy("demo:v6")
    assert (
        out["outcome"] == "aborted" and "exited with code 3" in out["reason"] and "crashing at start" in out["reason"]
    )
    dep = ledger_of(project).deployment(out["deployment_id"])
    assert dep["verdicts"][0]["evidence"]["attempts"] <= 3  # it did not wait out the health timeout
    assert releases_seen(project) == {"demo:v1"}


def test_dry_run_prints_the_plan_and_changes_nothing(project):
    project.deploy("demo:v1")
    before = (project.runtime().router.include.read_text(), len(ledger_of(project).history("staging")))
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "live slot : blue running demo:v1" in r.stdout and "idle slot : green" in r.stdout
    assert "--release demo:v2" in r.stdout and f"+    server {project.green} weight=1;" in r.stdout
    assert (project.runtime().router.include.read_text(), len(ledger_of(project).history("staging"))) == before
    assert project.runtime().target.status("green").state == "stopped"
    # one code path: the command line's dry run answers exactly what the flow's dry run returns
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == project.deploy("demo:v2", dry_run=True)
    assert (project.runtime().router.include.read_text(), len(ledger_of(project).history("staging"))) == before


def test_keep_old_leaves_the_previous_slot_warm(project):
    project.deploy("demo:v1")
    out = project.deploy("demo:v2", keep_old=True)
    assert out["outcome"] == "promoted" and "kept running demo:v1" in out["reason"]
    assert project.runtime().target.status("blue").running
    assert ledger_of(project).environment_state("staging")["slots"]["blue"]["state"] == "warm"
    out = project.deploy("demo:v5")  # the warm slot is replaced by the next release
    assert out["outcome"] == "promoted" and out["slot"] == "blue" and releases_seen(project) == {"demo:v5"}


def test_failure_after_the_switch_returns_traffic_to_the_old_slot(project):
    rc, _ = run_json(project, "blue-green", "--image", "demo:v1", "-e", "staging")
    assert rc == 0
    rc, out = run_json(
        project, "blue-green", "--image", "demo:v2", "-e", "staging", env={**FAULTS, "TURNOUT_FAULT": "post-switch:new"}
    )
    assert rc == 1 and out["outcome"] == "aborted"
    assert "post-switch gate health" in out["reason"] and "traffic is back on blue (demo:v1)" in out["reason"]
    assert releases_seen(project) == {"demo:v1"}
    dep = ledger_of(project).deployment(out["deployment_id"])
    assert [a["phase"] for a in dep["actions"] if a["name"] == "shift-traffic"] == ["switch", "switch-back"]
    assert ledger_of(project).environment_state("staging")["split"].as_dict() == {"blue": 100, "green": 0}


def test_old_slot_dying_during_the_switch_still_ends_on_a_healthy_slot(project):
    project.deploy("demo:v1")
    rc, out = run_json(
        project, "blue-green", "--image", "demo:v2", "-e", "staging", env={**FAULTS, "TURNOUT_FAULT": "switch:old"}
    )
    assert rc == 0 and out["outcome"] == "promoted"
    assert "the old slot blue had stopped running" in out["reason"]
    assert releases_seen(project) == {"demo:v2"}


def test_no_healthy_slot_left_is_failed_and_says_so(project):
    project.deploy("demo:v1")
    rc, out = run_json(
        project,
        "blue-green",
        "--image",
        "demo:v2",
        "-e",
        "staging",
        env={**FAULTS, "TURNOUT_FAULT": "switch:old,post-switch:new"},
    )
    assert rc == 3 and out["outcome"] == "failed"
    assert "the old slot blue is not running" in out["reason"]
    assert ledger_of(project).history("staging")[0]["status"] == "failed"


def test_managed_nginx_that_died_is_restarted_by_the_next_switch(project):
    project.deploy("demo:v1")
    router = project.runtime().router
    os.kill(int(router.pid_file.read_text()), 9)
    deadline = time.monotonic() + 5
    while router.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = project.deploy("demo:v2")
    assert out["outcome"] == "promoted" and releases_seen(project) == {"demo:v2"}


def test_a_second_deployment_is_refused_while_one_runs(project):
    project.deploy("demo:v1")
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turnout.app.cli",
            "blue-green",
            "--image",
            "demo:v4",
            "-e",
            "staging",
            "--health-check-timeout",
            "20",
        ],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        led = ledger_of(project)
        deadline = time.monotonic() + 60
        while led.lock_holder("staging") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert led.lock_holder("staging") is not None
        r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
        assert r.returncode == 2 and "is busy" in r.stderr and "not queued" in r.stderr
        status = project.cli("status", "-e", "staging")
        assert "in progress" in status.stdout
    finally:
        first.terminate()
        first.wait(60)


# --- external mode: the operator's NGINX ---------------------------------------------------------


@pytest.fixture
def external(project, tmp_path):
    """Switch the project to an operator-run NGINX that includes turnout's file; deploy v1 through it."""
    from test_nginx import OperatorNginx

    op = OperatorNginx(tmp_path / "operator")
    op.conf.write_text(op.conf.read_text().replace("turnout_t_1", "turnout_staging"))
    project.router_extra = (
        f'mode = "external"\ninclude_file = "{op.include}"\npid_file = "{op.root}/nginx.pid"\n'
        f"test_command = {json.dumps([*op.ctl, '-t', '-q'])}\n"
        f"reload_command = {json.dumps([*op.ctl, '-s', 'reload'])}\n"
        f'verify_url = "http://127.0.0.1:{op.port}/"\n'
    )
    project.write()
    router = project.runtime().router
    # the operator's NGINX cannot start without the include: seed it with a split to the blue slot
    op.include.write_text(
        router.render_include(__import__("turnout.models").models.Split.all_to("blue"), project.runtime().backends(), 0)
    )
    op.start()
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    yield op
    op.stop()


def test_external_nginx_config_test_failing_aborts_with_traffic_untouched(project, external):
    before = external.include.read_text()
    external.conf.write_text(external.conf.read_text().replace("access_log off;", "access_log off"))
    rc, out = run_json(project, "blue-green", "--image", "demo:v2", "-e", "staging")
    assert rc == 1 and out["outcome"] == "aborted" and "nginx config test failed" in out["reason"]
    assert external.include.read_text() == before
    # the seed made blue look live, so v1 went to green and the refused v2 to blue
    assert project.runtime().target.status("blue").state == "stopped"
    import httpx

    assert httpx.get(f"http://127.0.0.1:{external.port}/").headers["x-release"] == "demo:v1"


def test_external_nginx_not_running_is_refused_with_nothing_started(project, external):
    before = external.include.read_text()
    external.stop()
    deadline = time.monotonic() + 5
    while project.runtime().router.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 3, r.stderr[-2000:]  # a human must start their NGINX
    assert "not serving" in r.stderr and "service manager" in r.stderr, r.stderr[-2000:]
    assert external.include.read_text() == before
    assert project.runtime().target.status("blue").state == "stopped"
    assert project.runtime().target.status("green").running  # v1 was never touched


def test_an_unexpected_error_puts_traffic_back_and_frees_the_lock(project, monkeypatch):
    from turnout.flows import _steps
    from turnout.models import Phase

    project.deploy("demo:v1")
    real = _steps.run_gates

    def broken(rt, dep, phase, *a, **k):
        if phase is Phase.POST_SWITCH:
            raise RuntimeError("simulated bug")
        return real(rt, dep, phase, *a, **k)

    monkeypatch.setattr(_steps, "run_gates", broken)
    out = project.deploy("demo:v2")
    assert out["outcome"] == "aborted" and "unexpected error: RuntimeError: simulated bug" in out["reason"], out
    led = ledger_of(project)
    assert led.history("staging")[0]["status"] == "aborted" and led.lock_holder("staging") is None
    assert project.get("/").headers["x-release"] == "demo:v1"  # the bug never leaves traffic on v2


def test_a_disk_filling_mid_run_is_one_line_and_exit_3_then_recover(project, tmpfs):
    tmpfs.mount(project.state_dir, "4m")
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    r = project.cli(
        "blue-green",
        "--image",
        "demo:v2",
        "-e",
        "staging",
        env={
            "PYTHONPATH": str(ROOT / "tests"),
            "TURNOUT_PLUGIN_MODULES": "plugins_for_tests.fill_disk",
            "TURNOUT_FILL_DISK_AT": "switch",
            "TURNOUT_CONFIG_DIR": str(project.cdir),
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        },
    )  # what an operator sees by default
    errors = [line for line in r.stderr.splitlines() if line.startswith("turnout: error")]
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and len(errors) == 1, r.stderr
    assert ("no space left" in errors[0].lower() or "disk is full" in errors[0]) and "KiB free" in errors[0], errors[0]
    assert "turnout recover -e staging" in errors[0], errors[0]
    (project.state_dir / "filler").unlink()
    r = project.cli("recover", "-e", "staging")
    assert r.returncode == 0, r.stdout + r.stderr
    assert project.get().status_code == 200


def test_the_command_line_resolves_the_watchs_metrics_source_once(project, tmp_path):
    """`turnout blue-green --watch` builds and checks its metrics source before Prefect starts, and the flow
    watches with that one: built, validated and checked against the live slot once, then the new slot."""
    from test_canary import counting_env

    assert project.deploy("demo:v1")["outcome"] == "promoted"
    project.extra += '\n[metrics]\nkind = "counting"\n'
    project.write()
    count = tmp_path / "count.txt"
    rc, out = run_json(
        project, "blue-green", "--image", "demo:v2", "-e", "staging", "--watch", "1", env=counting_env(count)
    )
    assert rc == 0 and out["outcome"] == "promoted", out
    calls = [line.split(" pid=")[0] for line in count.read_text().splitlines()]
    assert calls == ["built", "validated", "check_series live", "check_series new"], calls
