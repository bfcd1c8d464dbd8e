"""Where the database URL comes from, and how it is shown: never with its password."""

from __future__ import annotations

import os
from typing import cast

from sqlalchemy.engine import make_url

from turnout.config import DatabaseConfig
from turnout.errors import ConfigError

__all__ = ["resolve_url", "redact", "scrub"]


def resolve_url(cfg: DatabaseConfig, environment: str) -> str:
    """The URL from `url_env`, the Prefect Secret block, or `default_url`; ConfigError naming what is missing."""
    if cfg.url_env:
        value = os.environ.get(cfg.url_env)
        if value:
            return _checked(value, f"${cfg.url_env}")
        if not (cfg.secret_block or cfg.default_url):
            raise ConfigError(
                f"deployments/{environment}.toml: database: ${cfg.url_env} is not set "
                "(it must hold the database URL, e.g. postgresql+psycopg://user:***@host/db)"
            )
    if cfg.secret_block:
        try:
            from prefect.blocks.system import Secret

            # prefect's async_dispatch accepts _sync; its type hints do not say so
            secret = cast(Secret, Secret.load(cfg.secret_block, _sync=True))  # type: ignore[call-arg]
            return _checked(str(secret.get()), f"Secret block {cfg.secret_block!r}")
        except ConfigError:
            raise
        except Exception as e:
            if not cfg.default_url:
                raise ConfigError(
                    f"deployments/{environment}.toml: database: cannot read Prefect Secret block "
                    f"{cfg.secret_block!r}: {type(e).__name__}"
                ) from None
    return _checked(cfg.default_url or "", "default_url")


def _checked(url: str, source: str) -> str:
    try:
        make_url(url)
    except Exception:
        raise ConfigError(
            f"database URL from {source} is not a SQLAlchemy URL (it is not shown: it may hold a password)"
        ) from None
    return url


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for logs, reports and the ledger."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password removed wherever it appears (error messages from drivers, tools)."""
    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text
