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
    code = ("from turnout.ledger import Ledger; import sys\n"
            f"try: Ledger('sqlite:///{tmp_path / 'ledger.sqlite'}').acquire_lock('staging')\n"
            "except Exception as e: print(type(e).__name__, e); sys.exit(2)")
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
    ledger.record_verdict(dep, Verdict(gate="health", phase=Phase.PRE_TRAFFIC, outcome=Outcome.PASS,
                                       evidence={"checks": [{"url": "u", "status": 200}]}))
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
