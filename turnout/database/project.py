"""The application's Alembic project: revisions, what is pending, and the SQL of each pending migration."""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from turnout.config import DatabaseConfig, Environment
from turnout.errors import ConfigError

__all__ = ["AlembicProject", "Revision"]


def _has_real_downgrade(fn) -> bool:
    """A downgrade that does something: not missing, not only `pass`, a docstring or a `raise`."""
    if fn is None:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return True  # cannot tell: assume it is real, the failure path still proves the result
    node = tree.body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True  # not a def (e.g. a name bound to something else): cannot tell, as above
    body = [
        n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(getattr(n, "value", None), ast.Constant))
    ]
    return bool(body) and not all(isinstance(n, (ast.Pass, ast.Raise)) for n in body)


@dataclass(frozen=True)
class Revision:
    """One migration: its id, the one before it, its message, and whether it can be downgraded."""

    id: str
    down: str | None
    message: str
    reversible: bool


class AlembicProject:
    """The project named by `[database] alembic_ini` or `script_location`, resolved against the project root."""

    def __init__(self, env: Environment, cfg: DatabaseConfig):
        src = f"deployments/{env.name}.toml: database"
        if cfg.alembic_ini:
            ini = env.resolve(cfg.alembic_ini)
            if not ini.is_file():
                raise ConfigError(f"{src}: alembic_ini {ini} does not exist")
            self.config = Config(str(ini))
            location = self.config.get_main_option("script_location")
            if not location:
                raise ConfigError(f"{src}: {ini} has no script_location")
        else:
            assert cfg.script_location is not None  # DatabaseConfig requires alembic_ini or script_location
            location = str(env.resolve(cfg.script_location))
            self.config = Config()
            self.config.set_main_option("script_location", location)
        try:
            self.script = ScriptDirectory.from_config(self.config)
        except Exception as e:
            raise ConfigError(f"{src}: no Alembic project at {location}: {e}") from None
        if not Path(self.script.dir).is_dir() or not (Path(self.script.dir) / "env.py").is_file():
            raise ConfigError(f"{src}: no Alembic project at {self.script.dir} (env.py is missing)")
        heads = self.script.get_heads()
        if len(heads) != 1:
            raise ConfigError(
                f"{src}: the Alembic history has {len(heads)} heads ({', '.join(heads) or 'none'}); "
                "turnout migrates a linear history: merge the heads first"
            )
        self.head = heads[0]

    def current(self, connection) -> str | None:
        """The revision the database is at (None: no Alembic version table yet)."""
        heads = MigrationContext.configure(connection).get_current_heads()
        return heads[0] if heads else None

    def pending(self, current: str | None) -> list[Revision]:
        """The revisions after `current` up to the head, oldest first."""
        try:
            revs = list(self.script.iterate_revisions(self.head, current or "base"))
        except Exception as e:
            raise ConfigError(
                f"the database is at revision {current!r}, which this Alembic project does not know: {e}"
            ) from None
        return [self._revision(r) for r in reversed(revs)]

    def revision(self, rev_id: str) -> Revision:
        """One revision by id."""
        return self._revision(self.script.get_revision(rev_id))

    @staticmethod
    def _revision(r) -> Revision:
        reversible = _has_real_downgrade(getattr(r.module, "downgrade", None))
        return Revision(
            r.revision, r.down_revision if isinstance(r.down_revision, str) else None, (r.doc or "").strip(), reversible
        )

    def sql(self, rev: Revision, dialect_url: str = "postgresql://") -> str:
        """The SQL `rev` runs, rendered offline for `dialect_url`'s dialect (no connection, no credentials)."""
        buf = io.StringIO()
        cfg = (
            Config(self.config.config_file_name, output_buffer=buf)
            if self.config.config_file_name
            else Config(output_buffer=buf)
        )
        cfg.set_main_option("script_location", self.config.get_main_option("script_location") or "")
        cfg.set_main_option("sqlalchemy.url", dialect_url)
        cfg.attributes["offline"] = True
        command.upgrade(cfg, f"{rev.down}:{rev.id}" if rev.down else rev.id, sql=True)
        return buf.getvalue()
