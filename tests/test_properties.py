"""Property-based (hypothesis): every malformed value — in CLI arguments, in environment files — is exit 2
with a message and nothing touched: the router's config file, the ledger's rows and the slots' processes
(conftest.snapshot) are exactly as before, on an environment with a release live.

The commands run in-process (click's runner): a rejected value never gets as far as Prefect, so each
example costs milliseconds. Example counts are kept small for CI.
"""

from __future__ import annotations

import math
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Project, snapshot
from turnout.models import RELEASE_PATTERN

pytestmark = pytest.mark.usefixtures("prefect_server", "nginx")

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory, prefect_server):
    """staging with demo:v1 live, and a second environment file the tests may break."""
    from turnout.registry import reset_registry

    p = Project(tmp_path_factory.mktemp("props"))
    p.write()
    reset_registry()
    assert p.deploy("demo:v1")["outcome"] == "promoted"
    yield p
    p.cleanup()


def invoke(args: list[str]):
    from click.testing import CliRunner

    from turnout.app.cli import cli

    return CliRunner().invoke(cli, args)


def refused(p: Project, args: list[str], before) -> str:
    """Run `args`; it must exit 2 with a message and no traceback, and change nothing."""
    r = invoke(args)
    assert r.exit_code == 2, (args, r.exit_code, r.output[-1500:], repr(r.exception))
    assert r.output.strip() and "Traceback" not in r.output, r.output
    assert snapshot(p) == before, f"{args} touched something"
    return r.output


bad_images = st.text(max_size=300).filter(lambda s: not re.fullmatch(RELEASE_PATTERN, s) and "\x00" not in s)
bad_names = st.text(max_size=80).filter(lambda s: not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", s) and "\x00" not in s)
non_positive = st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.just(-math.inf))
not_numbers = st.text(min_size=1, max_size=20).filter(
    lambda s: _not_float(s) and "\x00" not in s and not s.startswith("-")
)


def _not_float(s: str) -> bool:
    try:
        float(s)
        return False
    except ValueError:
        return True


@SETTINGS
@given(image=bad_images, command=st.sampled_from(["blue-green", "canary"]))
def test_a_malformed_image_is_refused(live, image, command):
    refused(live, [command, "--image", image, "-e", "staging", "--config-dir", str(live.cdir)], snapshot(live))


@SETTINGS
@given(name=bad_names, command=st.sampled_from(["blue-green", "canary", "rollback", "recover", "status", "migrate"]))
def test_a_malformed_environment_name_is_refused(live, name, command):
    args = [command, "-e", name, "--config-dir", str(live.cdir)] + (
        ["--image", "demo:v2"] if command in ("blue-green", "canary") else []
    )
    refused(live, args, snapshot(live))


@SETTINGS
@given(
    option=st.sampled_from(
        [
            ("blue-green", "--health-check-timeout"),
            ("canary", "--duration"),
            ("canary", "--interval"),
            ("canary", "--approval-timeout"),
        ]
    ),
    value=st.one_of(non_positive.map(repr), not_numbers),
)
def test_a_malformed_number_is_refused(live, option, value):
    command, flag = option
    refused(
        live,
        [command, "--image", "demo:v2", "-e", "staging", "--config-dir", str(live.cdir), f"{flag}={value}"],
        snapshot(live),
    )


@SETTINGS
@given(
    stages=st.one_of(
        st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=5)
        .filter(lambda xs: any(x < 1 or x > 100 for x in xs))
        .map(lambda xs: ",".join(map(str, xs))),
        st.text(max_size=20).filter(lambda s: not re.fullmatch(r"[0-9]+(,[0-9]+)*", s) and "\x00" not in s),
    )
)
def test_malformed_ramp_stages_are_refused(live, stages):
    refused(
        live,
        ["canary", "--image", "demo:v2", "-e", "staging", "--config-dir", str(live.cdir), "--ramp-stages", stages],
        snapshot(live),
    )


# Values that make an environment file invalid, key by key (each replaces a line of a valid file).
BAD_FIELDS = {
    "health.timeout": st.one_of(
        st.floats(max_value=0.0, allow_nan=False).map(repr), st.just("nan"), st.just("inf"), st.just('"ten"')
    ),
    "router.listen": st.text(min_size=1, max_size=30)
    .filter(lambda s: ":" not in s and '"' not in s and "\\" not in s and s.isprintable())
    .map(lambda s: f'"{s}"'),
    "router.kind": st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
    .filter(lambda s: s != "nginx")
    .map(lambda s: f'"{s}"'),
    "target.stop_grace": st.one_of(st.integers(max_value=-1).map(str), st.just('"soon"')),
}


@SETTINGS
@given(data=st.data(), field=st.sampled_from(sorted(BAD_FIELDS)))
def test_a_malformed_environment_file_is_refused(live, data, field):
    value = data.draw(BAD_FIELDS[field])
    table, key = field.split(".")
    broken = Project(live.root, name="broken")
    broken.listen, broken.blue, broken.green = live.listen, live.blue, live.green  # never started anyway
    text = broken.toml()
    lines, section, done = [], "", False
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        if section == table and re.match(rf"{key}\s*=", line) and not done:
            line, done = f"{key} = {value}", True
        lines.append(line)
        if line.strip() == f"[{table}]" and not done and key not in text.split(f"[{table}]", 1)[1].split("\n[", 1)[0]:
            lines.append(f"{key} = {value}")
            done = True
    assert done, (field, text)
    broken.write("\n".join(lines) + "\n")
    before = snapshot(live)
    try:
        refused(live, ["blue-green", "--image", "demo:v2", "-e", "broken", "--config-dir", str(live.cdir)], before)
        assert not broken.state_dir.exists(), "the broken environment's state directory was created"
    finally:
        broken.cleanup()  # when a value was wrongly accepted: stop what it started, so examples stay independent
        (live.cdir / "broken.toml").unlink()
        shutil.rmtree(broken.state_dir, ignore_errors=True)
