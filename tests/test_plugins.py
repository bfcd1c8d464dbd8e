"""The plugin system: built-ins load like third-party plugins; conflicts and typos fail at start-up."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Project

HOOKS = [
    n.name for n in ast.parse((ROOT / "turnout" / "hookspecs.py").read_text()).body if isinstance(n, ast.FunctionDef)
]
TESTS_ENV = {"PYTHONPATH": str(ROOT / "tests")}


def plugins_json(project: Project, env=None) -> list[dict]:
    r = project.cli("plugins", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_builtins_are_listed_with_their_origin(project):
    rows = {(r["kind"], r["name"]): r for r in plugins_json(project)}
    for key in [
        ("router", "nginx"),
        ("target", "process"),
        ("gate", "health"),
        ("notifier", "log"),
        ("notifier", "slack"),
    ]:
        assert key in rows, key
        assert rows[key]["source"].startswith("turnout 0.1.0 (entry point")


def test_load_plugins_restricts_what_loads(project):
    rows = plugins_json(project, env={"TURNOUT_LOAD_PLUGINS": "nginx,process"})
    assert {r["name"] for r in rows} == {"nginx", "process"}
    # and an environment that needs a plugin not loaded gets the list of what is
    r = project.cli("validate", "-e", "staging", env={"TURNOUT_LOAD_PLUGINS": "nginx,process"})
    assert r.returncode == 2 and "unknown notifier kind 'log'; known: (none loaded)" in r.stderr


def test_two_plugins_claiming_one_name_fail_at_start_up(project):
    r = project.cli("plugins", env={**TESTS_ENV, "TURNOUT_PLUGIN_MODULES": "plugins_for_tests.duplicate_nginx"})
    assert r.returncode == 2
    assert "two plugins register the router 'nginx'" in r.stderr
    assert "turnout.plugins.nginx" in r.stderr and "plugins_for_tests.duplicate_nginx" in r.stderr


def test_a_misspelled_hook_fails_at_start_up(project):
    r = project.cli("plugins", env={**TESTS_ENV, "TURNOUT_PLUGIN_MODULES": "plugins_for_tests.misspelled_hook"})
    assert r.returncode == 2 and "register_routerz" in r.stderr


def test_an_unimportable_plugin_module_is_named(project):
    r = project.cli("plugins", env={"TURNOUT_PLUGIN_MODULES": "no_such_plugin_module"})
    assert r.returncode == 2 and "no_such_plugin_module" in r.stderr


def test_trace_hooks_prints_hook_calls(project):
    r = project.cli("plugins", env={"TURNOUT_TRACE_HOOKS": "1"})
    assert r.returncode == 0 and "register_routers" in r.stderr


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install the example third-party package into its own directory (a real install)."""
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "examples" / "turnout-change-freeze"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return target


def test_third_party_package_is_listed(project, installed_example):
    rows = plugins_json(project, env={"PYTHONPATH": str(installed_example)})
    row = next(r for r in rows if r["name"] == "change-freeze")
    assert row["kind"] == "gate" and row["source"].startswith("turnout-change-freeze 0.1.0")


def test_third_party_gate_is_called_during_a_deployment(project, installed_example, prefect_server, nginx):
    project.extra += '\n[[gates]]\nkind = "change-freeze"\nfreeze_file = "FREEZE"\n'
    project.write()
    (project.root / "FREEZE").write_text("quarterly close, ask #release-managers")
    env = {"PYTHONPATH": str(installed_example)}
    r = project.cli("blue-green", "--image", "demo:v1", "-e", "staging", "--json", env=env)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "aborted" and "change freeze: quarterly close" in out["reason"]
    status = json.loads(project.cli("status", "-e", "staging", "--json", env=env).stdout)
    assert status["slots"]["blue"]["process"]["state"] == "stopped"  # nothing was started
    assert status["router_split"] is None  # no traffic was routed
    (project.root / "FREEZE").unlink()
    r = project.cli("blue-green", "--image", "demo:v1", "-e", "staging", env=env)
    assert r.returncode == 0, r.stderr
    assert project.get().headers["x-release"] == "demo:v1"


def test_third_party_judge_is_listed_and_judges_a_canary(project, installed_example, prefect_server, nginx):
    from turnout.loadgen import Load

    env = {"PYTHONPATH": str(installed_example)}
    row = next(r for r in plugins_json(project, env=env) if r["name"] == "error-budget")
    assert row["kind"] == "judge" and row["source"].startswith("turnout-change-freeze 0.1.0")
    project.extra += (
        "\n[canary]\nstages = [25, 100]\nduration = 2\ninterval = 1\nmin_requests = 15\n"
        '[canary.judge]\nkind = "error-budget"\nbudget = 0.02\n'
    )
    project.write()
    assert project.cli("blue-green", "--image", "demo:v1", "-e", "staging", env=env).returncode == 0
    load = Load(project.url + "api/items", connections=4, max_requests=50000, max_seconds=90).start()
    try:  # demo:v3 answers 5xx on 20% of API calls: far over a 2% budget
        r = project.cli("canary", "--image", "demo:v3", "-e", "staging", "--auto-promote", "--json", env=env)
    finally:
        load.stop()
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 1 and out["outcome"] == "aborted", r.stderr
    assert "error budget spent" in out["reason"]
    assert "stage  25% #" in r.stderr and "error budget spent" in r.stderr  # the live lines name it
    report = Path(out["report"]).read_text()
    assert "error budget spent" in report  # the judge's verdicts are in the deployment's record
    assert project.get().headers["x-release"] == "demo:v1"


def test_an_unknown_judge_is_exit_2_listing_the_known_ones(project):
    project.extra += '\n[canary.judge]\nkind = "bayesian"\n'
    project.write()
    r = project.cli("validate", "-e", "staging")
    assert r.returncode == 2 and "unknown judge kind 'bayesian'" in r.stderr and "sequential" in r.stderr


def test_restricting_the_loaded_plugins_keeps_the_health_gate(project, prefect_server, nginx):
    # the health gate is built by the runtime: a plugin list without "health" (or any judge) still deploys
    env = {"TURNOUT_LOAD_PLUGINS": "nginx,process,scrape,log"}
    r = project.cli("blue-green", "--image", "demo:v1", "-e", "staging", "--json", env=env)
    assert r.returncode == 0, r.stderr
    verdicts = project.runtime().ledger.deployment(json.loads(r.stdout.strip().splitlines()[-1])["deployment_id"])
    assert any(v["gate"] == "health" and v["outcome"] == "pass" for v in verdicts["verdicts"])


def test_every_hook_is_documented_and_tested():
    readme = (ROOT / "README.md").read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != "test_plugins.py")
    for hook in HOOKS:
        assert f"`{hook}" in readme, f"README does not document the hook {hook}"
        assert hook in tests, f"no test exercises the hook {hook}"
