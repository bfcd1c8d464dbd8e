"""Bad input exits 2 with a message naming the problem, and touches nothing.

"Nothing touched" is checked on disk: no state directory (so no ledger row, no pid file, no NGINX
config) and nothing listening on the slot or router addresses.
"""

from __future__ import annotations

import pytest

from conftest import Project, snapshot
from turnout.addresses import parse_address, port_in_use


def assert_untouched(p: Project) -> None:
    assert not p.state_dir.exists(), f"state was written: {list(p.state_dir.rglob('*'))}"
    for addr in (p.listen, p.blue, p.green):
        assert not port_in_use(*parse_address(addr)), f"something listens on {addr}"


def test_unknown_environment_lists_the_known_ones(project):
    r = project.cli("blue-green", "--image", "demo:v2", "--environment", "prod")
    assert r.returncode == 2
    assert "unknown environment 'prod'" in r.stderr and "known environments: staging" in r.stderr
    assert_untouched(project)


def test_toml_syntax_error_names_the_line(project):
    project.write(project.toml().replace('kind = "nginx"', 'kind = "nginx'))
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2
    assert "TOML syntax error" in r.stderr and "line 5" in r.stderr
    assert_untouched(project)


def test_unknown_router_kind_lists_the_known_ones(project):
    project.write(project.toml().replace('kind = "nginx"', 'kind = "traefik"'))
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2
    assert "unknown router kind 'traefik'" in r.stderr and "known: nginx" in r.stderr
    assert_untouched(project)


@pytest.mark.parametrize(
    "image",
    [
        "demo v2",
        'demo:"v2"',
        "demo:'v2'",
        "demo:v2;rm -rf /",
        "demo:{v2}",
        "demo:v2}",
        "demo:v2\nserver 10.0.0.1:80;",
        "$(reboot)",
        "",
    ],
)
def test_image_names_with_metacharacters_are_refused(project, image):
    r = project.cli("blue-green", "--image", image, "-e", "staging")
    assert r.returncode == 2, r.stderr
    assert "--image" in r.stderr
    assert_untouched(project)


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "is not host:port"),
        ("127.0.0.1:http", "no valid port"),
        ("127.0.0.1:70000", "no valid port"),
        (":8081", "no valid host"),
    ],
)
def test_slot_address_must_be_host_port(project, address, why):
    project.write(project.toml().replace(f'blue = "{project.blue}"', f'blue = "{address}"'))
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2
    assert "target.slots.blue" in r.stderr and why in r.stderr
    assert_untouched(project)


def test_health_timeout_in_file_must_be_positive(project):
    project.health_timeout = 0
    project.write()
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2
    assert "health.timeout" in r.stderr and "greater than 0" in r.stderr
    assert_untouched(project)


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_health_check_timeout_flag_must_be_positive(project, value):
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging", "--health-check-timeout", value)
    assert r.returncode == 2
    assert "--health-check-timeout" in r.stderr
    assert_untouched(project)


def test_unknown_key_is_named(project):
    project.write(project.toml().replace("[health]", "[health]\ntimeuot = 5"))
    r = project.cli("validate", "-e", "staging")
    assert r.returncode == 2
    assert "health.timeuot: unknown key" in r.stderr


def test_router_setting_is_validated_by_the_plugin_model(project):
    project.write(project.toml().replace(f'listen = "{project.listen}"', 'listen = "everywhere"'))
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2
    assert "router" in r.stderr and "not host:port" in r.stderr
    assert_untouched(project)


def test_unknown_placeholder_in_the_command_template(project):
    project.write(project.toml().replace('"{port}"', '"{prot}"'))
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2
    assert "unknown placeholder {prot}" in r.stderr
    assert_untouched(project)


def test_validate_accepts_the_shipped_environments():
    from conftest import ROOT
    from turnout.runtime import validate_environment

    for name in ("staging", "production"):
        env = validate_environment(name, ROOT / "deployments")
        assert env.router.kind == "nginx" and env.target.kind == "process"


def one_line(r) -> str:
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, f"not one line:\n{err}"
    return err


def test_a_read_only_state_dir_is_one_line_and_exit_2(project, tmpfs):
    tmpfs.read_only(tmpfs.mount(project.state_dir))
    for args in (("blue-green", "--image", "demo:v1"), ("rollback",), ("recover",)):
        r = project.cli(*args, "-e", "staging")
        assert r.returncode == 2, (args, r.stderr)
        err = one_line(r)
        assert str(project.state_dir) in err and "read-only" in err, err
    assert list(project.state_dir.iterdir()) == []
    assert snapshot(project)["listening"] == []
    r = project.cli("status", "-e", "staging")  # a read still answers
    assert r.returncode == 0 and "nothing deployed yet" in r.stdout, r.stderr


