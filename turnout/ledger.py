"""The ledger: the durable record of environments, slots, traffic, deployments and their evidence.

Every action that changes the world is written here twice: as an *intent* before it is attempted
and as a *result* after, so a crashed run can be reconciled. One deployment per environment runs
at a time, enforced by a row in `locks` (a primary key, so it holds across processes and hosts);
a lock whose holder process is gone on this host is taken over and the crashed run recorded.

SQLite by default (a file in the state directory), any SQLAlchemy URL otherwise. This module never
imports Prefect: `turnout status` reads it in well under a second.

A ledger that cannot be opened is a ConfigError naming it (exit 2: nothing was touched). A SQLite
file that exists but is empty while the state directory shows earlier deployments, or that is not
SQLite at all, is refused rather than silently started afresh: the record of what runs where
would be lost, and deployment numbers (and report names) would start again.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    make_url,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from turnout.errors import ConfigError, LockHeld
from turnout.faults import crash_point
from turnout.models import SLOTS, Split, Verdict, utcnow
from turnout.procs import pid_alive

__all__ = ["Ledger", "LockInfo", "ContractMigration", "MIGRATION_LINT", "DATABASE_BACKUP"]

# The actions a migrate run records (written by tasks/database.py), read back by the migration queries
# below: the names live here so that writing and reading them can never drift apart.
MIGRATION_LINT = "lint-migrations"  # result: {"lints": [{"revision", "kind", "message", ...}, ...]}
DATABASE_BACKUP = "backup-database"  # result: the proved backup (turnout.database.backup.Backup.as_dict)


@dataclass(frozen=True)
class ContractMigration:
    """A migrate run that applied at least one contract migration (one an older release cannot run on)."""

    migration_id: int  # the migrate run's deployment id
    revision: str  # its first contract migration
    backup: dict[str, Any] | None  # the proved backup it took before applying anything, or None


class _Base(DeclarativeBase):
    pass


class EnvironmentRow(_Base):
    __tablename__ = "environments"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    split_blue: Mapped[int | None] = mapped_column(Integer, nullable=True)
    split_green: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_known_good: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_known_good_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SlotRow(_Base):
    __tablename__ = "slots"
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(String(16), primary_key=True)
    release: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="empty")
    endpoints: Mapped[list] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeploymentRow(_Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(64), index=True)
    strategy: Mapped[str] = mapped_column(String(32))
    release: Mapped[str] = mapped_column(String(255))
    from_release: Mapped[str | None] = mapped_column(String(255), nullable=True)
    from_slot: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_slot: Mapped[str | None] = mapped_column(String(16), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    reason: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ActionRow(_Base):
    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    phase: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    intent: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="intent")  # intent | done | failed
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VerdictRow(_Base):
    __tablename__ = "verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    gate: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LockRow(_Base):
    __tablename__ = "locks"
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    purpose: Mapped[str] = mapped_column(String(64), default="deploy")
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReleaseRow(_Base):
    __tablename__ = "releases"
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    release: Mapped[str] = mapped_column(String(255), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16))  # good | bad
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LockInfo(dict):
    """The lock row as a dict, plus `taken_over`: the stale lock this one replaced, if any."""


def _row_dict(row: Any) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in row.__table__.columns}


def _crash_points(method):
    """`ledger.<method>:before` / `:after` crash points around a write that records the world's state."""
    name = f"ledger.{method.__name__}"

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        crash_point(f"{name}:before")
        out = method(*args, **kwargs)
        crash_point(f"{name}:after")
        return out

    return wrapper


