"""A migration interrupted (SIGINT, SIGTERM) or whose PostgreSQL restarts under it ends in a safe, recorded
state: the database at a known revision with every row, the ledger true, the lock released."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from conftest import Project
from test_migrate import database, revision, seed, use_database  # noqa: F401  (the PostgreSQL fixture)

pytestmark = pytest.mark.usefixtures("prefect_server")


def start_migrate(p: Project) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "turnout.app.cli", "migrate", "-e", "staging", "--json"],
        cwd=p.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_sleep(url: str, timeout: float = 90) -> None:
    """Until the slow migration's statement runs on the server."""
    deadline = time.monotonic() + timeout
    eng = create_engine(url, poolclass=NullPool)
    while time.monotonic() < deadline:
        with eng.connect() as c:
            if c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")).scalar():
                return
        time.sleep(0.2)
    pytest.fail("the slow migration never started")


def rows(url: str) -> int:
    with create_engine(url, poolclass=NullPool).connect() as c:
        return c.execute(text("SELECT count(*) FROM items")).scalar()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_migration_ends_it_safely(project, database, sig):
    use_database(project, database, history="slow_expand")
    seed(project, database, 50)
    proc = start_migrate(project)
    wait_for_sleep(database)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)  # "within a few seconds": the statement alone sleeps 8 s
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["outcome"] == "aborted" and signal.Signals(sig).name in outcome["reason"], outcome
    assert "the database is at revision 0001" in outcome["reason"], outcome
    assert revision(database) == "0001" and rows(database) == 50
    rt = project.runtime()
    dep = rt.ledger.history("staging", 1)[0]
    assert dep["strategy"] == "migrate" and dep["status"] == "aborted", dep
    assert rt.ledger.lock_holder("staging") is None
    r = project.cli("migrate", "-e", "staging", "--json")  # and the next migration goes through
    assert r.returncode == 0, r.stderr[-2000:]
    assert revision(database) == "0002" and rows(database) == 50


class OwnPostgres:
    """A PostgreSQL cluster of this test's own (initdb, trust auth) on a free port, run as user postgres."""

    def __init__(self):
        import glob
        import os
        import shutil
        import tempfile

        from conftest import CI, free_port

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins or os.geteuid() != 0 or not shutil.which("runuser"):
            msg = "an own PostgreSQL cluster needs pg_ctl, root and runuser (to run it as postgres)"
            pytest.fail(msg) if CI else pytest.skip(msg)
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="turnout-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.data = self.dir / "data"
        self._as_pg([str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres"])
        self.start()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_pg(self, cmd: list[str]) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_pg(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                "start",
            ]
        )

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def restart_by_pid(self) -> None:
        """SIGINT to the postmaster (a fast shutdown: every session is cut), wait for it, start it again."""
        import os

        pid = self.pid()
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        self.start()

    def stop(self) -> None:
        import shutil

        try:
            self._as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    pg = OwnPostgres()
    yield pg
    pg.stop()


def test_postgresql_restarting_mid_migration_ends_at_a_known_revision_with_every_row(project, own_postgres):
    url = own_postgres.url
    use_database(project, url, history="slow_expand")
    seed(project, url, 50)
    proc = start_migrate(project)
    wait_for_sleep(url)
    own_postgres.restart_by_pid()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode in (1, 3) and out.strip(), (proc.returncode, out[-500:], err[-3000:])
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["outcome"] in ("aborted", "failed"), outcome
    assert revision(url) == "0001" and rows(url) == 50  # the cut transaction was rolled back by the restart
    rt = project.runtime()
    dep = rt.ledger.history("staging", 1)[0]
    assert dep["strategy"] == "migrate" and dep["status"] == outcome["outcome"], dep
    assert rt.ledger.lock_holder("staging") is None
    r = project.cli("migrate", "-e", "staging", "--json")  # the database is back: the next migration goes through
    assert r.returncode == 0, r.stderr[-2000:]
    assert revision(url) == "0002" and rows(url) == 50
