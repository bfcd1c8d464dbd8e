"""Crash recovery: compare what the ledger says was being done with what the router and slots really show.

Plain Python, no Prefect: `observe` reads the world, `decide` says what to do, `flows.recover` does it.

The ledger writes intent before every action, so after a crash (SIGKILL, a machine restart) the last
deployment is `running` with a dead pid (or `crashed`, once a new run took its stale lock over). Rules:

- the switch to the new slot completed and the new release passes its checks: only verification was
  left, so the switch is finished (promoted; not the last known good: the watch never ran);
- otherwise traffic goes back to the slot known healthy (the old slot; for a crashed rollback, the
  slot it was rolling back to), the other slot is stopped, the deployment is `aborted` (or `rolled-back`);
- when no slot passes its checks nothing is moved and the outcome is `failed` (exit 3): a human is needed.

Without a crashed run, a router whose split differs from the ledger's is put back when that slot is healthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from turnout.health import probe
from turnout.models import SLOTS, Split, SlotStatus, other_slot
from turnout.procs import pid_alive

__all__ = ["Observation", "Decision", "observe", "decide"]


@dataclass
class Observation:
    """What the ledger and the world say right now."""

    deployment: dict[str, Any] | None
    crashed: bool
    split: Split | None
    ledger_split: Split | None
    statuses: dict[str, SlotStatus]
    healthy: dict[str, bool]
    last_action: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, for the ledger."""
        d = self.deployment or {}
        return {"deployment_id": d.get("id"), "status": d.get("status"), "crashed": self.crashed,
                "split": self.split.as_dict() if self.split else None,
                "ledger_split": self.ledger_split.as_dict() if self.ledger_split else None,
                "slots": {s: {"state": st.state, "release": st.release, "healthy": self.healthy[s]}
                          for s, st in self.statuses.items()},
                "last_action": self.last_action}


@dataclass
class Decision:
    """What recovery will do: the split to put in force, slots to stop, how the crashed run ends."""

    summary: str
    split: Split | None = None
    stop: list[str] = field(default_factory=list)
    status: str | None = None          # for the crashed deployment: promoted | aborted | rolled-back | failed
    live: tuple[str, str | None] | None = None  # (slot, release) that carries traffic afterwards
    safe: bool = True

    @property
    def changes(self) -> bool:
        """True when recovery has anything to do."""
        return bool(self.split or self.stop or self.status)


def observe(rt, lock_pid: int | None = None) -> Observation:
    """Read the last deployment, the router's real split and every slot's real state and health."""
    state = rt.ledger.environment_state(rt.name)
    dep = state["last_deployment"]
    crashed = bool(dep) and (dep["status"] == "crashed" or (
        dep["status"] == "running" and dep.get("pid") not in (None, lock_pid) and not pid_alive(dep["pid"])))
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
    return Observation(dep, crashed, rt.router.get_split(), state["split"], statuses, healthy, last)


def decide(o: Observation) -> Decision:
    """The recovery for `o` (see the module docstring)."""
    if o.crashed:
        return _after_crash(o)
    if o.ledger_split and o.split != o.ledger_split:
        live = o.ledger_split.live_slots()
        if len(live) == 1 and o.healthy[live[0]]:
            return Decision(f"the router routes {o.split or 'nothing'} but the ledger says {o.ledger_split}; "
                            f"slot {live[0]} is healthy: the ledger's split is put back", split=o.ledger_split,
                            live=(live[0], o.statuses[live[0]].release))
        return Decision(f"the router routes {o.split or 'nothing'} but the ledger says {o.ledger_split}, and the "
                        "ledger's slot is not healthy: nothing moved, run `turnout rollback`", safe=False)
    if o.split and len(o.split.live_slots()) == 1 and not o.healthy[o.split.live_slots()[0]]:
        s = o.split.live_slots()[0]
        return Decision(f"consistent, but the live slot {s} fails its checks ({o.statuses[s].detail or o.statuses[s].state}):"
                        " run `turnout rollback`", safe=False)
    return Decision("consistent: the ledger, the router and the slots agree")


def _after_crash(o: Observation) -> Decision:
    d = o.deployment
    old, new, rel = d["from_slot"], d["to_slot"], d["release"]
    where = _where(o)
    # Which slot is known healthy: the old one for a deployment, the target for a rollback.
    rolling_back = d["strategy"] == "rollback"
    good = new if rolling_back else old
    other = other_slot(good) if good else new
    on_new = o.split is not None and o.split.weight(new) == 100
    if on_new and o.healthy[new]:
        if rolling_back:
            return Decision(f"the rollback crashed {where} after traffic moved to {new} ({rel}), which passes its "
                            f"checks: the rollback is finished", stop=[other] if other and o.statuses[other].running else [],
                            status="rolled-back", live=(new, rel))
        return Decision(f"the run crashed {where}; the switch to {new} ({rel}) had completed and it passes its checks: "
                        "the switch is finished (the watch did not run, so it is not the last known good"
                        + (f"; slot {old} is kept warm" if old and o.statuses[old].running else "") + ")",
                        status="promoted", live=(new, rel))
    if old is None:  # a first deployment: there is no previous slot to go back to
        if on_new:
            return Decision(f"the first deployment crashed {where} with traffic on {new} ({rel}), which fails its "
                            "checks; there is no previous release: a human is needed", status="failed", safe=False)
        return Decision(f"the first deployment crashed {where}, before its switch: slot {new} is stopped",
                        stop=[new] if o.statuses[new].running else [], status="aborted")
    if o.healthy[good]:
        to_stop = [other] if o.statuses[other].running else []
        split = None if o.split == Split.all_to(good) else Split.all_to(good)
        good_rel = rel if rolling_back else d["from_release"]
        return Decision(f"the run crashed {where}; traffic {'is' if split is None else 'goes'} back on {good} "
                        f"({good_rel})" + (f", slot {other} is stopped" if to_stop else ""),
                        split=split, stop=to_stop, status="rolled-back" if rolling_back else "aborted",
                        live=(good, good_rel))
    if other and o.healthy[other] and o.split is not None and o.split.weight(other) < 100:
        return Decision(f"the run crashed {where}; slot {good} is not healthy, {other} is: all traffic goes to "
                        f"{other}, which was never judged; a human is needed", split=Split.all_to(other),
                        status="failed", live=(other, o.statuses[other].release), safe=False)
    if other and o.healthy[other]:
        return Decision(f"the run crashed {where}; traffic stays on {other}, the only healthy slot; a human is needed",
                        status="failed", live=(other, o.statuses[other].release), safe=False)
    return Decision(f"the run crashed {where} and no slot passes its checks: nothing moved, a human is needed",
                    status="failed", safe=False)


def _where(o: Observation) -> str:
    a = o.last_action
    if not a:
        return "before its first action"
    return f"at {a['phase']}/{a['name']} ({'unfinished' if a['state'] == 'intent' else a['state']})"
