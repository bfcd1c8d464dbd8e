"""Bad input exits 2 with a message naming the problem, and touches nothing.

"Nothing touched" is checked on disk: no state directory (so no ledger row, no pid file, no NGINX
config) and nothing listening on the slot or router addresses.
"""

from __future__ import annotations

import pytest

from conftest import Project
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


@pytest.mark.parametrize("image", ["demo v2", 'demo:"v2"', "demo:'v2'", "demo:v2;rm -rf /", "demo:{v2}",
                                   "demo:v2}", "demo:v2\nserver 10.0.0.1:80;", "$(reboot)", ""])
def test_image_names_with_metacharacters_are_refused(project, image):
    r = project.cli("blue-green", "--image", image, "-e", "staging")
    assert r.returncode == 2, r.stderr
    assert "--image" in r.stderr
    assert_untouched(project)


@pytest.mark.parametrize("address, why", [("127.0.0.1", "is not host:port"), ("127.0.0.1:http", "no valid port"),
                                          ("127.0.0.1:70000", "no valid port"), (":8081", "no valid host")])
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
    from turnout.runtime import validate_environment
    from conftest import ROOT

    for name in ("staging", "production"):
        env = validate_environment(name, ROOT / "deployments")
        assert env.router.kind == "nginx" and env.target.kind == "process"
