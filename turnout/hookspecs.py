"""The plugin contract: every hook a turnout plugin may implement.

Plugins are modules or objects whose functions carry `@turnout.hookimpl`. They are found through
the entry-point group `turnout` (built-ins use it too) and through `TURNOUT_PLUGIN_MODULES`.
Hooks are always called with keyword arguments, so an implementation may accept fewer
parameters than the spec lists.

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


# --- broadcast ---------------------------------------------------------------------------------


@hookspec
def deployment_event(event: DeploymentEvent) -> None:
    """Called for every event of every deployment (audit, metrics, chat).

    `event` is a `turnout.models.DeploymentEvent`. The return value is ignored; an exception is
    logged and never stops a deployment.
    """