@pytest.mark.usefixtures("prefect_server", "nginx")
def test_a_full_disk_before_a_run_is_one_line_and_exit_2_nothing_touched(project, tmpfs):
    tmpfs.mount(project.state_dir, "4m")
    assert project.deploy("demo:v1")["outcome"] == "promoted"
    tmpfs.fill(project.state_dir)
    before = snapshot(project)
    for args in (("blue-green", "--image", "demo:v2"), ("canary", "--image", "demo:v2"), ("rollback",), ("recover",)):
        r = project.cli(*args, "-e", "staging")
        assert r.returncode == 2, (args, r.stderr)
        err = one_line(r)
        assert str(project.state_dir) in err and "free" in err, err
        assert snapshot(project) == before, args
    assert project.get().headers["x-release"] == "demo:v1"
    # Even a read needs room: SQLite creates its shared-memory file to read a WAL database. One line, exit 2.
    r = project.cli("status", "-e", "staging")
    assert r.returncode == 2 and "KiB free" in one_line(r), r.stderr


FLOAT_OPTIONS = [
    ("blue-green", "--health-check-timeout"),
    ("blue-green", "--traffic-switch-delay"),
    ("blue-green", "--watch"),
    ("canary", "--duration"),
    ("canary", "--interval"),
    ("canary", "--approval-timeout"),
    ("canary", "--health-check-timeout"),
    ("canary", "--watch"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_float_options_refuse_nan_and_infinity(project, value):
    from click.testing import CliRunner

    from turnout.app.cli import cli

    for command, option in FLOAT_OPTIONS:
        r = CliRunner().invoke(
            cli,
            [command, "--image", "demo:v2", "-e", "staging", "--config-dir", str(project.cdir), f"{option}={value}"],
        )
        assert r.exit_code == 2, (command, option, r.output)
        assert option in r.output and "finite" in r.output, r.output
        assert "Traceback" not in r.output
    assert_untouched(project)


@pytest.mark.parametrize("stages", ["10,,100", ",10,100", "10,100,", "10, ,100", ""])
def test_ramp_stages_with_an_empty_element_are_refused(project, stages):
    r = project.cli("canary", "--image", "demo:v2", "-e", "staging", "--ramp-stages", stages)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]  # click's usage error: usage, hint, then the one line that matters
    assert "--ramp-stages" in err and repr(stages) in err and "empty" in err, err
    assert_untouched(project)


def test_an_over_long_image_tag_is_cut_in_the_error(project):
    image = "demo:" + "v" * 300
    for command in ("blue-green", "canary"):
        r = project.cli(command, "--image", image, "-e", "staging")
        assert r.returncode == 2
        assert image[:60] + "…" in r.stderr and image[:61] not in r.stderr, r.stderr
    bad = "demo:" + "x" * 100 + ";rm"
    r = project.cli("blue-green", "--image", bad, "-e", "staging")
    assert r.returncode == 2 and bad[:60] + "…" in r.stderr and bad[:61] not in r.stderr and "';'" in r.stderr
    assert_untouched(project)


@pytest.mark.parametrize("image", ["demo v2", "demo:v2;rm -rf /", "$(reboot)", ""])
def test_canary_names_the_image_option(project, image):
    r = project.cli("canary", "--image", image, "-e", "staging")
    assert r.returncode == 2, r.stderr
    assert "--image" in r.stderr, r.stderr
    assert_untouched(project)


def test_validate_refuses_a_slot_on_the_routers_listen_address(project):
    _host, port = project.listen.split(":")
    for same in (project.listen, f"localhost:{port}"):  # the same socket, written another way
        project.write(project.toml().replace(f'green = "{project.green}"', f'green = "{same}"'))
        r = project.cli("validate", "-e", "staging")
        assert r.returncode == 2, r.stdout
        err = one_line(r)
        assert "target.slots.green" in err and "router" in err and project.listen in err, err
    assert_untouched(project)


def test_validate_refuses_a_slot_host_that_does_not_resolve(project):
    project.write(project.toml().replace(f'blue = "{project.blue}"', 'blue = "no-such-host.invalid:8081"'))
    r = project.cli("validate", "-e", "staging")
    assert r.returncode == 2, r.stdout
    err = one_line(r)
    assert "target.slots.blue" in err and "no-such-host.invalid" in err and "does not resolve" in err, err
    r = project.cli("blue-green", "--image", "demo:v2", "-e", "staging")
    assert r.returncode == 2 and "does not resolve" in r.stderr
    assert_untouched(project)


def test_validate_allows_a_real_host_outside_loopback(project):
    # 192.0.2.0/24 is TEST-NET-1: it resolves (a literal) and validate sends nothing to it.
    project.write(project.toml().replace(f'green = "{project.green}"', 'green = "192.0.2.10:8082"'))
    r = project.cli("validate", "-e", "staging")
    assert r.returncode == 0, r.stderr
    assert_untouched(project)
