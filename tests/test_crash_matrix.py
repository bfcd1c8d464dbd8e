"""The crash matrix: SIGKILL blue-green, canary, rollback and migrate at every crash point, under load.

Each case runs the command as a subprocess with `TURNOUT_CRASH_AT=<point>` (turnout.faults), so it
kills itself exactly there, then brings the environment back with `turnout recover` (or, for the
`next-deploy` cases, with the next deployment, which recovers first). After every case:

* traffic is on one healthy slot *as the router serves it* (`observe()` and requests through NGINX),
* the ledger agrees: no `running` row, the killed run has an outcome, the lock is free,
* nothing is orphaned: a slot that takes no traffic runs only when the ledger keeps it warm, and no
  Prefect server was started (or left) by the killed command,
* for migrate: the database is at a revision of the history and no row was lost.

The client-side errors seen by a small steady load and the time from the kill to the safe state go
into a report (`$CRASH_MATRIX_REPORT`, else `crash-matrix-report.md` in the session's tmp dir);
`make crash-matrix` writes the full one to docs/crash-matrix.md.

CI runs every point of blue-green and rollback and a representative subset of canary and migrate;
the rest is marked `crash_full` (deselected by default; `-m crash_full` or `make crash-matrix`).
Each flow's point list is checked against a traced run (`TURNOUT_CRASH_TRACE`): a new crash point a
flow passes fails the test until the matrix covers it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Project, require
from turnout.faults import POINTS
from turnout.loadgen import Load

pytestmark = [pytest.mark.usefixtures("prefect_server", "nginx"), pytest.mark.timeout(900)]

CANARY = "\n[canary]\nstages = [50, 100]\nduration = 2\ninterval = 1\nmin_requests = 3\n"


# Every point each flow passes, in order (first time reached; `#N` picks a later one). The test
# `test_every_point_a_flow_passes_is_in_the_matrix` keeps these lists true.
def _points(*names: str) -> list[str]:
    return list(names)


BLUE_GREEN = _points(
    "ledger.start_deployment:before",
    "ledger.start_deployment:after",
    "gate:before@pre-deploy",
    "gate:after@pre-deploy",
    "ledger.set_slot:before",
    "ledger.set_slot:after",
    "start:before",
    "start:after",
    "gate:before@pre-traffic",
    "gate:after@pre-traffic",
    "shift:before@switch",
    "router-write:before",
    "router-write:after",
    "router-reload:before",
    "router-reload:after",
    "shift:applied@switch",
    "shift:verified@switch",
    "ledger.set_split:before",
    "ledger.set_split:after",
    "shift:after@switch",
    "post-switch",
    "gate:before@post-switch",
    "gate:after@post-switch",
    "ledger.set_last_known_good:before",
    "ledger.mark_release:before",
    "ledger.mark_release:after",
    "ledger.set_last_known_good:after",
    "stop:before",
    "stop:after",
    "ledger.finish_deployment:before",
    "ledger.finish_deployment:after",
    "ledger.release_lock:before",
    "ledger.release_lock:after",
)
ROLLBACK = _points(
    "ledger.start_deployment:before",
    "ledger.start_deployment:after",
    "shift:before@rollback",
    "router-write:before",
    "router-write:after",
    "router-reload:before",
    "router-reload:after",
    "shift:applied@rollback",
    "shift:verified@rollback",
    "ledger.set_split:before",
    "ledger.set_split:after",
    "shift:after@rollback",
    "gate:before@post-rollback",
    "gate:after@post-rollback",
    "ledger.mark_release:before",
    "ledger.mark_release:after",
    "ledger.set_slot:before",
    "ledger.set_slot:after",
    "ledger.set_last_known_good:before",
    "ledger.set_last_known_good:after",
    "stop:before",
    "stop:after",
    "ledger.finish_deployment:before",
    "ledger.finish_deployment:after",
    "ledger.release_lock:before",
    "ledger.release_lock:after",
)
# CI: every action point (start, gates, each step of a shift, router write and reload, stop) and the
# ledger writes that leave a state no neighbouring action point leaves; `crash_full` adds the rest.
BLUE_GREEN_CI = {
    "ledger.start_deployment:after",
    "start:before",
    "start:after",
    "gate:after@pre-traffic",
    "shift:before@switch",
    "router-write:after",
    "router-reload:after",
    "shift:applied@switch",
    "shift:verified@switch",
    "shift:after@switch",
    "gate:after@post-switch",
    "ledger.set_last_known_good:after",
    "stop:before",
    "stop:after",
    "ledger.finish_deployment:before",
    "ledger.release_lock:before",
}
ROLLBACK_CI = {
    "ledger.start_deployment:after",
    "shift:before@rollback",
    "router-write:after",
    "router-reload:after",
    "shift:applied@rollback",
    "shift:verified@rollback",
    "shift:after@rollback",
    "gate:after@post-rollback",
    "ledger.mark_release:after",
    "stop:before",
    "stop:after",
    "ledger.finish_deployment:before",
    "ledger.release_lock:before",
}
CANARY_POINTS = _points(
    "ledger.start_deployment:after",
    "start:before",
    "start:after",
    "gate:after@pre-traffic",
    "shift:before@stage",
    "router-write:after",
    "router-reload:after",
    "shift:applied@stage",
    "shift:verified@stage",
    "shift:after@stage",
    "analysis",
    "shift:before@switch",
    "shift:applied@switch",
    "shift:after@switch",
    "post-switch",
    "gate:after@post-switch",
    "stop:before",
    "stop:after",
    "ledger.finish_deployment:after",
    "ledger.release_lock:before",
)
CANARY_CI = {"start:after", "shift:applied@stage", "analysis", "shift:applied@switch", "stop:before"}
MIGRATE = _points(
    "ledger.start_deployment:before",
    "ledger.start_deployment:after",
    "backup:before",
    "backup:after",
    "migration:before@0002",
    "migration:after@0002",
    "migration:before@0003",
    "migration:after@0003",
    "ledger.finish_deployment:before",
    "ledger.finish_deployment:after",
    "ledger.release_lock:before",
    "ledger.release_lock:after",
)
MIGRATE_CI = {"backup:after", "migration:after@0002", "migration:before@0003", "ledger.finish_deployment:before"}


# --- the report -----------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="session", autouse=True)
def _report(tmp_path_factory):
    yield
    if not ROWS:
        return
    path = Path(os.environ.get("CRASH_MATRIX_REPORT") or tmp_path_factory.getbasetemp() / "crash-matrix-report.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Crash matrix",
        "",
        "Each row: the command was SIGKILLed at the crash point (turnout/faults.py) under a steady load of "
        "2 connections through NGINX, then `turnout recover` (or the next deployment) brought the environment "
        "to a safe state. *client errors* counts the load's non-2xx answers and refused connections over the "
        "whole case; *to safe* is the time from the kill to the safe state verified.",
        "",
        "| flow | crash point | recovered by | outcome recorded | client errors | to safe (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        lines.append(
            f"| {r['flow']} | `{r['point']}` | {r['via']} | {r['outcome']} | {r['errors']} | {r['seconds']:.1f} |"
        )
    path.write_text("\n".join(lines) + "\n")


# --- helpers --------------------------------------------------------------------------------------


class Case:
    """One environment reused by the cases of one flow (setting one up costs more than a case)."""

    def __init__(self, project: Project):
        self.p = project
        self.n = 1

    def next_image(self) -> str:
        self.n += 1
        return f"demo:m{self.n}"  # not in releases.toml: a healthy release


def prefect_servers() -> set[int]:
    """PIDs of Prefect servers this test session's commands could have started (our PREFECT_HOME)."""
    home = f"PREFECT_HOME={os.environ['PREFECT_HOME']}".encode()
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
                if not (b"prefect" in b" ".join(cmd) and b"server" in cmd and b"start" in cmd):
                    continue
                if home in (d / "environ").read_bytes().split(b"\0"):
                    out.add(int(d.name))
            except OSError:
                continue
    return out


