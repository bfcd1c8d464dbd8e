"""The ledger: one deployment per environment, stale locks, intent before result."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from turnout.errors import LockHeld
from turnout.ledger import Ledger, LockRow
from turnout.models import Outcome, Phase, Split, Verdict


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    yield led
    led.close()


def test_a_second_lock_is_refused_with_the_holder_named(ledger, tmp_path):
    ledger.acquire_lock("staging")
    dep = ledger.start_deployment("staging", "blue-green", "demo:v2")
    ledger.attach_lock("staging", dep)
    # another process, same ledger file
    code = (
        "from turnout.ledger import Ledger; import sys\n"
        f"try: Ledger('sqlite:///{tmp_path / 'ledger.sqlite'}').acquire_lock('staging')\n"
        "except Exception as e: print(type(e).__name__, e); sys.exit(2)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "LockHeld" in r.stdout and f"deployment #{dep} holds it" in r.stdout and "not queued" in r.stdout
    ledger.release_lock("staging")
    ledger.acquire_lock("staging")  # free again


def test_a_lock_of_a_dead_process_is_taken_over_and_the_run_marked_failed(ledger):
    dep = ledger.start_deployment("staging", "blue-green", "demo:v2")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with ledger.session() as s:
        s.add(LockRow(environment="staging", deployment_id=dep, pid=dead.pid, host=socket.gethostname()))
    info = ledger.acquire_lock("staging")
    assert info["taken_over"]["pid"] == dead.pid
    d = ledger.deployment(dep)
    assert d["status"] == "crashed" and "crashed" in d["reason"]


def test_a_lock_held_on_another_host_is_never_taken_over(ledger):
    with ledger.session() as s:
        s.add(LockRow(environment="staging", pid=1, host="some-other-host"))
    with pytest.raises(LockHeld, match="some-other-host"):
        ledger.acquire_lock("staging")


def test_intent_result_and_verdicts_are_kept_in_order(ledger):
    dep = ledger.start_deployment("staging", "blue-green", "demo:v2", from_slot="blue", to_slot="green")
    a = ledger.intent(dep, "switch", "shift-traffic", after=Split.all_to("green"))
    ledger.record_verdict(
        dep,
        Verdict(
            gate="health",
            phase=Phase.PRE_TRAFFIC,
            outcome=Outcome.PASS,
            evidence={"checks": [{"url": "u", "status": 200}]},
        ),
    )
    d = ledger.deployment(dep)
    assert d["actions"][0]["state"] == "intent" and d["actions"][0]["intent"]["after"] == {"blue": 0, "green": 100}
    ledger.result(a, True, seconds=0.1)
    ledger.set_split("staging", Split.all_to("green"))
    ledger.finish_deployment(dep, "promoted")
    d = ledger.deployment(dep)
    assert d["actions"][0]["state"] == "done" and d["verdicts"][0]["evidence"]["checks"][0]["status"] == 200
    assert ledger.environment_state("staging")["split"] == Split.all_to("green")
    assert ledger.history("staging")[0]["status"] == "promoted"


def test_postgresql_ledger_url(tmp_path):
    """Any SQLAlchemy URL works; PostgreSQL runs on the project's machines at 127.0.0.1:5432."""
    import os

    import sqlalchemy

    url = os.environ.get("TURNOUT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    try:
        eng = sqlalchemy.create_engine(url)
        with eng.connect() as c:
            c.execute(sqlalchemy.text("select 1"))
    except Exception as e:
        from conftest import CI

        if CI:
            pytest.fail(f"PostgreSQL not reachable at {url}: {e}")
        pytest.skip(f"PostgreSQL not reachable: {e}")
    name = f"turnout_test_{os.getpid()}"
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sqlalchemy.text(f"drop database if exists {name}"))
        c.execute(sqlalchemy.text(f"create database {name}"))
    try:
        led = Ledger(url.rsplit("/", 1)[0] + f"/{name}")
        led.acquire_lock("staging")
        with pytest.raises(LockHeld):
            led.acquire_lock("staging")
        dep = led.start_deployment("staging", "blue-green", "demo:v2")
        led.finish_deployment(dep, "promoted")
        assert led.history("staging")[0]["status"] == "promoted"
        led.close()
    finally:
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sqlalchemy.text(f"drop database if exists {name} with (force)"))


@pytest.mark.usefixtures("prefect_server", "nginx")
def test_a_truncated_ledger_is_refused_and_no_report_is_overwritten(project):
    from conftest import snapshot

    assert project.deploy("demo:v1")["outcome"] == "promoted"
    ledger = project.state_dir / "ledger.sqlite"
    report = project.state_dir / "reports" / "deployment-1.md"
    old_report = report.read_text()
    ledger.write_bytes(b"")  # truncated to 0 bytes (a full disk, a bad restore, a stray `> ledger.sqlite`)
    before = snapshot(project)
    for args in (("blue-green", "--image", "demo:v2"), ("status",), ("history",), ("rollback",)):
        r = project.cli(*args, "-e", "staging")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and str(ledger) in err and "empty" in err, err
        assert "restore it from a backup" in err and "deployment-1.md" in err, err
        assert snapshot(project) == before, args
    assert ledger.stat().st_size == 0
    # Doing what the message says to start a new ledger on purpose: the old report is kept, never overwritten.
    ledger.rename(ledger.with_name("ledger.sqlite.broken"))
    out = project.deploy("demo:v2")
    assert out["outcome"] == "promoted" and out["deployment_id"] == 1
    assert report.read_text() == old_report
    assert out["report"] != str(report) and "demo:v2" in open(out["report"]).read()


