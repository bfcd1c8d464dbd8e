"""The migrate flow: plan, lint (expand/contract), proved backup, dry run, online apply, put back, verify.

    plan (current → head, each migration's SQL offline) ─► lint gate (squawk; contract refused while the
    old release takes traffic) ─► backup + proof (restore into scratch, compare) ─► [--dry-run: apply to
    the scratch copy, report, stop] ─► apply (lock_timeout, statement_timeout, retry on 55P03, one
    transaction per migration) ─► on failure: downgrade (reversible expand) or restore the backup, proved
    ─► [--verify: head reached, live slot ready, untouched tables unchanged] ─► prune old backups

Exit codes: 0 migrated (or nothing to do, or a dry run), 1 refused or failed with the database put back
and proved equal, 2 bad input (no [database], a URL that does not connect, no Alembic project), 3 the
database could not be put back: a human is needed.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from turnout.database.connect import open_database
from turnout.database.project import AlembicProject
from turnout.database.url import redact, scrub
from turnout.errors import EXIT_OK
from turnout.flows._run import run_flow
from turnout.models import SLOTS
from turnout.outcome import finish, flow_result
from turnout.runtime import Runtime, open_runtime
from turnout.signals import Interrupted, cleaning_up, interruptible
from turnout.tasks.database import (
    apply_pending,
    backup_database,
    dry_run,
    lint_migrations,
    plan_migrations,
    prune_backups,
    put_back,
    verify_database,
)

__all__ = ["migrate", "migrate_database", "run", "old_release_takes_traffic"]


def old_release_takes_traffic(rt: Runtime) -> str | None:
    """Why a contract migration would break a live release now (None when only one release can be live)."""
    split = rt.router.get_split()
    if split and len(split.live_slots()) > 1:
        return f"traffic is split ({split}): a canary is in progress"
    state = rt.ledger.environment_state(rt.name)
    for slot in SLOTS:
        if state["slots"].get(slot, {}).get("state") == "warm" and rt.target.status(slot).running:
            return (
                f"slot {slot} still runs {state['slots'][slot].get('release')} warm for a rollback; "
                "retire it first (the next deployment's watch does, or stop it)"
            )
    return None


@flow(name="migrate", validate_parameters=True)
async def migrate(
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    config_dir: str | None = None,
    backup_before: bool | None = None,
    dry_run_only: bool = False,
    verify: bool = False,
) -> dict[str, Any]:
    """Migrate `environment`'s database to its Alembic head, safely, under the environment's lock.

    Returns the outcome; raises DeploymentFailed (the run ends Failed) when it was refused or failed.
    """
    rt = open_runtime(environment, config_dir)
    try:
        rt.ledger.acquire_lock(environment, purpose="migrate")
        try:
            from turnout.flows.recover import end_killed_migration  # here: recover imports _steps, which imports us
            from turnout.recovery import killed_migration

            killed = killed_migration(rt.ledger.environment_state(environment), os.getpid())
            if killed:  # a killed migration ends first (traffic is `turnout recover`'s business, not ours)
                end_killed_migration(rt, killed)
            with interruptible():  # SIGINT/SIGTERM: the statement cancelled, the database at a known revision
                try:
                    return flow_result(
                        migrate_database(rt, backup_before=backup_before, dry=dry_run_only, verify=verify)
                    )
                except Interrupted as e:
                    with cleaning_up():
                        return flow_result(_interrupted(rt, e))
        finally:
            rt.ledger.release_lock(environment)
    finally:
        rt.close()


def _interrupted(rt: Runtime, e: Interrupted) -> dict[str, Any]:
    """End a migration stopped by a signal: its row `aborted`, saying which revision the database is at."""
    from turnout.flows.recover import _database_after_crash

    get_run_logger().warning("migration %s: recording where the database is", e)
    m = rt.ledger.environment_state(rt.name).get("last_migration")
    if not m or m["status"] != "running" or m.get("pid") != os.getpid():
        return {
            "outcome": "aborted",
            "environment": rt.name,
            "exit_code": 1,
            "reason": f"{e} before the migration started: nothing was changed",
        }
    why = (
        f"{e} (the operator or a supervisor stopped the run); the migration in progress was cancelled"
        + _database_after_crash(rt, m["id"])
    )
    return finish(rt, m["id"], "aborted", why)


def migrate_database(
    rt: Runtime,
    *,
    backup_before: bool | None = None,
    dry: bool = False,
    verify: bool = False,
    why_live: str | None = None,
    phase: str = "all",
) -> dict[str, Any]:
    """The migration itself, for the migrate flow and the deployment flows (the caller holds the lock).

    `phase`: `all`; `expand` (a deployment before its new release starts: the pending migrations up to
    the first contract one; the rest waits); `contract` (after a promotion's watch retired the old slot).
    Returns the outcome dict; never raises for a refused or failed migration.
    """
    logger = get_run_logger()
    cfg = rt.environment.database
    url, project = open_database(rt.environment)
    assert cfg is not None  # open_database refuses an environment without [database]
    plan = plan_migrations(rt, url, project)
    if phase == "expand":
        plan = _until_first_contract(plan, cfg)
    if not plan.pending:
        logger.info("the database is at %s: nothing to migrate now", plan.current)
        deferred = plan.head != project.head
        return {
            "outcome": "up-to-date",
            "environment": rt.name,
            "exit_code": EXIT_OK,
            "reason": f"the database {redact(url)} is at {plan.current}"
            + (
                f"; the contract migrations up to {project.head} wait until the old release is retired"
                if deferred
                else " (the head)"
            ),
        }
    why_live = why_live or old_release_takes_traffic(rt)
    backup_on = (
        cfg.backup_before
        if backup_before is None and cfg.backup_before is not None
        else (backup_before if backup_before is not None else rt.name == "production")
    )
    dep = rt.ledger.start_deployment(
        rt.name,
        "migrate",
        f"db@{plan.head}",
        from_release=f"db@{plan.current}",
        options={
            "database": redact(url),
            "plan": plan.as_dict(),
            "phase": phase,
            "backup_before": backup_on,
            "dry_run": dry,
        },
    )
    if phase == "all":
        rt.ledger.attach_lock(rt.name, dep)
    rt.emit(
        "deployment.started",
        dep,
        release=f"db@{plan.head}",
        message=f"migrate {redact(url)}: {plan.current or 'empty'} -> {plan.head} ({len(plan.pending)} migration(s))",
    )
    return _migrate(
        rt, dep, url=url, project=project, plan=plan, backup_on=backup_on, dry=dry, verify=verify, why_live=why_live
    )


def _until_first_contract(plan, cfg) -> Any:
    """The plan cut before its first contract migration (what may run while the old release is live)."""
    from turnout.tasks.database import MigrationPlan

    keep = []
    for r in plan.pending:
        if plan.lint(r, cfg).kind == "contract":
            break
        keep.append(r)
    head = keep[-1].id if keep else plan.current
    return MigrationPlan(
        plan.current, head or "base", keep, {r.id: plan.sql[r.id] for r in keep}, {r.id: plan.lints[r.id] for r in keep}
    )


def _migrate(
    rt: Runtime,
    dep: int,
    *,
    url: str,
    project: AlembicProject,
    plan,
    backup_on: bool,
    dry: bool,
    verify: bool,
    why_live: str | None,
) -> dict[str, Any]:
    cfg = rt.environment.database
    assert cfg is not None  # migrate() opened the database first
    lints = lint_migrations(rt, dep, plan, cfg)
    refused = [f"migration {x.revision}: {f.rule} ({f.message}) in `{f.statement}`" for x in lints for f in x.errors]
    if refused:
        return finish(rt, dep, "aborted", "refused by the lint: " + "; ".join(refused) + "; nothing applied")
    contracts = [x for x in lints if x.kind == "contract"]
    if contracts and why_live:
        first = contracts[0]
        bad = next(f for f in first.findings if f.level == "contract")
        return finish(
            rt,
            dep,
            "aborted",
            f"migration {first.revision} is a contract migration ({bad.rule}: `{bad.statement}`) and the old "
            f"release still takes traffic ({why_live}); run it as a follow-up once the old slot is retired. "
            "Nothing applied",
        )
    backup = scratch = None
    if backup_on or dry:
        try:
            backup, scratch = backup_database(rt, dep, url, cfg, plan.current, keep_scratch=dry)
        except Exception as e:
            return finish(
                rt, dep, "aborted", f"the backup could not be proved, so nothing was migrated: {scrub(str(e), url)}"
            )
    if dry:
        assert scratch is not None  # backup_database(keep_scratch=True) returns the scratch copy
        try:
            report = dry_run(rt, dep, scratch, project, cfg, target=plan.head)
        finally:
            scratch.drop()
        text = "; ".join(report["changes"]) or "no schema change"
        outcome: dict[str, Any] = {
            "outcome": "dry-run",
            "environment": rt.name,
            "exit_code": EXIT_OK if report["succeeded"] else 1,
            "reason": (
                f"on a scratch copy: {report['from'] or 'empty'} -> {report['to']} in {report['seconds']:.2f}s: {text}"
                if report["succeeded"]
                else f"on a scratch copy the migrations failed: {report['error']}"
            )
            + "; the live database was not touched",
            "dry_run": report,
        }
        rt.ledger.finish_deployment(dep, "dry-run", outcome["reason"])
        return outcome
    result = apply_pending(rt, dep, url, project, cfg, target=plan.head)
    if not result.ok:
        how, diffs = put_back(rt, dep, url, project, cfg, result=result, lints=lints, backup=backup)
        stopped = f"migration failed at revision {result.end or 'base'}: {result.error}"
        if result.sqlstate == "55P03":
            stopped = (
                f"a lock was still held after {len(result.attempts)} attempt(s) with lock_timeout "
                f"{cfg.lock_timeout:g}s: {result.error}"
            )
        if how == "stuck" or diffs:
            return finish(
                rt,
                dep,
                "failed",
                f"{stopped}; the database could not be put back ({how}: {'; '.join(diffs[:3])}); a human is needed",
            )
        said = {
            "untouched": "the database was untouched",
            "downgraded": f"downgraded back to {result.start}",
            "restored": "restored from the proved backup",
        }[how]
        return finish(rt, dep, "aborted", f"{stopped}; {said}" + (", compared equal" if backup else ""))
    notes = [
        f"migrated {result.start or 'empty'} -> {result.end} in {result.seconds:.2f}s"
        + (f" after {len(result.attempts)} attempts" if len(result.attempts) > 1 else "")
    ]
    if backup:
        notes.append(f"backup {backup.path.name} (proved)")
    if verify:
        problems = verify_database(rt, dep, url, project, plan=plan, backup=backup)
        if problems:
            return finish(rt, dep, "failed", "; ".join(notes) + "; verification failed: " + "; ".join(problems))
        notes.append("verified")
    removed = prune_backups(rt, cfg)
    if removed:
        notes.append(f"{len(removed)} old backup(s) pruned")
    return finish(rt, dep, "migrated", "; ".join(notes), succeeded=True)


def run(**params: Any) -> dict[str, Any]:
    """Run the flow and return its outcome (for the CLI)."""
    return run_flow(migrate, **params)