FORKER: list = []


def cli(p: Project, *args: str, env: dict[str, str] | None = None):
    """`turnout ARGS` in a fresh process (forked from one that has the imports done: tests/forker.py)."""
    return FORKER[0].run(list(args), p.root, env)


def crash(p: Project, point: str, *args: str) -> None:
    """Run a command that SIGKILLs itself at `point`; it must really die there."""
    r = cli(p, *args, "-e", p.name, env={"TURNOUT_CRASH_AT": point})
    assert r.returncode == -signal.SIGKILL, f"did not crash at {point}: rc={r.returncode}\n{r.stderr[-2000:]}"


def recover(p: Project) -> dict[str, Any]:
    r = cli(p, "recover", "-e", p.name, "--json")
    assert r.returncode == 0, f"recover exit {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_safe(p: Project) -> str:
    """Traffic on one healthy slot through the router; the ledger true; nothing orphaned. The live release."""
    rt = p.runtime()
    try:
        state = rt.router_state()
        assert state.serving and state.known and state.split is not None, state.describe()
        live = state.split.live_slots()
        assert len(live) == 1, f"traffic is split: {state.describe()}"
        slot = live[0]
        assert rt.target.status(slot).running
        ledger = rt.ledger.environment_state(p.name)
        release = ledger["slots"][slot]["release"]
        for _ in range(5):  # through the data path: the live slot answers, with the ledger's release
            r = httpx.get(p.url + "api/items", headers={"Connection": "close"}, timeout=5)
            assert r.status_code == 200 and r.headers["x-turnout-slot"] == slot, (r.status_code, r.headers)
            assert r.headers["x-release"] == release, (r.headers["x-release"], ledger["slots"])
        assert ledger["split"] == state.split, (ledger["split"], state.describe())
        assert ledger["lock"] is None, ledger["lock"]
        running = [d for d in rt.ledger.history(p.name, 200) if d["status"] in ("running", "crashed")]
        assert not running, running
        other = "green" if slot == "blue" else "blue"
        if rt.target.status(other).running:
            assert ledger["slots"][other]["state"] == "warm", (
                f"slot {other} runs but takes no traffic and is not kept warm: {ledger['slots'][other]}"
            )
        return release
    finally:
        rt.close()


def last(p: Project) -> dict[str, Any]:
    rt = p.runtime()
    try:
        return rt.ledger.history(p.name, 1)[0]
    finally:
        rt.close()


def run_case(
    p: Project, flow: str, point: str, via: str, args: list[str], next_args: list[str], expect_outcome: tuple[str, ...]
) -> dict[str, Any]:
    """Crash `args` at `point` under load, recover `via` recover/next-deploy, check, record a report row."""
    servers = prefect_servers()
    before = last(p)["id"] if p.runtime().ledger.history(p.name, 1) else 0
    load = Load(p.url + "api/items", connections=2, max_requests=200000, max_seconds=300).start()
    try:
        crash(p, point, *args)
        killed = time.monotonic()
        if via == "recover":
            out = recover(p)
            assert out["outcome"] in ("recovered", "consistent"), out
        else:
            r = cli(p, *next_args, "-e", p.name, "--json")
            assert r.returncode == 0, f"the next run: exit {r.returncode}\n{r.stderr[-2000:]}"
        assert_safe(p)
        seconds = time.monotonic() - killed
    finally:
        res = load.stop()
    rt = p.runtime()
    try:
        killed_run = [d for d in rt.ledger.history(p.name, 20) if d["id"] > before]
    finally:
        rt.close()
    crashed = [d for d in killed_run if d["strategy"] == flow]
    outcome = crashed[-1]["status"] if crashed else "not recorded (killed before its row)"
    if crashed:
        assert crashed[-1]["status"] in expect_outcome, crashed[-1]
    assert prefect_servers() <= servers, "the killed command left a Prefect server running"
    row = {
        "flow": flow,
        "point": point,
        "via": via,
        "outcome": outcome,
        "errors": res.non_2xx + res.connection_errors,
        "seconds": seconds,
    }
    ROWS.append(row)
    return row


def _params(points: list[str], ci: set[str] | None, vias=("recover",)) -> list:
    out = []
    for point in points:
        for via in vias:
            marks = [] if ci is None or point in ci else [pytest.mark.crash_full]
            out.append(pytest.param(point, via, marks=marks, id=f"{point}-{via}"))
    return out


@pytest.fixture(scope="module")
def forker(tmp_path_factory, prefect_server):
    from forker import Forker

    f = Forker(tmp_path_factory.mktemp("forker"))
    FORKER[:] = [f]
    yield f
    f.close()


@pytest.fixture(scope="module")
def bg(tmp_path_factory, forker):
    require("nginx")
    from turnout.registry import reset_registry

    p = Project(tmp_path_factory.mktemp("bg"))
    p.health_timeout = 10
    p.extra += CANARY
    p.write()
    reset_registry()
    assert p.deploy("demo:v1")["outcome"] == "promoted"
    yield Case(p)
    p.cleanup()


DEPLOYED = ("aborted", "promoted", "rolled-back")


# --- blue-green -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point, via",
    _params(BLUE_GREEN, BLUE_GREEN_CI)
    + _params(
        ["start:after", "router-write:after", "shift:applied@switch", "stop:before"],
        {"start:after", "router-write:after", "shift:applied@switch"},
        ("next-deploy",),
    ),
)
def test_blue_green(bg, point, via):
    image, after = bg.next_image(), bg.next_image()
    run_case(
        bg.p, "blue-green", point, via, ["blue-green", "--image", image], ["blue-green", "--image", after], DEPLOYED
    )


# --- rollback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point, via",
    _params(ROLLBACK, ROLLBACK_CI)
    + _params(["router-write:after", "stop:before"], {"router-write:after"}, ("next-deploy",)),
)
def test_rollback(bg, point, via):
    image, after = bg.next_image(), bg.next_image()
    # a release live with the previous one warm: what a rollback goes back to
    out = bg.p.deploy(image, keep_old=True)
    assert out["outcome"] == "promoted", out
    run_case(
        bg.p,
        "rollback",
        point,
        via,
        ["rollback", "--reason", "crash matrix"],
        ["blue-green", "--image", after],
        ("rolled-back", "aborted", "failed"),
    )


# --- canary ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("point, via", _params(CANARY_POINTS, CANARY_CI))
def test_canary(bg, point, via):
    image, after = bg.next_image(), bg.next_image()
    run_case(
        bg.p,
        "canary",
        point,
        via,
        ["canary", "--image", image, "--auto-promote"],
        ["blue-green", "--image", after],
        DEPLOYED,
    )


# --- the lists are complete -----------------------------------------------------------------------


def _trace(p: Project, tmp: Path, *args: str) -> list[str]:
    trace = tmp / f"trace-{uuid.uuid4().hex[:6]}"
    r = cli(p, *args, "-e", p.name, "--json", env={"TURNOUT_CRASH_TRACE": str(trace)})
    assert r.returncode == 0, r.stderr[-2000:]
    return list(dict.fromkeys(trace.read_text().split()))


def test_every_point_a_flow_passes_is_in_the_matrix(bg, tmp_path):
    seen = _trace(bg.p, tmp_path, "blue-green", "--image", bg.next_image())
    assert {n.partition("@")[0] for n in seen} <= set(POINTS), "a crash point missing from turnout.faults.POINTS"
    assert seen == BLUE_GREEN, seen
    assert bg.p.deploy(bg.next_image(), keep_old=True)["outcome"] == "promoted"
    seen = _trace(bg.p, tmp_path, "rollback")
    assert seen == ROLLBACK, seen
    load = Load(bg.p.url + "api/items", connections=2, max_requests=200000, max_seconds=300).start()
    try:
        seen = _trace(bg.p, tmp_path, "canary", "--image", bg.next_image(), "--auto-promote")
    finally:
        load.stop()
    assert set(CANARY_POINTS) <= set(seen), set(CANARY_POINTS) - set(seen)


# --- migrate --------------------------------------------------------------------------------------

from test_migrate import database, revision, use_database  # noqa: E402,F401  (the PostgreSQL fixture)


def seed(p: Project, url: str, rows: int) -> None:
    """The database at 0001 (turnout's own apply) with `rows` items."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from turnout.config import load_environment
    from turnout.database.apply import apply_migrations
    from turnout.database.project import AlembicProject

    env = load_environment(p.name, p.cdir)
    assert apply_migrations(url, AlembicProject(env, env.database), env.database, target="0001").ok
    with create_engine(url, poolclass=NullPool).begin() as c:
        c.execute(
            text("INSERT INTO items (name, legacy_code) SELECT 'item ' || g, 'L' || g FROM generate_series(1, :n) g"),
            {"n": rows},
        )


ROWS_SEEDED = 200


@pytest.mark.parametrize(
    "point, via",
    [
        *_params(MIGRATE, MIGRATE_CI),
        pytest.param("migration:after@0002", "next-migrate", id="migration:after@0002-next-migrate"),
    ],
)
def test_migrate(forker, tmp_path, database, point, via):
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    name = f"crash{uuid.uuid4().hex[:8]}"  # the scratch database's name carries it: no other test's
    p = use_database(Project(tmp_path, name), database)
    seed(p, database, ROWS_SEEDED)
    crash(p, point, "migrate")
    killed = time.monotonic()
    if via == "recover":
        out = recover(p)  # consistent when killed before its row or after its outcome (the stale lock is taken over)
        assert out["outcome"] in ("recovered", "consistent"), out
        if out["outcome"] == "recovered":
            assert "the database is at revision" in out["reason"], out
    else:
        r = cli(p, "migrate", "-e", p.name, "--json")
        assert r.returncode == 0, r.stderr[-2000:]
    seconds = time.monotonic() - killed
    rev = revision(database)
    assert rev in ("0001", "0002", "0003"), rev  # a revision of the history, never half-way through one
    if via != "recover":
        assert rev == "0003"
    with create_engine(database, poolclass=NullPool).connect() as c:
        assert c.execute(text("SELECT count(*) FROM items")).scalar() == ROWS_SEEDED
        scratch = c.execute(text(f"SELECT datname FROM pg_database WHERE datname LIKE 'turnout_scratch_{name}_%'"))
        assert not scratch.fetchall(), "the killed migration's scratch database was left behind"
    rt = p.runtime()
    try:
        runs = rt.ledger.history(p.name, 10)
        assert not [d for d in runs if d["status"] in ("running", "crashed")], runs
        assert rt.ledger.lock_holder(p.name) is None
    finally:
        rt.close()
    killed_run = [d for d in runs if d["strategy"] == "migrate"]
    outcome = killed_run[-1]["status"] if killed_run else "not recorded (killed before its row)"
    ROWS.append(
        {
            "flow": "migrate",
            "point": point,
            "via": via,
            "outcome": f"{outcome}, database at {rev}",
            "errors": "-",
            "seconds": seconds,
        }
    )
