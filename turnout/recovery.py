"""Crash recovery: compare what the ledger says was being done with what the router and slots really do.

Plain Python, no Prefect: `observe` reads the world, `decide` says what to do, `turnout.flows.recover` does it.

What the router serves is read from the router itself (`Runtime.router_state`: its loaded state, or
requests through the data path), never from the file turnout wrote: a run killed between writing the
router's file and the reload leaves a file the router never loaded. When the two differ, recovery decides
on what is really served and re-applies its decision so that router and file agree again.

The ledger writes intent before every action, so after a crash (SIGKILL, a machine restart) the last
deployment is `running` with a dead pid (or `crashed`, once a new run took its stale lock over). Rules:

- the switch to the new slot completed and the new release passes its checks: only verification was
  left, so the switch is finished (promoted; not the last known good: the watch never ran);
- otherwise traffic goes back to the slot known healthy (the old slot; for a crashed rollback, the
  slot it was rolling back to), the other slot is stopped, the deployment is `aborted` (or `rolled-back`);
- when no slot passes its checks nothing is moved and the outcome is `failed` (exit 3): a human is needed.

Without a crashed run: a router that is not serving is started again on a healthy slot; traffic left
split by a run that ended (a failed canary) goes back to the stable slot; a router whose split differs
from the ledger's is put back when that slot is healthy. A slot that still receives traffic is never
stopped: every slot to stop has weight 0 in the split recovery puts in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from turnout.health import probe
from turnout.models import SLOTS, RouterState, SlotStatus, Split, other_slot
from turnout.procs import pid_alive

__all__ = ["Observation", "Decision", "observe", "decide", "killed_migration"]


@dataclass
class Observation:
    """What the ledger and the world say right now."""

    deployment: dict[str, Any] | None
    crashed: bool
    router: RouterState
    ledger_split: Split | None
    statuses: dict[str, SlotStatus]
    healthy: dict[str, bool]
    last_action: dict[str, Any] | None = None
    killed_migration: dict[str, Any] | None = None  # a `turnout migrate` whose process died mid-run

    @property
    def split(self) -> Split | None:
        """The split in force: what the router loaded, or (when it cannot tell) what was written."""
        return self.router.split if self.router.known else self.router.configured

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, for the ledger."""
        d = self.deployment or {}
        return {
            "deployment_id": d.get("id"),
            "status": d.get("status"),
            "crashed": self.crashed,
            "router": self.router.model_dump(mode="json"),
            "ledger_split": self.ledger_split.as_dict() if self.ledger_split else None,
            "slots": {
                s: {"state": st.state, "release": st.release, "healthy": self.healthy[s]}
                for s, st in self.statuses.items()
            },
            "last_action": self.last_action,
        }


@dataclass
class Decision:
    """What recovery will do: the split to put in force, slots to stop, how the crashed run ends."""

    summary: str
    split: Split | None = None
    stop: list[str] = field(default_factory=list)
    status: str | None = None  # for the crashed deployment: promoted | aborted | rolled-back | failed
    live: tuple[str, str | None] | None = None  # (slot, release) that carries traffic afterwards
    safe: bool = True
    end_migration: int | None = None  # a killed migration's row, to end (`aborted`, with its revision)

    @property
    def changes(self) -> bool:
        """True when recovery has anything to do."""
        return bool(self.split or self.stop or self.status or self.end_migration)


def observe(rt, lock_pid: int | None = None) -> Observation:
    """Read the last deployment, what the router really serves and every slot's real state and health."""
    state = rt.ledger.environment_state(rt.name)
    dep = state["last_deployment"]
    crashed = bool(dep) and (
        dep["status"] == "crashed"
        or (dep["status"] == "running" and dep.get("pid") not in (None, lock_pid) and not pid_alive(dep["pid"]))
    )
    statuses = {s: rt.target.status(s) for s in SLOTS}
    env = rt.environment
    healthy = {}
    for s in SLOTS:
        urls = [f"http://{a}" for a in rt.target.endpoints(s)]
        healthy[s] = statuses[s].running and probe(urls, env.health.paths, env.health.max_response_time)[0]
    last = None
    if dep:
        actions = rt.ledger.deployment(dep["id"]).get("actions") or []
        last = actions[-1] if actions else None
        if last:
            last = {k: last.get(k) for k in ("phase", "name", "state", "intent")}
    return Observation(
        dep, crashed, rt.router_state(), state["split"], statuses, healthy, last, killed_migration(state, lock_pid)
    )


