"""The plugin contract: every hook a turnout plugin may implement.

Plugins are modules or objects whose functions carry `@turnout.hookimpl`. They are found through
the entry-point group `turnout` (built-ins use it too) and through `TURNOUT_PLUGIN_MODULES`.
Hooks are always called through pluggy with keyword arguments, so an implementation may accept
fewer parameters than the spec lists, and wrappers (`@turnout.hookimpl(wrapper=True)`) run around
the calls. turnout calls each plugin's implementation separately (to attribute every registration
to its plugin, and so that one plugin's failing event hook keeps the event from no other), so a
wrapper runs once per implementing plugin.

Registration hooks return a list of `turnout.interfaces.Registration` (a name, a pydantic config
model and a factory). The environment file picks one by `kind = "<name>"`; two plugins
registering the same name for the same kind is an error at start-up.

Broadcast hooks deliver deployment events to every plugin that implements them.
"""

from __future__ import annotations

import pluggy

from turnout.interfaces import Registration
from turnout.models import DeploymentEvent

hookspec = pluggy.HookspecMarker("turnout")

__all__ = [
    "hookspec",
    "register_routers",
    "register_targets",
    "register_metrics_providers",
    "register_gates",
    "register_notifiers",
    "register_judges",
    "deployment_event",
]


# --- registration ------------------------------------------------------------------------------


@hookspec
def register_routers() -> list[Registration]:
    """Traffic routers this plugin provides (`[router] kind = ...`); called once at start-up."""


@hookspec
def register_targets() -> list[Registration]:
    """Deploy targets this plugin provides (`[target] kind = ...`); called once at start-up."""


@hookspec
def register_metrics_providers() -> list[Registration]:
    """Metrics providers this plugin provides (`[metrics] kind = ...`); called once at start-up."""


@hookspec
def register_gates() -> list[Registration]:
    """Gates this plugin provides (`[[gates]] kind = ...`); called once at start-up."""


@hookspec
def register_notifiers() -> list[Registration]:
    """Notifiers this plugin provides (`[[notifiers]] kind = ...`); called once at start-up."""


@hookspec
def register_judges() -> list[Registration]:
    """Canary judges this plugin provides (`[canary.judge] kind = ...`); called once at start-up.

    The factory returns a `turnout.interfaces.Judge`.
    """


# --- broadcast ---------------------------------------------------------------------------------


@hookspec
def deployment_event(event: DeploymentEvent) -> None:
    """Called for every event of every deployment (audit, metrics, chat).

    `event` is a `turnout.models.DeploymentEvent`. The return value is ignored; an exception is
    logged and never stops a deployment.
    """