class Ledger:
    """Read and write the ledger at `url` (created on first use unless `create` is False).

    `state_dir` is where the environment keeps its other state: a SQLite ledger found empty while
    it holds earlier deployments' reports is refused (see the module docstring). Raises ConfigError
    naming the ledger when it cannot be opened.
    """

    def __init__(self, url: str, *, state_dir: Path | None = None, create: bool = True):
        self.url = url
        kwargs: dict[str, Any] = {}
        path = _sqlite_file(url)
        if path is not None:
            _check_sqlite_file(path, state_dir or path.parent)
            if create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise ConfigError(_open_error(url, path, e.strerror or str(e))) from None
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            if create:
                _Base.metadata.create_all(self.engine)
            self.exists = create or inspect(self.engine).has_table(DeploymentRow.__tablename__)
        except SQLAlchemyError as e:
            self.engine.dispose()
            reason = str(getattr(e, "orig", None) or e).strip().splitlines() or ["?"]
            raise ConfigError(_open_error(url, path, reason[0])) from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open_existing(cls, url: str, *, state_dir: Path | None = None) -> Ledger | None:
        """The ledger at `url` when one was ever written there, else None. Creates nothing (for reads)."""
        path = _sqlite_file(url)
        if path is not None:
            _check_sqlite_file(path, state_dir or path.parent)
            if not path.is_file() or path.stat().st_size == 0:
                return None
        ledger = cls(url, state_dir=state_dir, create=False)
        if not ledger.exists:
            ledger.close()
            return None
        return ledger

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        with self._session() as s, s.begin():
            yield s

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # --- the environment lock -------------------------------------------------------------------

    def acquire_lock(self, environment: str, purpose: str = "deploy", wait: float = 0.0) -> LockInfo:
        """Take the environment's lock or raise LockHeld naming the holder (after `wait` seconds of trying).

        A lock held by a process that no longer exists on this host is stale: it is taken over, the
        crashed deployment is marked `crashed` (for `turnout recover`), and the returned LockInfo says
        so in `taken_over`.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._acquire_lock(environment, purpose)
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _acquire_lock(self, environment: str, purpose: str) -> LockInfo:
        host, pid = socket.gethostname(), os.getpid()
        taken_over = None
        with self.session() as s:
            row = s.get(LockRow, environment)
            if row is not None:
                if row.host == host and not pid_alive(row.pid):
                    taken_over = _row_dict(row)
                    if row.deployment_id:
                        dep = s.get(DeploymentRow, row.deployment_id)
                        if dep is not None and dep.status == "running":
                            dep.status = "crashed"
                            dep.reason = f"the run crashed (pid {row.pid} is gone); lock taken over"
                            dep.finished_at = utcnow()
                    s.delete(row)
                    s.flush()
                else:
                    raise LockHeld(self._held_message(environment, row))
        try:
            with self.session() as s:
                s.add(LockRow(environment=environment, purpose=purpose, pid=pid, host=host))
        except IntegrityError:
            with self.session() as s:
                row = s.get(LockRow, environment)
                raise LockHeld(self._held_message(environment, row)) from None
        info = LockInfo(environment=environment, pid=pid, host=host, purpose=purpose)
        info["taken_over"] = taken_over
        return info

    @staticmethod
    def _held_message(environment: str, row: LockRow | None) -> str:
        if row is None:
            return f"environment {environment!r} is locked by another deployment"
        dep = f"deployment #{row.deployment_id}" if row.deployment_id else row.purpose
        return (
            f"environment {environment!r} is busy: {dep} holds it (pid {row.pid} on {row.host}, "
            f"since {row.acquired_at:%Y-%m-%d %H:%M:%S}); wait for it to finish, this run was not queued"
        )

    def ensure_unlocked(self, environment: str) -> None:
        """Raise LockHeld when a live process holds the environment (a cheap check before a run)."""
        with self.session() as s:
            row = s.get(LockRow, environment)
            if row is not None and not (row.host == socket.gethostname() and not pid_alive(row.pid)):
                raise LockHeld(self._held_message(environment, row))

    def attach_lock(self, environment: str, deployment_id: int) -> None:
        """Record which deployment holds the lock."""
        with self.session() as s:
            row = s.get(LockRow, environment)
            if row is not None:
                row.deployment_id = deployment_id

    @_crash_points
    def release_lock(self, environment: str) -> None:
        """Release the lock if this process holds it."""
        with self.session() as s:
            row = s.get(LockRow, environment)
            if row is not None and row.pid == os.getpid() and row.host == socket.gethostname():
                s.delete(row)

    def lock_holder(self, environment: str) -> dict[str, Any] | None:
        """The current lock row, or None."""
        with self.session() as s:
            row = s.get(LockRow, environment)
            return _row_dict(row) if row else None

    # --- deployments, actions and verdicts ------------------------------------------------------

    @_crash_points
    def start_deployment(self, environment: str, strategy: str, release: str, **fields: Any) -> int:
        """Record a new deployment in state `running`; return its id."""
        with self.session() as s:
            self._env_row(s, environment)
            row = DeploymentRow(
                environment=environment,
                strategy=strategy,
                release=release,
                pid=os.getpid(),
                host=socket.gethostname(),
                **fields,
            )
            s.add(row)
            s.flush()
            return row.id

    def update_deployment(self, deployment_id: int, **fields: Any) -> None:
        """Change fields of a deployment row."""
        with self.session() as s:
            row = s.get(DeploymentRow, deployment_id)
            for k, v in fields.items():
                setattr(row, k, v)

    def request_promotion(self, environment: str) -> int | None:
        """Ask the running canary of `environment` to promote; its id, or None when none runs."""
        with self.session() as s:
            row = s.scalars(
                select(DeploymentRow)
                .where(
                    DeploymentRow.environment == environment,
                    DeploymentRow.status == "running",
                    DeploymentRow.strategy == "canary",
                )
                .order_by(DeploymentRow.id.desc())
            ).first()
            if row is None:
                return None
            row.options = {**(row.options or {}), "promote_requested_at": utcnow().isoformat()}
            return row.id

    def promotion_requested(self, deployment_id: int) -> bool:
        """True once `request_promotion` reached this deployment."""
        with self.session() as s:
            row = s.get(DeploymentRow, deployment_id)
            return bool(row and (row.options or {}).get("promote_requested_at"))

    def request_rollback(self, environment: str, reason: str) -> int | None:
        """Ask the running deployment of `environment` (if any) to roll back now; its id, or None."""
        with self.session() as s:
            row = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.environment == environment, DeploymentRow.status == "running")
                .order_by(DeploymentRow.id.desc())
            ).first()
            if row is None:
                return None
            row.options = {
                **(row.options or {}),
                "rollback_requested_at": utcnow().isoformat(),
                "rollback_reason": reason,
            }
            return row.id

    def rollback_requested(self, deployment_id: int) -> str | None:
        """The reason given to `request_rollback` for this deployment, or None."""
        with self.session() as s:
            row = s.get(DeploymentRow, deployment_id)
            options = (row.options or {}) if row else {}
            return options.get("rollback_reason") if options.get("rollback_requested_at") else None

    @_crash_points
    def finish_deployment(self, deployment_id: int, status: str, reason: str = "") -> None:
        """Record the outcome: promoted, aborted or failed."""
        self.update_deployment(deployment_id, status=status, reason=reason, finished_at=utcnow())

    def intent(self, deployment_id: int, phase: str, name: str, **detail: Any) -> int:
        """Write what is about to be done, before doing it; return the action id."""
        with self.session() as s:
            row = ActionRow(deployment_id=deployment_id, phase=phase, name=name, intent=_jsonable(detail))
            s.add(row)
            s.flush()
            return row.id

    def result(self, action_id: int, ok: bool, **detail: Any) -> None:
        """Write how an action ended."""
        with self.session() as s:
            row = s.get_one(ActionRow, action_id)
            row.state = "done" if ok else "failed"
            row.result = _jsonable(detail)
            row.finished_at = utcnow()

    def record_verdict(self, deployment_id: int, verdict: Verdict) -> None:
        """Store a gate verdict with its evidence."""
        with self.session() as s:
            s.add(
                VerdictRow(
                    deployment_id=deployment_id,
                    gate=verdict.gate,
                    phase=verdict.phase.value,
                    outcome=verdict.outcome.value,
                    reason=verdict.reason,
                    evidence=_jsonable(verdict.evidence),
                )
            )

    # --- environment state ----------------------------------------------------------------------

    def _env_row(self, s: Session, environment: str) -> EnvironmentRow:
        row = s.get(EnvironmentRow, environment)
        if row is None:
            row = EnvironmentRow(name=environment)
            s.add(row)
            for slot in SLOTS:
                s.add(SlotRow(environment=environment, slot=slot, state="empty", endpoints=[]))
            s.flush()
        return row

    @_crash_points
    def set_slot(
        self, environment: str, slot: str, *, state: str, release: str | None = None, endpoints: list[str] | None = None
    ) -> None:
        """Record what a slot holds now."""
        with self.session() as s:
            self._env_row(s, environment)
            row = s.get_one(SlotRow, (environment, slot))
            row.state = state
            if release is not None or state in ("empty", "stopped"):
                row.release = release if release is not None else row.release
            if endpoints is not None:
                row.endpoints = list(endpoints)
            row.updated_at = utcnow()

    @_crash_points
    def set_split(self, environment: str, split: Split) -> None:
        """Record the traffic split now in force."""
        with self.session() as s:
            row = self._env_row(s, environment)
            row.split_blue, row.split_green = split.blue, split.green
            row.updated_at = utcnow()

    @_crash_points
    def set_last_known_good(self, environment: str, release: str) -> None:
        """Record the release that was promoted and survived (and mark it good)."""
        with self.session() as s:
            row = self._env_row(s, environment)
            row.last_known_good, row.last_known_good_at = release, utcnow()
        self.mark_release(environment, release, "good", "promoted and survived its watch")

    @_crash_points
    def mark_release(self, environment: str, release: str, verdict: str, reason: str = "") -> None:
        """Record that `release` proved good or bad in `environment` (the latest verdict wins)."""
        if verdict not in ("good", "bad"):
            raise ValueError(f"verdict must be good or bad, not {verdict!r}")
        with self.session() as s:
            self._env_row(s, environment)
            row = s.get(ReleaseRow, (environment, release))
            if row is None:
                row = ReleaseRow(environment=environment, release=release, verdict=verdict)
                s.add(row)
            row.verdict, row.reason, row.at = verdict, reason, utcnow()

    def release_verdict(self, environment: str, release: str) -> dict[str, Any] | None:
        """The latest good/bad verdict on `release` in `environment`, or None when it never had one."""
        with self.session() as s:
            row = s.get(ReleaseRow, (environment, release))
            return _row_dict(row) if row else None

    def known_good(self, environment: str) -> list[str]:
        """Releases that proved good here and are not marked bad since, most recent first."""
        with self.session() as s:
            rows = s.scalars(
                select(ReleaseRow)
                .where(ReleaseRow.environment == environment, ReleaseRow.verdict == "good")
                .order_by(ReleaseRow.at.desc())
            )
            return [r.release for r in rows]

    def migrations_since(self, environment: str, since) -> list[dict[str, Any]]:
        """Migrations that changed the database (status migrated) after `since`, oldest first, with actions."""
        with self.session() as s:
            ids = list(
                s.scalars(
                    select(DeploymentRow.id)
                    .where(
                        DeploymentRow.environment == environment,
                        DeploymentRow.strategy == "migrate",
                        DeploymentRow.status == "migrated",
                        DeploymentRow.started_at >= since,
                    )
                    .order_by(DeploymentRow.id)
                )
            )
        return [d for i in ids if (d := self.deployment(i)) is not None]

    def migration_lints(self, deployment_id: int) -> list[dict[str, Any]]:
        """How a migrate run's lint classified each pending migration (revision, kind, message, findings)."""
        action = self._last_action(deployment_id, MIGRATION_LINT)
        return list(((action or {}).get("result") or {}).get("lints", []))

    def backup_before(self, deployment_id: int) -> dict[str, Any] | None:
        """The proved backup a migrate run took before applying anything (path, proof, ...), or None."""
        action = self._last_action(deployment_id, DATABASE_BACKUP, state="done")
        return action["result"] if action else None

    def contract_migrations_since(self, environment: str, since: datetime) -> list[ContractMigration]:
        """Migrate runs after `since` that applied a contract migration, oldest first, each with its backup."""
        found = []
        for m in self.migrations_since(environment, since):
            contracts = [x for x in self.migration_lints(m["id"]) if x.get("kind") == "contract"]
            if contracts:
                found.append(ContractMigration(m["id"], contracts[0]["revision"], self.backup_before(m["id"])))
        return found

    def _last_action(self, deployment_id: int, name: str, state: str | None = None) -> dict[str, Any] | None:
        with self.session() as s:
            query = select(ActionRow).where(ActionRow.deployment_id == deployment_id, ActionRow.name == name)
            if state is not None:
                query = query.where(ActionRow.state == state)
            row = s.scalars(query.order_by(ActionRow.id.desc()).limit(1)).first()
            return _row_dict(row) if row else None

    def last_promotion(self, environment: str, release: str) -> dict[str, Any] | None:
        """The latest deployment that put `release` live (promoted, rolled back to, or recovered onto)."""
        with self.session() as s:
            rows = s.scalars(
                select(DeploymentRow)
                .where(
                    DeploymentRow.environment == environment,
                    DeploymentRow.release == release,
                    DeploymentRow.status.in_(("promoted", "rolled-back")),
                )
                .order_by(DeploymentRow.id.desc())
            )
            for row in rows:  # a deployment "rolled-back" carried a bad release; a rollback put its release live
                if (row.strategy == "rollback") == (row.status == "rolled-back"):
                    return _row_dict(row)
            return None

    def ever_deployed(self, environment: str, release: str) -> bool:
        """True when any deployment in `environment` ever carried `release`."""
        with self.session() as s:
            return (
                s.scalars(
                    select(DeploymentRow.id)
                    .where(DeploymentRow.environment == environment, DeploymentRow.release == release)
                    .limit(1)
                ).first()
                is not None
            )

    def environment_state(self, environment: str) -> dict[str, Any]:
        """Everything `turnout status` shows: split, slots, last known good, lock, last deployment."""
        with self.session() as s:
            env = s.get(EnvironmentRow, environment)
            slots = {r.slot: _row_dict(r) for r in s.scalars(select(SlotRow).where(SlotRow.environment == environment))}
            last = s.scalars(  # the last run that moved traffic: migrations have their own line
                select(DeploymentRow)
                .where(DeploymentRow.environment == environment, DeploymentRow.strategy != "migrate")
                .order_by(DeploymentRow.id.desc())
                .limit(1)
            ).first()
            migration = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.environment == environment, DeploymentRow.strategy == "migrate")
                .order_by(DeploymentRow.id.desc())
                .limit(1)
            ).first()
            lock = s.get(LockRow, environment)
            split = None
            if env is not None and env.split_blue is not None:
                split = Split(blue=env.split_blue, green=env.split_green)
            return {
                "environment": environment,
                "known": env is not None,
                "split": split,
                "slots": slots,
                "last_known_good": env.last_known_good if env else None,
                "last_known_good_at": env.last_known_good_at if env else None,
                "last_deployment": _row_dict(last) if last else None,
                "last_migration": _row_dict(migration) if migration else None,
                "lock": _row_dict(lock) if lock else None,
            }

    def history(self, environment: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest deployments, newest first."""
        with self.session() as s:
            rows = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.environment == environment)
                .order_by(DeploymentRow.id.desc())
                .limit(limit)
            )
            return [_row_dict(r) for r in rows]

    def deployment(self, deployment_id: int) -> dict[str, Any] | None:
        """One deployment with its actions and verdicts, in order."""
        with self.session() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                return None
            d = _row_dict(row)
            d["actions"] = [
                _row_dict(a)
                for a in s.scalars(
                    select(ActionRow).where(ActionRow.deployment_id == deployment_id).order_by(ActionRow.id)
                )
            ]
            d["verdicts"] = [
                _row_dict(v)
                for v in s.scalars(
                    select(VerdictRow).where(VerdictRow.deployment_id == deployment_id).order_by(VerdictRow.id)
                )
            ]
            return d


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another database, or SQLite in memory)."""
    try:
        u = make_url(url)
    except Exception:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return Path(u.database)


def _check_sqlite_file(path: Path, state_dir: Path) -> None:
    """Refuse a ledger file that cannot be the ledger: not SQLite, or empty while `state_dir` shows history.

    The file is never opened with Python's `open()`: closing any descriptor of a database file
    releases every POSIX lock this process holds on it, including those of a Ledger already open here,
    and another process could then checkpoint and remove the WAL under it (SQLite's "How To Corrupt
    An SQLite Database File", 2.2). SQLite itself is asked instead: it shares one descriptor per file
    within the process and defers closing it while locks are held.
    """
    import sqlite3
    from urllib.parse import quote

    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise ConfigError(f"ledger {path}: cannot be read: {e.strerror}; nothing was touched") from None
    if path.is_dir():
        return  # SQLAlchemy's own error names it
    aside = f"move it aside (`mv {path} {path}.broken`) to start a new ledger on purpose; nothing was touched"
    if size == 0:
        history = _history(state_dir)
        if history:  # an empty file beside earlier deployments' state: truncated, not new
            raise ConfigError(
                f"ledger {path} is empty (0 bytes) but {state_dir} holds earlier deployments "
                f"({', '.join(history)}): restore it from a backup, or {aside}"
            )
        return
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise ConfigError(_open_error(str(path), path, str(e))) from None
    try:
        con.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e) or "malformed" in str(e):
            raise ConfigError(
                f"ledger {path} is not a SQLite database (overwritten or corrupted): restore it from a backup, "
                f"or {aside}"
            ) from None
        raise ConfigError(_open_error(str(path), path, str(e))) from None  # e.g. a full disk: no room for -shm
    finally:
        con.close()