def killed_migration(state: dict[str, Any], lock_pid: int | None) -> dict[str, Any] | None:
    """The last migration of `state` (Ledger.environment_state) when its process died mid-run, else None."""
    m = state.get("last_migration")
    if m and (
        m["status"] == "crashed"
        or (m["status"] == "running" and m.get("pid") not in (None, lock_pid) and not pid_alive(m["pid"]))
    ):
        return m
    return None


def decide(o: Observation) -> Decision:
    """The recovery for `o` (see the module docstring)."""
    if o.crashed:
        d = _after_crash(o)
    elif o.router.routed and not o.router.serving:
        d = _restart_router(o)
    else:
        d = _settle(o)
    if o.killed_migration:  # traffic never moved for it: it only needs ending, with the database's revision
        d.end_migration = o.killed_migration["id"]
        d.summary = f"the migration #{d.end_migration} was killed; {d.summary}"
    return _in_sync(o, d)


def _in_sync(o: Observation, d: Decision) -> Decision:
    """Make the decision leave the router serving exactly what it says, and never stop a slot with traffic."""
    if (
        d.split is None
        and d.safe
        and o.router.serving
        and o.router.known
        and o.split is not None
        and o.split != o.router.configured
    ):
        d.split = o.split
        d.summary += f"; the router's file is put back in line with what it serves ({o.router.describe()})"
    final = d.split or o.split
    if final is not None:
        kept = [s for s in d.stop if final.weight(s) > 0]
        if kept:
            d.stop = [s for s in d.stop if s not in kept]
            d.summary += f"; slot {', '.join(kept)} still receives traffic, so it is not stopped"
    return d


def _restart_router(o: Observation) -> Decision:
    """The router is down: start it again on the split that is safe to serve."""
    why = f"the router is not serving ({o.router.detail})"
    for candidate, what in ((o.ledger_split, "the ledger's split"), (o.router.configured, "turnout's last split")):
        if candidate and all(o.healthy[s] for s in candidate.live_slots()):
            return Decision(
                f"{why}: it is started again with {what} {candidate}", split=candidate, live=_single(o, candidate)
            )
    healthy = [s for s in _preference(o) if o.healthy[s]]
    if healthy:
        s = healthy[0]
        return Decision(
            f"{why}, and the split it had is not healthy: it is started with all traffic on {s} "
            f"({o.statuses[s].release}), the only healthy slot; check that release",
            split=Split.all_to(s),
            live=(s, o.statuses[s].release),
            safe=False,
        )
    return Decision(
        f"{why} and no slot passes its checks: nothing was started. A human is needed: start a "
        "release (`turnout blue-green --image IMG`) once the router can run",
        safe=False,
    )


def _settle(o: Observation) -> Decision:
    """No crashed run: traffic left split by a run that ended, a hand edit, or an unhealthy live slot."""
    split = o.split
    if o.ledger_split and split != o.ledger_split:
        live = o.ledger_split.live_slots()
        if len(live) == 1 and o.healthy[live[0]]:
            return Decision(
                f"the router routes {split or 'nothing'} but the ledger says {o.ledger_split}; "
                f"slot {live[0]} is healthy: the ledger's split is put back",
                split=o.ledger_split,
                live=(live[0], o.statuses[live[0]].release),
            )
        if split is None or len(split.live_slots()) != 2 or _running(o):
            return Decision(
                f"the router routes {split or 'nothing'} but the ledger says {o.ledger_split}, and the "
                "ledger's slot is not healthy: nothing moved. Run `turnout rollback` to put all traffic "
                "on a release seen healthy",
                safe=False,
            )
    if split is not None and len(split.live_slots()) == 2 and not _running(o):
        return _unsplit(o, split)
    if split and len(split.live_slots()) == 1 and not o.healthy[split.live_slots()[0]]:
        s = split.live_slots()[0]
        return Decision(
            f"consistent, but the live slot {s} fails its checks "
            f"({o.statuses[s].detail or o.statuses[s].state}): run `turnout rollback` to put all "
            "traffic on a release seen healthy",
            safe=False,
        )
    return Decision("consistent: the ledger, the router and the slots agree")


def _unsplit(o: Observation, split: Split) -> Decision:
    """Traffic is split and no run is in progress (a canary that failed or was killed): all to the stable slot."""
    d = o.deployment or {}
    stable = d.get("from_slot") if d.get("from_slot") in SLOTS else None
    order = [stable, other_slot(stable)] if stable else _preference(o)
    why = f"traffic is split ({split}) and no run is in progress" + (
        f" (deployment #{d['id']} {d['strategy']} {d['release']} ended {d['status']})" if d else ""
    )
    for s in order:
        if o.healthy[s]:
            other = other_slot(s)
            judged = s == stable
            return Decision(
                f"{why}: all traffic goes to {s} ({o.statuses[s].release})"
                + ("" if judged else ", which was never judged: check it")
                + (f", slot {other} is stopped" if o.statuses[other].running else ""),
                split=Split.all_to(s),
                stop=[other] if o.statuses[other].running else [],
                live=(s, o.statuses[s].release),
                safe=judged,
            )
    return Decision(
        f"{why} and no slot passes its checks: nothing moved. A human is needed: "
        "`turnout rollback --rollback-to IMG` starts a release seen healthy",
        safe=False,
    )


