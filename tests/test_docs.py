"""The plugin contract, its documentation and its conformance tests stay in step (as datasette's do).

Every hook in `turnout/hookspecs.py` appears in the README's "Writing a plugin" section with its exact
signature, and the README lists no hook that does not exist. Every registration hook has a kind, a
Protocol in `turnout/interfaces.py`, and a conformance test here that builds each built-in of that kind
and checks it satisfies the Protocol: a new kind, or a new built-in, fails here until it has one.
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import ROOT, Project
from turnout.interfaces import (
    PLUGIN_KINDS,
    DeployTarget,
    Gate,
    Judge,
    MetricsProvider,
    Notifier,
    Registration,
    TrafficRouter,
)
from turnout.models import Phase

HOOKSPECS = {
    n.name: n for n in ast.parse((ROOT / "turnout" / "hookspecs.py").read_text()).body if isinstance(n, ast.FunctionDef)
}

#: Each registration hook: the kind of plugin it registers and the Protocol that kind's objects satisfy.
KINDS: dict[str, tuple[str, type]] = {
    "register_routers": ("router", TrafficRouter),
    "register_targets": ("target", DeployTarget),
    "register_metrics_providers": ("metrics", MetricsProvider),
    "register_gates": ("gate", Gate),
    "register_notifiers": ("notifier", Notifier),
    "register_judges": ("judge", Judge),
}


def signature(node: ast.FunctionDef) -> str:
    """A hook's signature as written in hookspecs.py, e.g. `deployment_event(event: DeploymentEvent) -> None`."""
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{node.name}({ast.unparse(node.args)}){returns}"


def plugin_section() -> str:
    """The README's "Writing a plugin" section (up to the next second-level heading)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Writing a plugin\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# --- documentation ------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", sorted(HOOKSPECS))
def test_every_hook_is_documented_with_its_exact_signature(hook):
    sig = signature(HOOKSPECS[hook])
    assert f"`{sig}`" in plugin_section(), (
        f"README.md, 'Writing a plugin', does not show `{sig}`: copy the signature from turnout/hookspecs.py"
    )


def test_the_readme_lists_only_hooks_that_exist():
    documented = re.findall(r"^- `(\w+)\(", plugin_section(), re.MULTILINE)
    assert documented, "the README's hook list (lines starting with - `hook(`) is gone"
    assert set(documented) - set(HOOKSPECS) == set(), "the README documents hooks hookspecs.py does not have"


# --- conformance --------------------------------------------------------------------------------


def test_every_registration_hook_has_a_kind_and_a_protocol():
    hooks = {h for h in HOOKSPECS if h.startswith("register_")}
    assert hooks == set(KINDS), (
        "a registration hook was added or removed: give it a (kind, Protocol) in KINDS above, so the "
        "conformance test below builds its built-ins"
    )
    assert {kind for kind, _ in KINDS.values()} == set(PLUGIN_KINDS), "KINDS and interfaces.PLUGIN_KINDS disagree"


def builtin_settings(kind: str, name: str, project: Project) -> dict[str, Any]:
    """Settings that make each built-in valid; the router and the target use the test project's own."""
    from turnout.config import load_environment

    env = load_environment(project.name, project.cdir)
    known: dict[tuple[str, str], dict[str, Any]] = {
        ("router", "nginx"): env.router.settings(),
        ("target", "process"): env.target.settings(),
        ("metrics", "scrape"): {},
        ("metrics", "prometheus"): {"url": "http://127.0.0.1:9"},  # nothing is queried: only built
        ("gate", "health"): {},
        ("notifier", "log"): {},
        ("notifier", "slack"): {},
        ("judge", "threshold"): {},
        ("judge", "statistical"): {},
        ("judge", "sequential"): {},
    }
    assert (kind, name) in known, f"the built-in {kind} {name!r} has no settings here: add them to builtin_settings"
    return known[(kind, name)]


def assert_conforms(obj: object, protocol: type) -> None:
    """`obj` has every member of `protocol`, and each method accepts the calls the Protocol allows:
    every parameter by position and by keyword, and only the required ones."""
    assert isinstance(obj, protocol), f"{type(obj).__name__} is not a {protocol.__name__}"
    for member in protocol.__annotations__:  # data members, e.g. Gate.phases
        assert hasattr(obj, member), f"{type(obj).__name__} has no {member!r} ({protocol.__name__})"
    for name, spec_fn in vars(protocol).items():
        if name.startswith("_") or not inspect.isfunction(spec_fn):
            continue
        spec = [p for p in inspect.signature(spec_fn).parameters.values() if p.name != "self"]
        impl = inspect.signature(getattr(obj, name))
        where = f"{type(obj).__name__}.{name}{impl} against {protocol.__name__}.{name}"
        calls = {
            "positional": ([None] * len(spec), {}),
            "keyword": ([], {p.name: None for p in spec}),
            "required only": ([], {p.name: None for p in spec if p.default is inspect.Parameter.empty}),
        }
        for how, (args, kwargs) in calls.items():
            try:
                impl.bind(*args, **kwargs)
            except TypeError as e:
                pytest.fail(f"{where}: a {how} call fails: {e}")


@pytest.mark.parametrize("hook", sorted(KINDS))
def test_every_builtin_of_each_kind_satisfies_its_protocol(hook, project: Project, monkeypatch):
    from turnout.config import load_environment
    from turnout.registry import get_registry, reset_registry

    kind, protocol = KINDS[hook]
    monkeypatch.delenv("TURNOUT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("TURNOUT_PLUGIN_MODULES", raising=False)
    reset_registry()
    try:
        registry = get_registry()
        builtins = [p.name for p in registry.describe() if p.kind == kind and p.source.startswith("turnout ")]
        assert builtins, f"turnout has no built-in {kind}: a kind's built-ins are what prove its contract"
        env = load_environment(project.name, project.cdir)
        for name in builtins:
            reg = registry.registration(kind, name, "test")
            assert isinstance(reg, Registration) and reg.description, f"{kind} {name!r}: describe it"
            assert issubclass(reg.config_model, BaseModel)
            config = reg.config_model.model_validate(builtin_settings(kind, name, project))
            assert_conforms(reg.factory(config, env), protocol)
    finally:
        reset_registry()


def test_the_conformance_check_catches_a_method_that_takes_other_parameters():
    class Shouty:
        def __init__(self):
            self.phases = {Phase.PRE_DEPLOY}

        def evaluate(self, phase):  # the spec passes (phase, context)
            return None

    with pytest.raises(pytest.fail.Exception, match=r"Shouty.evaluate.*a positional call fails"):
        assert_conforms(Shouty(), Gate)
