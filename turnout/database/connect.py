"""Opening an environment's application database: its URL (checked: it connects) and its Alembic project."""

from __future__ import annotations

from turnout.config import Environment
from turnout.database.project import AlembicProject
from turnout.database.snapshot import engine_for
from turnout.database.url import redact, resolve_url, scrub
from turnout.errors import ConfigError

__all__ = ["open_database"]


def open_database(environment: Environment) -> tuple[str, AlembicProject]:
    """The URL (checked: it connects) and the Alembic project, or ConfigError saying what is wrong.

    The deployment flows call it before anything moves, so a database that does not answer is exit 2
    with nothing touched.
    """
    cfg = environment.database
    if cfg is None:
        raise ConfigError(f"deployments/{environment.name}.toml has no [database] table: nothing to migrate")
    url = resolve_url(cfg, environment.name)
    project = AlembicProject(environment, cfg)
    try:
        with engine_for(url).connect():
            pass
    except Exception as e:
        reason = scrub(str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__, url)
        raise ConfigError(f"cannot connect to the database {redact(url)}: {reason}") from None
    return url, project
