"""Installing turnout adds only turnout's import names: flows/, tasks/ and plugins/ install as
turnout.flows, turnout.tasks and turnout.plugins, so they never collide with another project's
`plugins` or `tasks` package."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

LAYERS = {"turnout": "turnout", "flows": "turnout/flows", "tasks": "turnout/tasks", "plugins": "turnout/plugins"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the checkout's own build files stay untouched)."""
    src = tmp_path_factory.mktemp("src") / "turnout"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", ".turnout", "__pycache__", ".pytest_cache", "tests"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return next(out.glob("turnout-*.whl"))


def test_the_wheel_holds_only_turnout_names(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        top_level = z.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert top_level == ["turnout"]
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"turnout"}
    # every module of the four folders is in it, under its installed name
    expected = {f"{LAYERS[d]}/{p.relative_to(ROOT / d).as_posix()}" for d in LAYERS for p in (ROOT / d).rglob("*.py")}
    assert expected - names == set()
    assert "turnout = turnout.app.cli:main" in entry_points
    assert "nginx = turnout.plugins.nginx" in entry_points


def test_the_installed_distribution_names_only_turnout():
    dist = importlib.metadata.distribution("turnout")
    assert (dist.read_text("top_level.txt") or "").split() == ["turnout"]
    assert all(ep.value.startswith("turnout.") for ep in dist.entry_points), list(dist.entry_points)
    import turnout.flows.blue_green
    import turnout.plugins.nginx
    import turnout.tasks.deploy

    assert Path(turnout.flows.blue_green.__file__).resolve() == ROOT / "flows" / "blue_green.py"
    assert Path(turnout.plugins.nginx.__file__).resolve() == ROOT / "plugins" / "nginx.py"
    assert Path(turnout.tasks.deploy.__file__).resolve() == ROOT / "tasks" / "deploy.py"