def _running(o: Observation) -> bool:
    return bool(o.deployment and o.deployment["status"] == "running" and not o.crashed)


def _preference(o: Observation) -> list[str]:
    """Slots in the order recovery prefers them: the ledger's live slot first."""
    live = o.ledger_split.live_slots() if o.ledger_split else []
    return ([live[0]] if len(live) == 1 else []) + [s for s in SLOTS if not (len(live) == 1 and s == live[0])]


def _single(o: Observation, split: Split) -> tuple[str, str | None] | None:
    live = split.live_slots()
    return (live[0], o.statuses[live[0]].release) if len(live) == 1 else None


def _after_crash(o: Observation) -> Decision:
    d = o.deployment
    assert d is not None  # `crashed` is only ever set for a recorded deployment (observe)
    old, new, rel = d["from_slot"], d["to_slot"], d["release"]
    where = _where(o)
    # Which slot is known healthy: the old one for a deployment, the target for a rollback.
    rolling_back = d["strategy"] == "rollback"
    good = new if rolling_back else old
    other = other_slot(good) if good else new
    serving = o.router.serving or not o.router.routed
    on_new = serving and o.split is not None and o.split.weight(new) == 100
    if on_new and o.healthy[new]:
        if rolling_back:
            return Decision(
                f"the rollback crashed {where} after traffic moved to {new} ({rel}), which passes its "
                f"checks: the rollback is finished",
                stop=[other] if other and o.statuses[other].running else [],
                status="rolled-back",
                live=(new, rel),
            )
        return Decision(
            f"the run crashed {where}; the switch to {new} ({rel}) had completed and it passes its checks: "
            "the switch is finished (the watch did not run, so it is not the last known good"
            + (f"; slot {old} is kept warm" if old and o.statuses[old].running else "")
            + ")",
            status="promoted",
            live=(new, rel),
        )
    if old is None:  # a first deployment: there is no previous slot to go back to
        if on_new:
            return Decision(
                f"the first deployment crashed {where} with traffic on {new} ({rel}), which fails its "
                "checks; there is no previous release: a human is needed",
                status="failed",
                safe=False,
            )
        if o.router.routed and o.healthy[new]:
            return Decision(
                f"the first deployment crashed {where} with the router not serving {new} ({rel}), "
                "which passes its checks: all traffic is put on it (the watch did not run)",
                split=Split.all_to(new),
                status="promoted",
                live=(new, rel),
            )
        return Decision(
            f"the first deployment crashed {where}, before its switch: slot {new} is stopped",
            stop=[new] if o.statuses[new].running else [],
            status="aborted",
        )
    if o.healthy[good]:
        to_stop = [other] if o.statuses[other].running else []
        split = None if (o.router.in_sync and o.split == Split.all_to(good)) else Split.all_to(good)
        good_rel = rel if rolling_back else d["from_release"]
        return Decision(
            f"the run crashed {where}; traffic {'is' if split is None else 'goes'} back on {good} "
            f"({good_rel})" + (f", slot {other} is stopped" if to_stop else ""),
            split=split,
            stop=to_stop,
            status="rolled-back" if rolling_back else "aborted",
            live=(good, good_rel),
        )
    if other and o.healthy[other] and (o.split is None or o.split.weight(other) < 100 or not o.router.in_sync):
        return Decision(
            f"the run crashed {where}; slot {good} is not healthy, {other} is: all traffic goes to "
            f"{other}, which was never judged; a human is needed",
            split=Split.all_to(other),
            status="failed",
            live=(other, o.statuses[other].release),
            safe=False,
        )
    if other and o.healthy[other]:
        return Decision(
            f"the run crashed {where}; traffic stays on {other}, the only healthy slot; a human is needed",
            status="failed",
            live=(other, o.statuses[other].release),
            safe=False,
        )
    return Decision(
        f"the run crashed {where} and no slot passes its checks: nothing moved. A human is needed: "
        "`turnout rollback --rollback-to IMG` starts a release seen healthy",
        status="failed",
        safe=False,
    )


def _where(o: Observation) -> str:
    a = o.last_action
    if not a:
        return "before its first action"
    return f"at {a['phase']}/{a['name']} ({'unfinished' if a['state'] == 'intent' else a['state']})"
