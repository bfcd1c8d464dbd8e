"""Benchmark: backups and migrations on a PostgreSQL database of a few hundred MB (127.0.0.1:5432).

1. turnout's backup + proof (pg_dump -Fc, restore into a scratch database, compare every table's rows
   and checksum) against a plain `pg_dump -Fc` of the same database: the ratio is the price of a proof.
2. Restore time into a fresh database with `pg_restore -j 1` and `-j 2`.
3. An expand migration (ADD COLUMN) queued behind a 5 s reader: how long a concurrent writer is blocked
   with turnout's lock_timeout (0.5 s, retried with backoff) versus a plain ALTER TABLE without one.

Builds its own database (BENCH_ROWS rows, default 2 000 000, ~300 MB) and drops it. Last line: JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _project import ROOT
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

ROWS = int(os.environ.get("BENCH_ROWS", "2000000"))
ADMIN = os.environ.get("TURNOUT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NAME = f"turnout_bench_{os.getpid()}"
URL = ADMIN.rsplit("/", 1)[0] + f"/{NAME}"


def admin_sql(sql: str) -> None:
    with create_engine(ADMIN, poolclass=NullPool, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(sql))


def build() -> float:
    t0 = time.monotonic()
    admin_sql(f'CREATE DATABASE "{NAME}"')
    with create_engine(URL, poolclass=NullPool).begin() as c:
        c.execute(text("CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL)"))
        c.execute(text("INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 10000) g"))
        c.execute(
            text(
                "CREATE TABLE events (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, "
                "kind text NOT NULL, payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        c.execute(
            text(
                "INSERT INTO events (account_id, kind, payload) SELECT 1 + g % 10000, 'kind' || (g % 17), "
                "repeat(md5(g::text), 3) FROM generate_series(1, :n) g"
            ),
            {"n": ROWS},
        )
        c.execute(text("CREATE INDEX events_account ON events (account_id)"))
        c.execute(text("CREATE INDEX events_kind ON events (kind, created_at)"))
    with create_engine(URL, poolclass=NullPool).connect() as c:
        size = c.execute(text("SELECT pg_database_size(current_database())")).scalar()
    print(f"built {NAME}: {ROWS} events, {size / 1e6:.0f} MB in {time.monotonic() - t0:.1f}s", flush=True)
    return size


def bench_backup(folder: Path) -> dict:
    from turnout.database.backup import ScratchDatabase, pg_env, prove_backup, take_backup

    t0 = time.monotonic()
    subprocess.run(["pg_dump", "-Fc", "-f", str(folder / "plain.dump")], env=pg_env(URL), check=True)
    plain = time.monotonic() - t0
    t0 = time.monotonic()
    backup = take_backup(URL, folder, "turnout", None)
    with ScratchDatabase(URL, folder, f"{NAME}_scratch") as scratch:
        prove_backup(backup, scratch, jobs=2)
    turnout_s = time.monotonic() - t0
    restores = {}
    for jobs in (1, 2):
        with ScratchDatabase(URL, folder, f"{NAME}_restore{jobs}") as scratch:
            restores[jobs] = scratch.load(backup, jobs)
    row = {
        "plain_pg_dump_s": round(plain, 2),
        "turnout_backup_and_proof_s": round(turnout_s, 2),
        "ratio": round(turnout_s / plain, 2),
        "dump_mb": round(backup.size / 1e6, 1),
        "dump_s": backup.seconds,
        "proof_restore_s": backup.proof["restore_seconds"],
        "restore_j1_s": restores[1],
        "restore_j2_s": restores[2],
    }
    print(f"backup: {row}", flush=True)
    return row


def _alembic_project(folder: Path):
    """A one-migration Alembic project: ADD COLUMN events.note (an expand migration)."""
    from turnout.config import DatabaseConfig, Environment, PluginTable
    from turnout.database.project import AlembicProject

    scripts = folder / "alembic"
    (scripts / "versions").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "demo_app" / "migrations" / "env.py", scripts / "env.py")
    (scripts / "versions" / "0001_note.py").write_text(
        '"""events.note"""\nimport sqlalchemy as sa\nfrom alembic import op\n'
        'revision = "0001"\ndown_revision = None\n\n'
        'def upgrade():\n    op.add_column("events", sa.Column("note", sa.Text, nullable=True))\n\n'
        'def downgrade():\n    op.drop_column("events", "note")\n'
    )
    env = Environment(name="bench", router=PluginTable(kind="nginx"), target=PluginTable(kind="process"), root=folder)
    cfg = DatabaseConfig(
        default_url="sqlite://", script_location=str(scripts), lock_timeout=0.5, lock_retries=20, retry_backoff=0.25
    )
    return AlembicProject(env, cfg), cfg


def _blocked(migrate) -> dict:
    """Max and total time a writer (an INSERT every 20 ms) waits while `migrate()` queues behind a 5 s reader."""
    stop = threading.Event()
    waits: list[float] = []

    def writer():
        with create_engine(URL, poolclass=NullPool).connect() as c:
            while not stop.is_set():
                t0 = time.monotonic()
                c.execute(text("INSERT INTO events (account_id, kind, payload) VALUES (1, 'w', 'w')"))
                c.commit()
                waits.append(time.monotonic() - t0)
                time.sleep(0.02)

    def reader():
        with create_engine(URL, poolclass=NullPool).connect() as c:
            c.execute(text("SELECT 1 FROM events LIMIT 1"))  # holds ACCESS SHARE until the transaction ends
            time.sleep(5)
            c.rollback()

    w, r = threading.Thread(target=writer), threading.Thread(target=reader)
    w.start()
    time.sleep(0.5)
    r.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    migrate()
    took = time.monotonic() - t0
    r.join()
    time.sleep(0.5)
    stop.set()
    w.join()
    slow = [x for x in waits if x > 0.1]
    return {
        "writer_max_wait_s": round(max(waits), 3),
        "writer_time_blocked_s": round(sum(slow), 3),
        "migration_s": round(took, 2),
    }


def bench_lock(folder: Path) -> dict:
    from turnout.database.apply import apply_migrations, downgrade_to

    project, cfg = _alembic_project(folder)

    def plain():
        with create_engine(URL, poolclass=NullPool).begin() as c:
            c.execute(text("ALTER TABLE events ADD COLUMN note_plain text"))

    without = _blocked(plain)
    result = {}

    def turnout_apply():
        result["r"] = apply_migrations(URL, project, cfg)

    with_timeouts = _blocked(turnout_apply)
    with_timeouts["attempts"] = len(result["r"].attempts)
    assert result["r"].ok, result["r"].error
    downgrade_to(URL, project, cfg, None)
    row = {"without_lock_timeout": without, "with_turnout_lock_timeout": with_timeouts}
    print(f"writer blocked during ADD COLUMN behind a 5 s reader: {row}", flush=True)
    return row


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="turnout-bench-db-"))
    try:
        size = build()
        backup = bench_backup(folder)
        lock = bench_lock(folder)
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        for suffix in ("_scratch", "_restore1", "_restore2"):
            admin_sql(f'DROP DATABASE IF EXISTS "{NAME}{suffix}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nbackup + proof {backup['turnout_backup_and_proof_s']} s vs plain pg_dump {backup['plain_pg_dump_s']} s "
        f"(ratio {backup['ratio']}) for {size / 1e6:.0f} MB; restore -j1 {backup['restore_j1_s']} s, "
        f"-j2 {backup['restore_j2_s']} s"
    )
    print(
        f"writer blocked: without lock_timeout {lock['without_lock_timeout']['writer_time_blocked_s']} s "
        f"(max wait {lock['without_lock_timeout']['writer_max_wait_s']} s); with turnout's 0.5 s lock_timeout "
        f"{lock['with_turnout_lock_timeout']['writer_time_blocked_s']} s "
        f"(max wait {lock['with_turnout_lock_timeout']['writer_max_wait_s']} s, "
        f"{lock['with_turnout_lock_timeout']['attempts']} attempts)"
    )
    print(json.dumps({"bench": "backup_restore", "database_mb": round(size / 1e6), "rows": ROWS, **backup, **lock}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
