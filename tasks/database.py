"""Tasks of the migrate flow: plan, lint, back up with proof, dry run, apply, put back, verify.

Each writes its intent and result to the ledger under the migration's deployment row; no task ever
writes the database URL with its password anywhere (turnout.database.url.redact / scrub).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import inspect

from turnout.config import DatabaseConfig
from turnout.database.apply import ApplyResult, apply_migrations, downgrade_to
from turnout.database.backup import Backup, ScratchDatabase, prove_backup, restore_backup, take_backup
from turnout.database.lint import MigrationLint, lint_sql
from turnout.database.project import AlembicProject, Revision
from turnout.database.snapshot import differences, engine_for, fingerprint
from turnout.database.url import redact, scrub
from turnout.faults import crash_point
from turnout.ledger import DATABASE_BACKUP, MIGRATION_LINT
from turnout.models import utcnow
from turnout.runtime import Runtime

__all__ = [
    "MigrationPlan",
    "plan_migrations",
    "lint_migrations",
    "backup_database",
    "dry_run",
    "apply_pending",
    "put_back",
    "verify_database",
    "prune_backups",
]


@dataclass
class MigrationPlan:
    """Where the database is, where the project's head is, and what lies between (with its SQL)."""

    current: str | None
    head: str
    pending: list[Revision]
    sql: dict[str, str]
    lints: dict[str, MigrationLint] = field(default_factory=dict)  # filled once, by whoever lints first

    def lint(self, rev: Revision, cfg: DatabaseConfig) -> MigrationLint:
        """`rev`'s lint, run through squawk at most once per plan."""
        if rev.id not in self.lints:
            self.lints[rev.id] = lint_sql(rev.id, rev.message, self.sql[rev.id], cfg)
        return self.lints[rev.id]

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "head": self.head,
            "pending": [{"revision": r.id, "message": r.message, "reversible": r.reversible} for r in self.pending],
        }


@task(name="plan-migrations", cache_policy=NO_CACHE)
def plan_migrations(rt: Runtime, url: str, project: AlembicProject) -> MigrationPlan:
    """The current revision, the head, and each pending migration's SQL (Alembic offline mode)."""
    with engine_for(url).connect() as conn:
        current = project.current(conn)
    pending = project.pending(current)
    return MigrationPlan(current, project.head, pending, {r.id: project.sql(r) for r in pending})


@task(name="lint-migrations", cache_policy=NO_CACHE)
def lint_migrations(rt: Runtime, dep: int, plan: MigrationPlan, cfg: DatabaseConfig) -> list[MigrationLint]:
    """squawk on each migration's SQL, each classified expand or contract; every finding to the ledger."""
    lints = [plan.lint(r, cfg) for r in plan.pending]
    action = rt.ledger.intent(dep, "lint", MIGRATION_LINT, revisions=[r.id for r in plan.pending])
    rt.ledger.result(action, True, lints=[x.as_dict() for x in lints])
    for x in lints:
        rt.emit(
            "gate.verdict",
            dep,
            phase="lint",
            message=f"migration {x.revision} ({x.message[:60]}): {x.kind.upper()}"
            + "".join(f"\n      {f.level}: {f.rule} at line {f.line}: {f.statement}" for f in x.findings),
        )
    return lints


