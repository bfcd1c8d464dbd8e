"""The `health` gate: the environment's `[health]` checks as a gate.

Every deployment runs it before a slot takes traffic (pre-traffic) and after the switch
(post-switch) from the `[health]` table — the runtime builds that one itself (`turnout.health`),
so it runs even when this plugin is not loaded. Listing it under `[[gates]]` adds it to other
phases with its own paths and timeouts.
"""

from __future__ import annotations

import turnout
from turnout.health import HEALTH_GATE, HealthGate, HealthGateConfig
from turnout.interfaces import Registration

NAME = HEALTH_GATE

__all__ = ["NAME", "HealthGate", "HealthGateConfig", "register_gates"]


@turnout.hookimpl
def register_gates():
    """The health gate."""
    return [Registration(NAME, HealthGateConfig, HealthGate, "HTTP health paths must answer 2xx in time")]
