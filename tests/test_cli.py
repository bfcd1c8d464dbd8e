"""The CLI's read-only commands stay fast: they never import Prefect."""

from __future__ import annotations

import subprocess
import sys

from conftest import Project


def test_status_and_history_never_import_prefect(project: Project):
    code = ("import sys, runpy; sys.argv = ['turnout', %r, '-e', 'staging']\n"
            "try: runpy.run_module('turnout.cli', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print('PREFECT LOADED' if 'prefect' in sys.modules else 'no prefect')")
    for cmd in ("status", "history"):
        r = subprocess.run([sys.executable, "-c", code % cmd], cwd=project.root, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("no prefect"), r.stdout


def test_status_of_a_fresh_environment(project: Project):
    r = project.cli("status", "-e", "staging")
    assert r.returncode == 0
    assert "traffic        : not routed yet" in r.stdout and "last known good: -" in r.stdout


def test_help_lists_the_commands(project: Project):
    r = project.cli("--help")
    for cmd in ("blue-green", "status", "history", "plugins", "validate", "demo"):
        assert cmd in r.stdout