@task(name="backup-database", cache_policy=NO_CACHE)
def backup_database(
    rt: Runtime, dep: int, url: str, cfg: DatabaseConfig, revision: str | None, *, keep_scratch: bool = False
) -> tuple[Backup, ScratchDatabase | None]:
    """Back up, restore into a scratch database, compare: a backup that does not prove is an error.

    With `keep_scratch` the proved scratch copy is returned for the dry run (the caller drops it).
    """
    folder = rt.environment.state_dir / cfg.backup_dir
    label = f"{rt.name}-{revision or 'base'}-{utcnow():%Y%m%dT%H%M%SZ}-{dep}"
    action = rt.ledger.intent(dep, "backup", DATABASE_BACKUP, database=redact(url), folder=str(folder))
    crash_point("backup:before")
    try:
        backup = take_backup(url, folder, label, revision)
        scratch = ScratchDatabase(url, folder, f"turnout_scratch_{rt.name.replace('-', '_')}_{dep}").__enter__()
        try:
            prove_backup(backup, scratch, cfg.restore_jobs)
        except Exception:
            scratch.drop()
            raise
    except Exception as e:
        rt.ledger.result(action, False, error=scrub(str(e), url))
        raise
    crash_point("backup:after")
    rt.ledger.result(action, True, **backup.as_dict())
    rt.emit(
        "phase.started",
        dep,
        phase="backup",
        message=f"backup {backup.path.name}: {backup.size / 1e6:.1f} MB in {backup.seconds:.2f}s, proved by a restore "
        f"into a scratch database in {backup.proof['restore_seconds']:.2f}s "
        f"({backup.proof['tables']} tables, {backup.proof['rows']} rows, equal)",
    )
    if keep_scratch:
        return backup, scratch
    scratch.drop()
    return backup, None


@task(name="dry-run-migrations", cache_policy=NO_CACHE)
def dry_run(
    rt: Runtime, dep: int, scratch: ScratchDatabase, project: AlembicProject, cfg: DatabaseConfig, *, target: str
) -> dict[str, Any]:
    """Apply the pending migrations to the scratch copy only; report what changed and how long it took."""
    before = _schema(scratch.url)
    result = apply_migrations(scratch.url, project, cfg, target)
    after = _schema(scratch.url)
    report = {
        "succeeded": result.ok,
        "seconds": result.seconds,
        "from": result.start,
        "to": result.end,
        "error": result.error,
        "changes": _schema_changes(before, after),
    }
    action = rt.ledger.intent(dep, "dry-run", "dry-run-migrations", database=redact(scratch.url))
    rt.ledger.result(action, result.ok, **report)
    return report


def _schema(url: str) -> dict[str, set[str]]:
    with engine_for(url).connect() as conn:
        ins = inspect(conn)
        return {
            t: {c["name"] for c in ins.get_columns(t)} | {f"index {i['name']}" for i in ins.get_indexes(t)}
            for t in ins.get_table_names()
        }


def _schema_changes(before: dict[str, set[str]], after: dict[str, set[str]]) -> list[str]:
    out = [f"+ table {t}" for t in sorted(set(after) - set(before))]
    out += [f"- table {t}" for t in sorted(set(before) - set(after))]
    for t in sorted(set(before) & set(after)):
        out += [f"+ {t}.{c}" for c in sorted(after[t] - before[t])]
        out += [f"- {t}.{c}" for c in sorted(before[t] - after[t])]
    return out


@task(name="apply-migrations", cache_policy=NO_CACHE)
def apply_pending(
    rt: Runtime, dep: int, url: str, project: AlembicProject, cfg: DatabaseConfig, *, target: str
) -> ApplyResult:
    """Apply with lock_timeout/statement_timeout, retrying on lock timeouts; the result, never an exception."""
    logger = get_run_logger()
    action = rt.ledger.intent(
        dep,
        "apply",
        "apply-migrations",
        target=target,
        lock_timeout=cfg.lock_timeout,
        statement_timeout=cfg.statement_timeout,
        lock_retries=cfg.lock_retries,
    )

    def attempt(record: dict) -> None:
        rt.emit(
            "phase.started",
            dep,
            phase="apply",
            message=f"attempt {record['attempt']} stopped at revision {record['at_revision']}: "
            f"{record['error']}" + (" (lock timeout: retrying)" if record["sqlstate"] == "55P03" else ""),
        )

    result = apply_migrations(url, project, cfg, target, on_attempt=attempt)
    rt.ledger.result(action, result.ok, **result.as_dict())
    logger.info("migrations %s -> %s: %s", result.start, result.end, "ok" if result.ok else result.error)
    return result


