"""Deciding what a blue-green deployment will do, without doing it (also the --dry-run output)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from turnout.errors import EXIT_OK, UnsafeState
from turnout.models import SLOTS, SlotStatus, Split, other_slot
from turnout.runtime import Runtime

__all__ = ["BlueGreenPlan", "plan_blue_green", "served_split"]


@dataclass
class BlueGreenPlan:
    """The slots, commands and router change of one blue-green deployment."""

    environment: str
    release: str
    live_slot: str | None
    idle_slot: str
    current_split: Split | None
    new_split: Split
    live_release: str | None
    idle_status: SlotStatus
    live_status: SlotStatus | None
    start_commands: list[str]
    router_diff: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for artifacts and the ledger."""
        return {
            "environment": self.environment,
            "release": self.release,
            "live_slot": self.live_slot,
            "idle_slot": self.idle_slot,
            "live_release": self.live_release,
            "current_split": self.current_split.as_dict() if self.current_split else None,
            "new_split": self.new_split.as_dict(),
            "start_commands": self.start_commands,
            "notes": self.notes,
        }

    def dry_run(self) -> dict[str, Any]:
        """The answer to `--dry-run`, the same from the command line and from the flow: nothing changed."""
        return {"outcome": "dry-run", "plan": self.as_dict(), "text": self.render(), "exit_code": EXIT_OK}

    def render(self) -> str:
        """The plan as the operator reads it."""
        lines = [
            f"Plan: blue-green {self.release} in environment {self.environment}",
            f"  live slot : {self.live_slot or '(none: first deployment)'}"
            + (f" running {self.live_release}" if self.live_release else ""),
            f"  idle slot : {self.idle_slot} ({self.idle_status.state}"
            + (f", holds {self.idle_status.release}" if self.idle_status.release else "")
            + ")",
            f"  traffic   : {self.current_split or '(not routed yet)'}  ->  {self.new_split}",
            "  start     :",
            *[f"    {c}" for c in self.start_commands],
            "  router change:",
            *["    " + line for line in self.router_diff.rstrip("\n").splitlines()],
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def served_split(rt: Runtime) -> Split | None:
    """The split the router really serves (its loaded state); what turnout wrote when it cannot tell.

    Raises UnsafeState when the router was routing and no longer serves: plans are made on what clients see.
    """
    state = rt.router_state()
    if state.routed and not state.serving:
        raise UnsafeState(
            f"the router of {rt.name} is not serving ({state.detail}); nothing was started. "
            f"Start it: a router turnout runs itself comes back with `turnout recover --environment "
            f"{rt.name}`, an operator's NGINX with its service manager"
        )
    return state.split if state.known else state.configured


def plan_blue_green(rt: Runtime, release: str) -> BlueGreenPlan:
    """Read what the router serves and the slots' state; raise UnsafeState when traffic is split."""
    split = served_split(rt)
    notes: list[str] = []
    if split is None:
        live = None
    elif len(split.live_slots()) != 1:
        raise UnsafeState(
            f"traffic in {rt.name} is split ({split}); a canary may be in progress or a run crashed. "
            "Finish or roll it back (turnout rollback) before a blue-green deployment"
        )
    else:
        live = split.live_slots()[0]
    idle = other_slot(live) if live else SLOTS[0]
    statuses = {s: rt.target.status(s) for s in SLOTS}
    live_release = None
    if live:
        live_release = statuses[live].release
        if not statuses[live].running:
            notes.append(
                f"the live slot {live} is not running ({statuses[live].detail or statuses[live].state}); "
                "there is no warm slot to return to if this release fails"
            )
    if statuses[idle].running:
        notes.append(f"slot {idle} still runs {statuses[idle].release}; it will be stopped and replaced")
    new_split = Split.all_to(idle)
    return BlueGreenPlan(
        environment=rt.name,
        release=release,
        live_slot=live,
        idle_slot=idle,
        current_split=split,
        new_split=new_split,
        live_release=live_release,
        idle_status=statuses[idle],
        live_status=statuses[live] if live else None,
        start_commands=rt.target.describe_start(idle, release),
        router_diff=rt.router.plan(new_split, rt.backends()),
        notes=notes,
    )
