"""Applying migrations online: lock and statement timeouts, a retry on lock timeouts, one transaction each.

A migration that waits behind a long transaction must not queue every query behind its ACCESS EXCLUSIVE
lock: `lock_timeout` makes it give up quickly (SQLSTATE 55P03) and it is retried with backoff; the
database stays at a known revision in between, because each migration runs in its own transaction
(`transaction_per_migration`, which `CREATE INDEX CONCURRENTLY` in an autocommit block also needs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alembic import command
from sqlalchemy.exc import DBAPIError

from turnout.config import DatabaseConfig
from turnout.database.project import AlembicProject
from turnout.database.snapshot import engine_for
from turnout.database.url import scrub
from turnout.faults import crash_point

__all__ = ["ApplyResult", "apply_migrations", "downgrade_to", "sqlstate"]

LOCK_NOT_AVAILABLE = "55P03"


@dataclass
class ApplyResult:
    """How applying went: the revisions before and after, the attempts, and the error if it failed."""

    start: str | None
    end: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    sqlstate: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "attempts": self.attempts,
            "error": self.error,
            "sqlstate": self.sqlstate,
            "seconds": self.seconds,
        }


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (psycopg), or None."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _connect(url: str, cfg: DatabaseConfig):
    engine = engine_for(url)
    conn = engine.connect()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET lock_timeout = '{int(cfg.lock_timeout * 1000)}ms'")
        conn.exec_driver_sql(f"SET statement_timeout = '{int(cfg.statement_timeout * 1000)}ms'")
        conn.commit()  # plain SET outlives the transaction: every migration of this session has both limits
    return conn


def apply_migrations(
    url: str,
    project: AlembicProject,
    cfg: DatabaseConfig,
    target: str | None = None,
    on_attempt: Callable[[dict], None] | None = None,
) -> ApplyResult:
    """Upgrade to `target` (default head); retry on lock timeouts; never raises for a migration error."""
    target = target or project.head
    t0 = time.monotonic()
    with _connect(url, cfg) as conn:
        result = ApplyResult(start=project.current(conn))
    delay = cfg.retry_backoff
    for attempt in range(1, cfg.lock_retries + 2):
        conn = _connect(url, cfg)
        try:
            project.config.attributes["connection"] = conn
            record: dict[str, Any]  # one entry of result.attempts
            a0 = time.monotonic()
            try:
                for step in _steps(project, conn, target):  # one at a time: a crash point between each
                    crash_point("migration:before", step)
                    if conn.in_transaction():  # a read (the current revision) autobegan one: Alembic must own it
                        conn.rollback()
                    command.upgrade(project.config, step)
                    crash_point("migration:after", step)
                record = {"attempt": attempt, "ok": True, "seconds": round(time.monotonic() - a0, 3)}
                result.attempts.append(record)
                result.end, result.error = project.current(conn), None
                break
            except DBAPIError as e:
                state = sqlstate(e)
                result.end = _revision_now(conn, url, cfg, project)
                result.error, result.sqlstate = scrub(str(e.orig).strip().splitlines()[0], url), state
                record = {
                    "attempt": attempt,
                    "ok": False,
                    "sqlstate": state,
                    "error": result.error,
                    "at_revision": result.end,
                    "seconds": round(time.monotonic() - a0, 3),
                }
                result.attempts.append(record)
                if on_attempt:
                    on_attempt(record)
                if state != LOCK_NOT_AVAILABLE or attempt > cfg.lock_retries:
                    break
                time.sleep(delay)
                delay *= 2
            except Exception as e:  # a migration's own bug (Python error in the script)
                try:
                    conn.rollback()
                    result.end = project.current(conn)
                except Exception:
                    pass
                result.error = scrub(f"{type(e).__name__}: {e}", url)
                result.attempts.append({"attempt": attempt, "ok": False, "error": result.error})
                break
            except BaseException:  # a signal (turnout.signals.Interrupted): stop the statement on the server too
                _cancel(conn)
                raise
        finally:
            project.config.attributes.pop("connection", None)
            conn.close()
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _revision_now(conn, url: str, cfg: DatabaseConfig, project: AlembicProject, wait: float = 60.0) -> str | None:
    """The revision after a failed migration: on `conn`, or on a new connection when the server cut it (a
    restart), retried for up to `wait` seconds while the server comes back. Raises when it never does."""
    try:
        conn.rollback()
        return project.current(conn)
    except DBAPIError:
        pass
    deadline = time.monotonic() + wait
    while True:
        try:
            with _connect(url, cfg) as fresh:
                return project.current(fresh)
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _cancel(conn) -> None:
    """Cancel the statement running on `conn` (PostgreSQL), so its transaction ends now, not when it would."""
    try:
        raw = conn.connection.dbapi_connection
        (getattr(raw, "cancel_safe", None) or raw.cancel)()
    except Exception:
        pass


def _steps(project: AlembicProject, conn, target: str) -> list[str]:
    """The revisions from the database's current one up to `target`, oldest first (`[target]` when unknown)."""
    ids = [r.id for r in project.pending(project.current(conn))]
    if target not in ids:
        return [target]
    return ids[: ids.index(target) + 1]


def downgrade_to(url: str, project: AlembicProject, cfg: DatabaseConfig, revision: str | None) -> str | None:
    """Downgrade to `revision` (None: base); returns the revision reached."""
    conn = _connect(url, cfg)
    try:
        project.config.attributes["connection"] = conn
        command.downgrade(project.config, revision or "base")
        return project.current(conn)
    finally:
        project.config.attributes.pop("connection", None)
        conn.close()
