"""A run's inputs are resolved once: the command line hands the flow what it checked, and only that."""

from __future__ import annotations

import pytest

from turnout.errors import ConfigError
from turnout.flows._inputs import blue_green_inputs, canary_inputs, handing_over, rollback_inputs


def test_the_flow_takes_the_handed_over_inputs_for_the_same_parameters_only(project):
    cli = blue_green_inputs(project.name, "demo:v2", str(project.cdir), watch=0)
    with handing_over(cli):
        params = cli.flow_parameters()
        # another run's parameters (a different release) never take this run's inputs
        other = blue_green_inputs(**{**params, "image": "demo:v3"})
        assert other is not cli and other.release == "demo:v3"
        other.rt.close()
        taken = blue_green_inputs(**params)
        assert taken is cli
        # taken once: a second flow with the same parameters resolves for itself
        again = blue_green_inputs(**params)
        assert again is not cli
        again.rt.close()
    assert blue_green_inputs(**params) is not cli  # nothing is handed over outside the block


def test_the_resolved_parameters_resolve_to_the_same_run(project):
    """What the command line passes the flow (the watch in seconds from `[rollback] watch`) is a fixed point."""
    project.rollback = "watch = 0"
    project.write()
    first = blue_green_inputs(project.name, "demo:v2", str(project.cdir), keep_old=True)
    second = blue_green_inputs(**first.flow_parameters())
    assert second.flow_parameters() == first.flow_parameters() and first.watch == 0
    assert first.ledger_options() == {
        "health_check_timeout": None,
        "traffic_switch_delay": 0.0,
        "keep_old": True,
        "watch": 0,
    }
    first.rt.close()
    second.rt.close()


def test_a_canary_with_nothing_live_is_refused_naming_the_fix(project):
    with pytest.raises(ConfigError, match="deploy the first release with `turnout blue-green`"):
        canary_inputs(project.name, "demo:v2", str(project.cdir))


def test_bad_canary_overrides_are_refused_before_anything_else(project):
    with pytest.raises(ConfigError, match="canary"):
        canary_inputs(project.name, "demo:v2", str(project.cdir), ramp_stages=[50, 10])


def test_a_rollback_of_an_environment_that_never_deployed_is_refused(project):
    with pytest.raises(ConfigError, match="nothing was ever deployed"):
        rollback_inputs(project.name, config_dir=str(project.cdir))