def test_a_corrupt_ledger_is_refused_naming_the_file(tmp_path):
    from turnout.errors import ConfigError

    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not a database\n" * 100)
    with pytest.raises(ConfigError, match="is not a SQLite database") as e:
        Ledger(f"sqlite:///{path}", state_dir=tmp_path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == b"this is not a database\n" * 100


def test_an_empty_ledger_file_without_history_is_a_fresh_start(tmp_path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"")  # e.g. a run killed between creating the file and its first write
    led = Ledger(f"sqlite:///{path}", state_dir=tmp_path)
    assert led.history("staging") == []
    led.close()


def test_an_unreachable_ledger_url_is_one_line_and_exit_2(project):
    from conftest import free_port, snapshot

    port = free_port()  # nothing listens there
    project.write(
        project.toml().replace(
            "state_dir = ", f'ledger_url = "postgresql+psycopg://postgres@127.0.0.1:{port}/turnout"\nstate_dir = ', 1
        )
    )
    for args in (("blue-green", "--image", "demo:v2"), ("status",), ("history",)):
        r = project.cli(*args, "-e", "staging")
        assert r.returncode == 2, (args, r.stderr)
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert f"127.0.0.1:{port}" in err and "cannot connect" in err and "refused" in err, err
    assert snapshot(project) == {"router_config": None, "ledger": None, "processes": [], "listening": []}


def test_migration_facts_are_typed_queries(ledger):
    """What a rollback needs to know about migrations (which were contract, which backup precedes them)."""
    from datetime import timedelta

    from turnout.ledger import DATABASE_BACKUP, MIGRATION_LINT
    from turnout.models import utcnow

    since = utcnow() - timedelta(seconds=1)

    def migrate(kinds: dict[str, str], backup: str | None, backup_ok: bool = True) -> int:
        dep = ledger.start_deployment("staging", "migrate", "db@head")
        lint = ledger.intent(dep, "lint", MIGRATION_LINT)
        ledger.result(lint, True, lints=[{"revision": r, "kind": k, "message": ""} for r, k in kinds.items()])
        if backup:
            ledger.result(ledger.intent(dep, "backup", DATABASE_BACKUP), backup_ok, path=backup)
        ledger.finish_deployment(dep, "migrated", "")
        return dep

    expand = migrate({"0002": "expand"}, "/b/expand.dump")
    contract = migrate({"0003": "expand", "0004": "contract", "0005": "contract"}, "/b/before-0004.dump")
    unproved = migrate({"0006": "contract"}, "/b/broken.dump", backup_ok=False)
    assert [x["revision"] for x in ledger.migration_lints(contract)] == ["0003", "0004", "0005"]
    assert ledger.backup_before(expand)["path"] == "/b/expand.dump"
    assert ledger.backup_before(unproved) is None  # a backup that did not prove is no backup
    found = ledger.contract_migrations_since("staging", since)
    assert [(c.migration_id, c.revision, c.backup and c.backup["path"]) for c in found] == [
        (contract, "0004", "/b/before-0004.dump"),
        (unproved, "0006", None),
    ]
    assert ledger.contract_migrations_since("staging", utcnow()) == []


def test_opening_the_ledger_again_keeps_this_process_sqlite_locks(tmp_path):
    """A second Ledger in a process must not drop the first one's SQLite locks.

    Closing any file descriptor of the database file releases every POSIX lock the process holds on
    it (SQLite's "how to corrupt" guide, 2.2): a ledger check that opened the file to read its header
    let another process take the database for the last connection, checkpoint and remove the WAL under
    this one's feet, and this one then read "database disk image is malformed" (seen after a killed run
    and `turnout recover`, in the crash matrix).
    """
    url = f"sqlite:///{tmp_path}/ledger.db"
    first = Ledger(url)
    assert first.history("e", 10) == []
    writer = (
        "import sys\nfrom turnout.ledger import Ledger\nl = Ledger(sys.argv[1])\n"
        "for j in range(30):\n    l.start_deployment('e', 'blue-green', f'demo:v{j}')\nl.close()\n"
    )
    for i in range(5):
        Ledger(url).close()  # e.g. `turnout status` or a runtime opened again inside a command
        subprocess.run([sys.executable, "-c", writer, url], check=True, timeout=60)
        assert len(first.history("e", 1000)) == 30 * (i + 1)
    first.close()
