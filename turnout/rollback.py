"""Deciding what a rollback will do, without doing it (also the `turnout rollback --dry-run` output).

The target, in order of preference:

1. `--rollback-to IMG` when given (refused when the environment has never run it, or it is what is live);
2. the other slot, when it still runs (warm) a release this environment has seen healthy;
3. the most recent release seen healthy here (other than the live one), started in the other slot.

A rollback with nothing to go back to is refused before anything is touched (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.errors import ConfigError, UnsafeState
from turnout.models import SLOTS, Split, other_slot
from turnout.plan import BlueGreenPlan, served_split
from turnout.runtime import Runtime

__all__ = ["RollbackPlan", "precheck_rollback", "plan_rollback", "data_decision"]


@dataclass
class RollbackPlan(BlueGreenPlan):
    """A blue-green move back: `live_slot` is the failing slot, `idle_slot` the one traffic goes to."""

    use_warm: bool = False
    why_target: str = ""
    data: str = ""
    restore_from: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for the ledger and the report."""
        return {
            **super().as_dict(),
            "use_warm": self.use_warm,
            "why_target": self.why_target,
            "data": self.data,
            "restore_from": self.restore_from and self.restore_from["path"],
        }

    def render(self) -> str:
        """The plan as the operator reads it."""
        lines = [
            f"Plan: rollback in environment {self.environment}",
            f"  from      : slot {self.live_slot} running {self.live_release or '(unknown release)'}"
            + (
                ""
                if self.live_status and self.live_status.running
                else f" ({self.live_status.detail or self.live_status.state if self.live_status else 'unknown'})"
            ),
            f"  to        : {self.release} in slot {self.idle_slot} "
            + ("(already running: warm, no start)" if self.use_warm else "(started there first)"),
            f"  why       : {self.why_target}",
            f"  traffic   : {self.current_split}  ->  {self.new_split}",
            f"  database  : {self.data}",
        ]
        if not self.use_warm:
            lines += ["  start     :", *[f"    {c}" for c in self.start_commands]]
        lines += ["  router change:", *["    " + line for line in self.router_diff.rstrip("\n").splitlines()]]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def data_decision(rt: Runtime, to_release: str, preserve_data: bool) -> tuple[str, dict | None]:
    """Whether the database must be restored for this rollback: (why, the backup's ledger record or None).

    The migration rules: expand migrations need no restore (the older release works with the new
    schema); a contract migration applied since `to_release` was last live does: the backup taken just
    before it (proved when it was taken) is restored, unless `--preserve-data`.
    """
    if rt.environment.database is None:
        return "no [database] in this environment: nothing to restore", None
    live = rt.ledger.last_promotion(rt.name, to_release)
    if live is None:
        return f"{to_release} has no recorded live period: the database is left as it is", None
    since = live["started_at"]
    contracts = rt.ledger.contract_migrations_since(rt.name, since)
    if contracts:
        c = contracts[0]
        what = f"contract migration {c.revision} ran after {to_release} was live (migrate #{c.migration_id})"
        if preserve_data:
            return f"{what}; --preserve-data: the database is left as it is", None
        if not c.backup:
            return f"{what}, and no backup was taken before it: restore by hand", None
        return f"{what}: restoring the backup taken just before it ({Path(c.backup['path']).name})", c.backup
    migrations = rt.ledger.migrations_since(rt.name, since)
    return (
        f"{len(migrations)} migration(s) since {to_release} was live, none a contract: the older release works "
        "with the current schema, nothing to restore"
    ), None


def precheck_rollback(rt: Runtime, rollback_to: str | None) -> None:
    """The refusals that need no lock: nothing ever deployed, or `--rollback-to` a release never run here."""
    env = rt.name
    state = rt.ledger.environment_state(env)
    if not state["known"] or state["last_deployment"] is None:
        raise ConfigError(f"nothing was ever deployed in {env}: there is nothing to roll back")
    if rollback_to and not rt.ledger.ever_deployed(env, rollback_to):
        raise ConfigError(
            f"--rollback-to {rollback_to}: {env} has never run that release; a rollback only goes "
            "back to a release this environment has run. Deploy it with `turnout blue-green`"
        )


def plan_rollback(
    rt: Runtime, rollback_to: str | None, preserve_data: bool = False, *, prechecked: bool = False
) -> RollbackPlan:
    """Read the router, the slots and the ledger; decide the target or raise ConfigError / UnsafeState.

    `prechecked`: the caller already ran `precheck_rollback` for this run (its answer cannot change:
    a ledger never forgets a deployment), so it is not asked again.
    """
    env = rt.name
    if not prechecked:
        precheck_rollback(rt, rollback_to)
    split = served_split(rt)
    state = rt.ledger.environment_state(env)
    if split is None:
        raise UnsafeState(f"the router of {env} routes nothing; run `turnout recover --environment {env}`")
    if len(split.live_slots()) != 1:
        raise UnsafeState(
            f"traffic in {env} is split ({split}): a canary is in progress (`turnout status`) or "
            f"a run crashed (`turnout recover --environment {env}`)"
        )
    live = split.live_slots()[0]
    idle = other_slot(live)
    statuses = {s: rt.target.status(s) for s in SLOTS}
    live_release = statuses[live].release or state["slots"].get(live, {}).get("release")
    idle_release = statuses[idle].release or state["slots"].get(idle, {}).get("release")
    good = [r for r in rt.ledger.known_good(env) if r != live_release]
    notes: list[str] = []
    if rollback_to:
        if rollback_to == live_release:
            raise ConfigError(f"{rollback_to} is what {env} serves now (slot {live}): nothing to roll back to")
        verdict = rt.ledger.release_verdict(env, rollback_to)
        if not verdict or verdict["verdict"] != "good":
            notes.append(
                f"{rollback_to} was never seen healthy here"
                + (f" (marked bad: {verdict['reason']})" if verdict else "")
                + "; rolling back to it "
                "because --rollback-to names it"
            )
        target, why = rollback_to, "named by --rollback-to"
    elif statuses[idle].running and idle_release in good:
        target, why = idle_release, f"slot {idle} still runs {idle_release}, last seen healthy here (warm)"
    elif good:
        target, why = good[0], f"the most recent release seen healthy in {env}"
        if statuses[idle].running:
            notes.append(f"slot {idle} runs {idle_release}, which was never seen healthy here: it is replaced")
        elif idle_release == target:
            notes.append(
                f"the warm slot {idle} ({target}) is not running "
                f"({statuses[idle].detail or statuses[idle].state}): it is started again"
            )
    else:
        raise ConfigError(
            f"no release other than the live {live_release} was ever seen healthy in {env}; name one with --rollback-to"
        )
    use_warm = statuses[idle].running and idle_release == target
    new_split = Split.all_to(idle)
    data, restore_from = data_decision(rt, target, preserve_data)
    return RollbackPlan(
        environment=env,
        release=target,
        live_slot=live,
        idle_slot=idle,
        current_split=split,
        new_split=new_split,
        live_release=live_release,
        idle_status=statuses[idle],
        live_status=statuses[live],
        start_commands=[] if use_warm else rt.target.describe_start(idle, target),
        router_diff=rt.router.plan(new_split, rt.backends()),
        notes=notes,
        use_warm=use_warm,
        why_target=why,
        data=data,
        restore_from=restore_from,
    )