def _history(state_dir: Path) -> list[str]:
    """What in the state directory shows earlier deployments: their reports, else any non-empty folder."""
    try:
        reports = sorted(state_dir.glob("reports/deployment-*.md"), key=lambda p: p.stat().st_mtime)
        if reports:
            return [str(p.relative_to(state_dir)) for p in reports[:3]] + (["…"] if len(reports) > 3 else [])
        return sorted(f"{p.name}/" for p in state_dir.iterdir() if p.is_dir() and any(p.iterdir()))[:3]
    except OSError:
        return []


def _open_error(url: str, path: Path | None, reason: str) -> str:
    """One line: which ledger, why it cannot be opened, what to check."""
    if path is not None:
        from turnout.storage import storage_problem

        problem = storage_problem(path.parent)
        return (
            f"ledger {path}: cannot open: {reason}"
            + (f" ({problem})" if problem else "")
            + "; the state directory (state_dir) must be writable and have free space; nothing was touched"
        )
    from turnout.database.url import redact

    return (
        f"ledger {redact(url)}: cannot connect: {reason}; check ledger_url in the environment file "
        "and that the database is running; nothing was touched"
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets `turnout status` read while a deployment writes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _jsonable(value: Any) -> Any:
    """Make evidence JSON-safe (enums, datetimes, models become plain values)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump(mode="json"))
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)
