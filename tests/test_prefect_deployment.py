"""prefect.yaml: `prefect deploy --all`, then a run started the way CI jobs and the UI start one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Project

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")
PREFECT = [sys.executable, "-m", "prefect"]


def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PREFECT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PWD": str(ROOT)},
    )


def test_deploy_all_then_deployment_run_with_a_worker(project: Project, tmp_path: Path):
    r = prefect("work-pool", "create", "local-process", "--type", "process", "--overwrite")
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect("--no-prompt", "deploy", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect("deployment", "ls")
    assert "blue-green/staging" in r.stdout and "blue-green/production" in r.stdout

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "local-process", "--limit", "2"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(ROOT)},
    )
    try:
        # a CI job: the same deployment, pointed at the test's environment directory
        r = prefect(
            "deployment",
            "run",
            "blue-green/staging",
            "-p",
            'image="demo:v1"',
            "-p",
            f'config_dir="{project.cdir}"',
            "--watch",
            "--watch-interval",
            "1",
            timeout=240,
        )
        assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "worker.log").read_text()[-3000:]
        assert project.get().headers["x-release"] == "demo:v1"
        # bad input is refused by the server when the run is created: no run, nothing touched
        r = prefect("deployment", "run", "blue-green/staging", "-p", 'keep_old="maybe"', "-p", 'image="demo:v2"')
        assert r.returncode == 1 and "keep_old" in (r.stdout + r.stderr)
        r = prefect("deployment", "run", "blue-green/staging", "-p", 'image="demo:v2;reboot"')
        assert r.returncode == 1 and "image" in (r.stdout + r.stderr) and "does not match" in (r.stdout + r.stderr)
        assert project.get().headers["x-release"] == "demo:v1"
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.send_signal(2)
            worker.wait(15)
        log.close()
