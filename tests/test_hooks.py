"""Every hook of the contract, exercised through the plugin manager the flows use."""

from __future__ import annotations

import pytest

from conftest import Project
from turnout.errors import ConfigError
from turnout.interfaces import DeployTarget, Gate, MetricsProvider, Notifier, TrafficRouter
from turnout.models import Phase


@pytest.fixture
def every_hook(monkeypatch):
    from turnout.registry import reset_registry

    monkeypatch.setenv("TURNOUT_PLUGIN_MODULES", "plugins_for_tests.every_hook")
    reset_registry()
    import plugins_for_tests.every_hook as mod

    mod.EVENTS.clear()
    mod.NOTIFIED.clear()
    return mod


def test_register_hooks_build_objects_of_each_interface(project: Project, every_hook):
    project.write(
        project.toml()
        .replace('kind = "nginx"', 'kind = "nginx-again"')
        .replace('kind = "process"', 'kind = "process-again"')
        + '\n[metrics]\nkind = "constant"\n\n[[gates]]\nkind = "always-pass"\n\n[[notifiers]]\nkind = "memory"\n'
    )
    rt = project.runtime()
    assert isinstance(rt.router, TrafficRouter) and isinstance(rt.target, DeployTarget)
    assert [n for n, _ in rt.gates_at(Phase.PRE_DEPLOY)] == ["always-pass"]
    assert isinstance(rt.gates[0][1], Gate) and isinstance(rt.notifiers[1][1], Notifier)
    metrics = rt.registry.create("metrics", rt.environment.metrics, rt.environment, "metrics")
    assert isinstance(metrics, MetricsProvider) and metrics.measure("blue", []).requests == 100


def test_deployment_event_reaches_every_plugin_and_every_notifier(project: Project, every_hook):
    project.write(project.toml() + '\n[[notifiers]]\nkind = "memory"\n')
    rt = project.runtime()
    rt.emit("deployment.started", 7, release="demo:v2", message="hello")
    assert [e.kind for e in every_hook.EVENTS] == ["deployment.started"]
    assert [e.deployment_id for e in every_hook.NOTIFIED] == [7]


def test_a_failing_notifier_or_event_hook_never_raises(project: Project, every_hook, monkeypatch):
    project.write(project.toml() + '\n[[notifiers]]\nkind = "slack"\nwebhook_url_env = "TURNOUT_TEST_NO_SUCH_VAR"\n')
    monkeypatch.setattr(every_hook, "EVENTS", None)  # makes the event hook raise
    rt = project.runtime()
    rt.emit("deployment.started", 1, message="still fine")  # no exception


def test_unknown_metrics_kind_is_a_config_error(project: Project):
    project.write(project.toml() + '\n[metrics]\nkind = "graphite"\n')
    with pytest.raises(ConfigError, match="unknown metrics kind 'graphite'"):
        project.runtime()


def test_hooks_are_called_through_pluggy(project: Project, monkeypatch):
    """An implementation may take fewer parameters than the spec, and wrapper plugins run."""
    import plugins_for_tests.no_argument_event as narrow
    import plugins_for_tests.wrapping as wrapping
    from turnout.registry import reset_registry

    monkeypatch.setenv("TURNOUT_PLUGIN_MODULES", "plugins_for_tests.no_argument_event,plugins_for_tests.wrapping")
    reset_registry()
    narrow.CALLS.clear()
    wrapping.SEEN.clear()
    project.write()
    rt = project.runtime()
    assert "register_routers:nginx" in wrapping.SEEN  # the wrapper saw the built-in's answer
    rt.emit("deployment.started", 3, release="demo:v2")
    assert narrow.CALLS == ["called"]
    assert "deployment_event:deployment.started" in wrapping.SEEN
    assert rt.registry.names("router") == ["nginx"]  # answers are still attributed and indexed
