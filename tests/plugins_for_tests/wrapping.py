"""A wrapper plugin (`wrapper=True`): it runs around the hook calls turnout makes."""

from __future__ import annotations

import turnout

SEEN: list[str] = []


@turnout.hookimpl(wrapper=True)
def register_routers():
    result = yield
    SEEN.append("register_routers:" + ",".join(sorted(r.name for regs in result for r in regs)))
    return result


@turnout.hookimpl(wrapper=True)
def deployment_event(event):
    SEEN.append(f"deployment_event:{event.kind}")
    return (yield)