@task(name="put-database-back", cache_policy=NO_CACHE)
def put_back(
    rt: Runtime,
    dep: int,
    url: str,
    project: AlembicProject,
    cfg: DatabaseConfig,
    *,
    result: ApplyResult,
    lints: list[MigrationLint],
    backup: Backup | None,
) -> tuple[str, list[str]]:
    """After a failed apply: downgrade when everything applied was reversible expand, else restore the backup.

    Returns (how, differences from the backup after it; [] = proved equal). `how` is `untouched`,
    `downgraded`, `restored`, or `stuck` (no way back: a human is needed).
    """
    applied = _applied(project, result)
    if not applied:
        return "untouched", differences(backup.fingerprint, fingerprint(engine_for(url))) if backup else []
    kinds = {x.revision: x.kind for x in lints}
    action = rt.ledger.intent(dep, "put-back", "put-database-back", applied=applied, at=result.end)
    if all(kinds.get(r) == "expand" and project.revision(r).reversible for r in applied):
        try:
            reached = downgrade_to(url, project, cfg, result.start)
            diffs = differences(backup.fingerprint, fingerprint(engine_for(url))) if backup else []
            rt.ledger.result(
                action, reached == result.start and not diffs, how="downgraded", reached=reached, differences=diffs
            )
            if reached == result.start and not diffs:
                return "downgraded", diffs
        except Exception as e:
            rt.emit(
                "phase.started",
                dep,
                phase="put-back",
                message=f"downgrade failed ({scrub(str(e), url)[:200]}): restoring the backup instead",
            )
    if backup is None:
        rt.ledger.result(action, False, how="stuck", why="no backup was taken (--no-backup-before)")
        return "stuck", [f"the database is at {result.end} and there is no backup to restore"]
    diffs = restore_backup(url, backup)
    rt.ledger.result(action, not diffs, how="restored", backup=str(backup.path), differences=diffs)
    return "restored", diffs


def _applied(project: AlembicProject, result: ApplyResult) -> list[str]:
    """The revisions this run applied, oldest first (start exclusive, end inclusive)."""
    if result.end is None or result.end == result.start:
        return []
    out = []
    for r in project.pending(result.start):
        out.append(r.id)
        if r.id == result.end:
            break
    return out


@task(name="verify-database", cache_policy=NO_CACHE)
def verify_database(
    rt: Runtime, dep: int, url: str, project: AlembicProject, *, plan: MigrationPlan, backup: Backup | None
) -> list[str]:
    """The head is reached, the live slot is still ready, untouched tables kept their row counts; problems."""
    from turnout.health import probe

    problems = []
    with engine_for(url).connect() as conn:
        now = project.current(conn)
    if now != plan.head:
        problems.append(f"the database is at {now}, not {plan.head}")
    split = rt.router.get_split()
    for slot in split.live_slots() if split else []:
        urls = [f"http://{a}" for a in rt.target.endpoints(slot)]
        ok, rows = probe(urls, rt.environment.health.paths, rt.environment.health.max_response_time)
        if not ok:
            problems.append(
                f"slot {slot} fails its readiness after the migration: "
                + "; ".join(f"{r['url']}: {r['why']}" for r in rows if not r["ok"])
            )
    if backup is not None:
        sql = " ".join(plan.sql.values())
        untouched = {t for t in backup.fingerprint if t != "alembic_version" and t not in sql}
        actual = fingerprint(engine_for(url))
        problems += [d for d in differences(backup.fingerprint, actual, only=untouched) if "content" not in d]
    action = rt.ledger.intent(dep, "verify", "verify-database")
    rt.ledger.result(action, not problems, problems=problems, revision=now)
    return problems


@task(name="prune-backups", cache_policy=NO_CACHE)
def prune_backups(rt: Runtime, cfg: DatabaseConfig) -> list[str]:
    """Keep the newest `retention` backups of this environment; return the files removed."""
    folder = rt.environment.state_dir / cfg.backup_dir
    files = sorted(
        (p for p in folder.glob(f"{rt.name}-*") if p.suffix in (".dump", ".sqlite")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = []
    for p in files[cfg.retention :]:
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed
