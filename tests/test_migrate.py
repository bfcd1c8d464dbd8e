"""turnout migrate against a real PostgreSQL (its own database per test), real pg_dump/pg_restore, real squawk."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from conftest import DEMO_APP, ROOT, Project, require

pytestmark = pytest.mark.usefixtures("prefect_server")

ADMIN = os.environ.get("TURNOUT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PASSWORD = "s3cr3t-Pw-n0t-f0r-logs"  # trust auth ignores it; it must appear nowhere turnout writes


def admin():
    return create_engine(ADMIN, poolclass=NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture
def database():
    """A fresh PostgreSQL database; its URL carries a password (which trust auth ignores)."""
    require("pg_dump")
    name = f"turnout_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin().connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL at {ADMIN} is needed: {e}")
        pytest.skip(f"PostgreSQL at {ADMIN} is not reachable: {e}")
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/{name}"
    yield url
    with admin().connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for (scratch,) in c.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'turnout_scratch_%'")):
            c.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))


def use_database(p: Project, url: str, history: str = "demo", extra: str = "") -> Project:
    """Give the project a [database] table: the URL in $APP_DATABASE_URL, an Alembic project."""
    os.environ["APP_DATABASE_URL"] = url
    where = (
        f'alembic_ini = "{DEMO_APP / "alembic.ini"}"'
        if history == "demo"
        else f'script_location = "{ROOT / "tests" / "migrations" / history}"'
    )
    p.extra += f'\n[database]\nurl_env = "APP_DATABASE_URL"\n{where}\nbackup_before = true\n{extra}\n'
    return p.write()


def migrate(p: Project, *args: str):
    r = p.cli("migrate", "-e", "staging", "--json", *args)
    out = (
        json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip().startswith("{") or "\n{" in r.stdout else None
    )
    return r, out


def revision(url: str) -> str | None:
    with create_engine(url, poolclass=NullPool).connect() as c:
        if not c.execute(text("SELECT to_regclass('alembic_version')")).scalar():
            return None
        return c.execute(text("SELECT version_num FROM alembic_version")).scalar()


def seed(p: Project, url: str, rows: int = 200) -> None:
    """Bring the database to 0001 through turnout's own apply, and fill `items`."""
    from turnout.config import load_environment
    from turnout.database.apply import apply_migrations
    from turnout.database.project import AlembicProject

    env = load_environment("staging", p.cdir)
    result = apply_migrations(url, AlembicProject(env, env.database), env.database, target="0001")
    assert result.ok, result.error
    with create_engine(url, poolclass=NullPool).begin() as c:
        c.execute(
            text("INSERT INTO items (name, legacy_code) SELECT 'item ' || g, 'L' || g FROM generate_series(1, :n) g"),
            {"n": rows},
        )


def everything_turnout_wrote(p: Project, *outputs: str) -> str:
    parts = list(outputs)
    for f in p.state_dir.rglob("*"):
        if f.is_file() and f.suffix in (".md", ".jsonl", ".json", ".log", ".txt"):
            parts.append(f.read_text(errors="replace"))
    for d in p.runtime().ledger.history("staging", 50):
        parts.append(json.dumps(p.runtime().ledger.deployment(d["id"]), default=str))
    return "\n".join(parts)


def test_migrate_lints_backs_up_proves_applies_and_verifies(project, database):
    use_database(project, database)
    r, out = migrate(project, "--verify")
    assert r.returncode == 0, r.stderr[-3000:]
    assert out["outcome"] == "migrated" and "None -> 0003" not in out["reason"] and "verified" in out["reason"], out
    assert revision(database) == "0003"
    dumps = list((project.state_dir / "backups").glob("*.dump"))
    assert len(dumps) == 1
    dep = project.runtime().ledger.history("staging", 1)[0]
    actions = {a["name"]: a for a in project.runtime().ledger.deployment(dep["id"])["actions"]}
    assert actions["backup-database"]["result"]["proved"] is True
    lints = {x["revision"]: x["kind"] for x in actions["lint-migrations"]["result"]["lints"]}
    assert lints == {"0001": "expand", "0002": "expand", "0003": "contract"}
    assert PASSWORD not in everything_turnout_wrote(project, r.stdout, r.stderr)


def test_dry_run_applies_to_a_scratch_copy_only(project, database):
    use_database(project, database)
    seed(project, database)
    r, out = migrate(project, "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    assert out["outcome"] == "dry-run" and "+ items.note" in out["reason"] and "- items.legacy_code" in out["reason"], (
        out
    )
    assert revision(database) == "0001", "the live database was not touched"
    with admin().connect() as c:
        assert not c.execute(text("SELECT count(*) FROM pg_database WHERE datname LIKE 'turnout_scratch_%'")).scalar()


def test_a_contract_migration_while_the_old_release_takes_traffic_is_refused(project, database):
    require("nginx")
    from turnout.models import Split

    assert project.deploy("demo:v1")["outcome"] == "promoted"
    assert project.deploy("demo:v2", keep_old=True)["outcome"] == "promoted"
    rt = project.runtime()
    rt.router.apply(Split.canary("green", 10), rt.backends())  # a canary: both releases take traffic
    use_database(project, database)
    seed(project, database)
    r, out = migrate(project)
    assert r.returncode == 1, r.stderr[-3000:]
    assert (
        "0003 is a contract migration" in out["reason"] and "ALTER TABLE items DROP COLUMN legacy_code" in out["reason"]
    )
    assert "canary is in progress" in out["reason"] and "Nothing applied" in out["reason"]
    assert revision(database) == "0001"


def test_a_failure_after_expand_migrations_is_downgraded_and_compared_equal(project, database):
    use_database(project, database, "fail_after_expand")
    seed(project, database)
    r, out = migrate(project)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "migration failed at revision 0002" in out["reason"] and "downgraded back to 0001" in out["reason"], out
    assert "compared equal" in out["reason"]
    assert revision(database) == "0001"


def test_a_failure_after_a_contract_migration_is_restored_from_the_backup(project, database):
    use_database(project, database, "fail_after_contract")
    seed(project, database, rows=500)
    r, out = migrate(project)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "restored from the proved backup, compared equal" in out["reason"], out
    assert revision(database) == "0001"
    with create_engine(database, poolclass=NullPool).connect() as c:
        assert c.execute(text("SELECT count(legacy_code) FROM items")).scalar() == 500, "the dropped data is back"
        assert not c.execute(text("SELECT to_regclass('audit')")).scalar()


def test_a_lock_held_longer_than_the_retries_gives_up_untouched(project, database):
    use_database(project, database, extra="lock_timeout = 0.3\nlock_retries = 2\nretry_backoff = 0.2")
    seed(project, database)
    holder = create_engine(database, poolclass=NullPool).connect()
    try:
        holder.execute(text("LOCK TABLE items IN ACCESS SHARE MODE"))  # a long reader: blocks ALTER TABLE
        r, out = migrate(project)
    finally:
        holder.rollback()
        holder.close()
    assert r.returncode == 1, r.stderr[-3000:]
    assert "a lock was still held after 3 attempt(s)" in out["reason"] and "untouched" in out["reason"], out
    assert revision(database) == "0001"


def test_a_backup_that_cannot_be_restored_stops_before_migrating(project, database):
    name = database.rsplit("/", 1)[1]
    role = f"nocreate_{uuid.uuid4().hex[:6]}"
    with admin().connect() as c:  # a role that owns its database but may not create the scratch one
        c.execute(text(f'CREATE ROLE "{role}" LOGIN NOCREATEDB'))
        c.execute(text(f'ALTER DATABASE "{name}" OWNER TO "{role}"'))
    try:
        with create_engine(
            ADMIN.rsplit("/", 1)[0] + f"/{name}", poolclass=NullPool, isolation_level="AUTOCOMMIT"
        ).connect() as c:
            c.execute(text(f'ALTER SCHEMA public OWNER TO "{role}"'))
        url = f"postgresql+psycopg://{role}:{PASSWORD}@127.0.0.1:5432/{name}"
        use_database(project, url)
        r, out = migrate(project)
        assert r.returncode == 1, r.stderr[-3000:]
        assert "the backup could not be proved, so nothing was migrated" in out["reason"], out
        assert revision(url) is None
        assert PASSWORD not in everything_turnout_wrote(project, r.stdout, r.stderr)
    finally:
        with admin().connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.mark.parametrize(
    "case, message",
    [
        ("bad-url", "cannot connect to the database postgresql+psycopg://postgres:***@127.0.0.1:1/"),
        ("no-alembic", "no Alembic project at"),
        ("no-database", "has no [database] table"),
        ("no-url", "$APP_DATABASE_URL is not set"),
    ],
)
def test_bad_database_settings_are_exit_2_with_nothing_done(project, tmp_path, case, message):
    if case == "bad-url":
        use_database(project, f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/nowhere")
    elif case == "no-alembic":
        use_database(project, "sqlite:///" + str(tmp_path / "x.db"), "no_such_history")
    elif case == "no-url":
        use_database(project, "")
        os.environ.pop("APP_DATABASE_URL", None)
    r, _out = migrate(project)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert PASSWORD not in r.stderr + r.stdout
    assert not project.state_dir.joinpath("ledger.sqlite").exists() or not project.runtime().ledger.history("staging")


def test_sqlite_is_backed_up_with_the_online_backup_api_and_proved(project, tmp_path):
    db = tmp_path / "app.db"
    os.environ.pop("APP_DATABASE_URL", None)
    project.extra += (
        f'\n[database]\ndefault_url = "sqlite:///{db}"\nalembic_ini = "{DEMO_APP / "alembic.ini"}"\n'
        "backup_before = true\n"
    )
    project.write()
    r, out = migrate(project)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out["outcome"] == "migrated" and "(proved)" in out["reason"], out
    assert list((project.state_dir / "backups").glob("*.sqlite"))
    r, out = migrate(project)
    assert r.returncode == 0 and out["outcome"] == "up-to-date"


def test_a_password_in_default_url_is_refused(project):
    project.extra += '\n[database]\ndefault_url = "postgresql://u:pw@127.0.0.1/db"\nalembic_ini = "x"\n'
    project.write()
    r = project.cli("validate", "-e", "staging")
    assert r.returncode == 2 and "must not carry credentials" in r.stderr and "pw@" not in r.stderr


@pytest.fixture(autouse=True)
def _no_leftover_env():
    yield
    os.environ.pop("APP_DATABASE_URL", None)


@pytest.fixture
def deployed(project, database):
    """demo:v1 live with the database at 0001 and 200 items."""
    require("nginx")
    assert project.deploy("demo:v1")["outcome"] == "promoted"  # before the service had a database
    use_database(project, database)
    seed(project, database)
    return project, database


def test_a_deployment_runs_expand_before_the_start_and_contract_after_retiring_the_old_slot(deployed):
    p, db = deployed
    out = p.deploy("demo:v2")
    assert out["outcome"] == "promoted", out
    assert "database after the watch: migrated 0002 -> 0003" in out["reason"], out["reason"]
    assert revision(db) == "0003"
    migrations = [d for d in p.runtime().ledger.history("staging", 10) if d["strategy"] == "migrate"]
    assert [(d["from_release"], d["release"]) for d in migrations] == [("db@0002", "db@0003"), ("db@0001", "db@0002")]


def test_with_the_old_slot_kept_the_contract_migration_waits(deployed):
    p, db = deployed
    out = p.deploy("demo:v2", keep_old=True)
    assert out["outcome"] == "promoted" and "contract migrations (if any) wait" in out["reason"], out
    assert revision(db) == "0002"


def test_a_rollback_across_a_contract_migration_restores_its_backup(deployed):
    p, db = deployed
    assert p.deploy("demo:v2")["outcome"] == "promoted"
    assert revision(db) == "0003"
    r = p.cli("rollback", "-e", "staging", "--dry-run")
    assert "contract migration 0003 ran after demo:v1 was live" in r.stdout, r.stdout
    r = p.cli("rollback", "-e", "staging", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert revision(db) == "0002", "back to the schema demo:v1 ran with"
    with create_engine(db, poolclass=NullPool).connect() as c:
        assert c.execute(text("SELECT count(legacy_code) FROM items")).scalar() == 200
    assert p.get("/").headers["x-release"] == "demo:v1"
    assert PASSWORD not in everything_turnout_wrote(p, r.stdout, r.stderr)


def test_preserve_data_rolls_back_without_touching_the_database(deployed):
    p, db = deployed
    assert p.deploy("demo:v2")["outcome"] == "promoted"
    r = p.cli("rollback", "-e", "staging", "--preserve-data")
    assert r.returncode == 0, r.stderr[-3000:]
    assert revision(db) == "0003" and p.get("/").headers["x-release"] == "demo:v1"


def test_the_url_can_come_from_a_prefect_secret_block(project, database):
    from prefect.blocks.system import Secret

    name = f"turnout-test-db-{uuid.uuid4().hex[:6]}"
    Secret(value=database).save(name, overwrite=True)
    project.extra += (
        f'\n[database]\nsecret_block = "{name}"\nalembic_ini = "{DEMO_APP / "alembic.ini"}"\nbackup_before = false\n'
    )
    project.write()
    r, out = migrate(project)
    assert r.returncode == 0 and out["outcome"] == "migrated", r.stderr[-3000:]
    assert revision(database) == "0003"
    assert PASSWORD not in everything_turnout_wrote(project, r.stdout, r.stderr)
