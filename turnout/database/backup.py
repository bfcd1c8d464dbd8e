"""Backups that are proved, not assumed: taken, restored into a scratch database, and compared.

PostgreSQL: `pg_dump -Fc` (compressed, restorable in parallel with `pg_restore -j`); the proof restores
it into a scratch database created for the purpose and compares tables, row counts and a checksum per
table with the live database at the moment of the dump. SQLite: the online backup API, proved the same way.
The password travels in PGPASSWORD, never on a command line, in a log line or in the ledger.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from turnout.database.snapshot import differences, engine_for, fingerprint
from turnout.database.url import redact, scrub
from turnout.errors import BackendError

__all__ = ["Backup", "take_backup", "prove_backup", "restore_backup", "ScratchDatabase", "pg_env"]


@dataclass
class Backup:
    """One backup file and what it held."""

    path: Path
    dialect: str
    revision: str | None
    fingerprint: dict[str, dict[str, Any]]
    seconds: float
    size: int
    proved: bool = False
    proof: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "dialect": self.dialect,
            "revision": self.revision,
            "seconds": self.seconds,
            "size": self.size,
            "proved": self.proved,
            "proof": self.proof,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Backup:
        """The backup a ledger action recorded."""
        return cls(
            Path(d["path"]),
            d["dialect"],
            d.get("revision"),
            d["fingerprint"],
            d.get("seconds", 0.0),
            d.get("size", 0),
            d.get("proved", False),
            d.get("proof", {}),
        )


def pg_env(url: str, database: str | None = None) -> dict[str, str]:
    """libpq environment variables for `url` (the password in PGPASSWORD, not on the command line)."""
    u = make_url(url)
    env = {
        **os.environ,
        "PGHOST": u.host or "127.0.0.1",
        "PGPORT": str(u.port or 5432),
        "PGDATABASE": database or u.database or "",
        "PGCONNECT_TIMEOUT": "10",
    }
    if u.username:
        env["PGUSER"] = u.username
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return env


def _run(args: list[str], url: str, env: dict[str, str], what: str, timeout: float = 3600) -> None:
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BackendError(f"{args[0]} is not installed (Debian: postgresql-client)") from None
    if proc.returncode != 0:
        raise BackendError(f"{what} failed (exit {proc.returncode}): {scrub(proc.stderr.strip(), url)[-800:]}")


def take_backup(url: str, folder: Path, label: str, revision: str | None) -> Backup:
    """Back up the database at `url` into `folder`; its fingerprint is taken in the same breath."""
    folder.mkdir(parents=True, exist_ok=True)
    dialect = make_url(url).get_backend_name()
    t0 = time.monotonic()
    if dialect == "postgresql":
        path = folder / f"{label}.dump"
        # the fingerprint first: pg_dump's snapshot is at least as new, and nothing migrates in between
        fp = fingerprint(engine_for(url))
        _run(["pg_dump", "-Fc", "--lock-wait-timeout=10000", "-f", str(path)], url, pg_env(url), "pg_dump")
    elif dialect == "sqlite":
        path = folder / f"{label}.sqlite"
        source = make_url(url).database
        if not source or source == ":memory:":
            raise BackendError("an in-memory SQLite database cannot be backed up")
        with sqlite3.connect(source) as src, sqlite3.connect(path) as dst:
            src.backup(dst)  # the online backup API: consistent while the application keeps writing
        fp = fingerprint(engine_for(f"sqlite:///{path}"))
    else:
        raise BackendError(f"backups of {dialect} databases are not supported (PostgreSQL and SQLite are)")
    return Backup(path, dialect, revision, fp, round(time.monotonic() - t0, 3), path.stat().st_size)


class ScratchDatabase:
    """A throw-away database beside the live one (PostgreSQL: same server; SQLite: a temp file)."""

    def __init__(self, url: str, folder: Path, name: str):
        self.live_url = url
        u = make_url(url)
        self.dialect = u.get_backend_name()
        if self.dialect == "postgresql":
            self.name = name
            self.url = u.set(database=name).render_as_string(hide_password=False)
            self._admin = u.set(database="postgres").render_as_string(hide_password=False)
        else:
            self.name = str(folder / f"{name}.sqlite")
            self.url = f"sqlite:///{self.name}"

    def __enter__(self) -> ScratchDatabase:
        self.drop()
        if self.dialect == "postgresql":
            with engine_for(self._admin).connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text(f'CREATE DATABASE "{self.name}"'))
        return self

    def __exit__(self, *exc) -> None:
        self.drop()

    def drop(self) -> None:
        """Remove the scratch database (idempotent)."""
        if self.dialect == "postgresql":
            with engine_for(self._admin).connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        else:
            Path(self.name).unlink(missing_ok=True)

    def load(self, backup: Backup, jobs: int) -> float:
        """Restore `backup` into the scratch database; the seconds it took."""
        t0 = time.monotonic()
        if self.dialect == "postgresql":
            _run(
                ["pg_restore", "--exit-on-error", "--no-owner", "-j", str(jobs), "-d", self.name, str(backup.path)],
                self.live_url,
                pg_env(self.live_url, self.name),
                "pg_restore into the scratch database",
            )
        else:
            shutil.copyfile(backup.path, self.name)
        return round(time.monotonic() - t0, 3)


def prove_backup(backup: Backup, scratch: ScratchDatabase, jobs: int) -> Backup:
    """Restore into `scratch` and compare with the fingerprint taken at backup time; raise if they differ."""
    seconds = scratch.load(backup, jobs)
    diffs = differences(backup.fingerprint, fingerprint(engine_for(scratch.url)))
    backup.proof = {
        "restore_seconds": seconds,
        "scratch": redact(scratch.url),
        "tables": len(backup.fingerprint),
        "rows": sum(v["rows"] for v in backup.fingerprint.values()),
        "differences": diffs,
    }
    if diffs:
        raise BackendError(
            f"the backup {backup.path.name} does not restore to what was backed up: {'; '.join(diffs[:5])}"
        )
    backup.proved = True
    return backup


def restore_backup(url: str, backup: Backup) -> list[str]:
    """Put the live database back to the backup; returns the differences after (empty = proved equal)."""
    live = make_url(url).database
    if not live:
        raise BackendError("the database URL names no database to restore onto")
    if backup.dialect == "postgresql":
        engine = engine_for(url)
        extra = sorted(set(fingerprint(engine)) - set(backup.fingerprint))
        with engine.begin() as c:  # tables the failed run created are not in the dump: --clean would leave them
            for name in extra:
                c.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
        _run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "-d",
                live,
                str(backup.path),
            ],
            url,
            pg_env(url),
            "pg_restore onto the live database",
        )
    else:
        with sqlite3.connect(backup.path) as src, sqlite3.connect(live) as dst:
            src.backup(dst)
    return differences(backup.fingerprint, fingerprint(engine_for(url)))
