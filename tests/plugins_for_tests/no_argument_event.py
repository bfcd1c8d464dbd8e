"""A plugin whose `deployment_event` takes no argument: pluggy passes only what it declares."""

from __future__ import annotations

import turnout

CALLS: list[str] = []


@turnout.hookimpl
def deployment_event():
    CALLS.append("called")
