"""Environment files: `deployments/<env>.toml`, loaded and validated before anything is touched.

The core keys are validated here; each plugin's own table (`[router]`, `[target]`, every gate
and notifier) is validated against that plugin's pydantic model by `turnout.registry`. Any error
becomes a `ConfigError` naming the file, the key and the reason (TOML syntax errors keep their
line number).

Relative paths in an environment file are relative to the project root: the directory that holds
the `deployments/` folder (the parent of the config directory).
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from turnout.errors import ConfigError

__all__ = [
    "PluginTable",
    "HealthConfig",
    "CanaryConfig",
    "ThresholdsConfig",
    "RollbackConfig",
    "DatabaseConfig",
    "Environment",
    "config_dir",
    "load_environment",
    "format_validation_error",
]

_ENV_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class PluginTable(BaseModel):
    """A table that picks a plugin by `kind`; every other key belongs to that plugin's model."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(..., min_length=1, description="Registered name of the plugin, e.g. 'nginx'.")

    def settings(self) -> dict[str, Any]:
        """The plugin's own keys (everything except `kind`)."""
        return dict(self.model_extra or {})


class HealthConfig(BaseModel):
    """Health checks run against a slot before it takes traffic and after the switch."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: never a usable setting

    paths: list[str] = Field(default_factory=lambda: ["/health/live", "/health/ready", "/metrics"])
    timeout: float = Field(300.0, gt=0, description="Seconds to wait for the release to become healthy.")
    max_response_time: float = Field(1.0, gt=0, description="Seconds a health response may take.")
    interval: float = Field(0.5, gt=0, description="First retry delay; it doubles up to 5 s.")

    @field_validator("paths")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/") or any(c.isspace() for c in p):
                raise ValueError(f"health path {p!r} must start with '/' and contain no whitespace")
        return v


#: The judge a canary uses when `[canary.judge]` does not say.
DEFAULT_JUDGE = "sequential"
# judge settings that earlier versions took directly under [canary]
_FLAT_JUDGE_KEYS = ("confidence", "min_effect", "min_latency_effect")


class CanaryConfig(BaseModel):
    """Canary ramp defaults (used by the canary flow)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: never a usable setting

    stages: list[int] = Field(default_factory=lambda: [10, 25, 50, 100])
    duration: float = Field(300.0, gt=0, description="Seconds per stage.")
    interval: float = Field(30.0, gt=0, description="Seconds per measurement (analysis interval).")
    judge: PluginTable = Field(
        default_factory=lambda: PluginTable(kind=DEFAULT_JUDGE),
        description="`[canary.judge]`: kind = a registered judge, plus that judge's settings.",
    )
    min_requests: int = Field(50, ge=1, description="Fewer requests on either slot in a stage is inconclusive.")
    failure_limit: int = Field(0, ge=0, description="Failed measurements tolerated per stage.")
    inconclusive_limit: int = Field(1, ge=0, description="Inconclusive measurements tolerated per stage.")
    consecutive_error_limit: int = Field(2, ge=0, description="Measurement errors in a row tolerated.")
    stage_extension: int = Field(
        3, ge=0, description="Extra measurements a stage whose last measurement did not pass may take before it aborts."
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_judge(cls, data: Any) -> Any:
        # the flat form of earlier versions, `judge = "statistical"` with `confidence = ...` beside it,
        # is the table `[canary.judge] kind = "statistical"`, `confidence = ...`
        if not isinstance(data, dict):
            return data
        data = dict(data)
        flat = {k: data.pop(k) for k in _FLAT_JUDGE_KEYS if k in data}
        judge = data.get("judge", DEFAULT_JUDGE)
        if isinstance(judge, str):
            judge = {"kind": judge}
        elif isinstance(judge, PluginTable):
            judge = judge.model_dump()
        if isinstance(judge, dict):
            for k, v in flat.items():
                if k in judge:
                    raise ValueError(
                        f"{k} is set both in [canary] and in [canary.judge]; keep the one in [canary.judge]"
                    )
                judge = {**judge, k: v}
        data["judge"] = judge
        return data

    @field_validator("stages")
    @classmethod
    def _ramp(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("stages must not be empty")
        if any(s < 1 or s > 100 for s in v):
            raise ValueError(f"every stage must be within 1..100, got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"stages must be strictly increasing, got {v}")
        if v[-1] != 100:
            raise ValueError(f"the last stage must be 100, got {v[-1]}")
        return v

    def override(
        self, stages: list[int] | None = None, duration: float | None = None, interval: float | None = None
    ) -> CanaryConfig:
        """This config with a run's overrides, validated; ConfigError naming the bad value."""
        data = self.model_dump()
        for key, value in (("stages", stages), ("duration", duration), ("interval", interval)):
            if value is not None:
                data[key] = value
        try:
            cfg = CanaryConfig.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_validation_error("canary settings", e, "canary.")) from None
        cfg.interval = min(cfg.interval, cfg.duration)  # at least one measurement per stage
        return cfg


class ThresholdsConfig(BaseModel):
    """Canary-versus-stable limits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: never a usable setting

    max_error_rate_increase: float = Field(0.05, ge=0)
    max_p95_latency_increase: float = Field(3.0, ge=0)
    min_availability: float = Field(0.95, ge=0, le=1)
    max_p95_ratio: float = Field(2.0, gt=1, description="Canary p95 above this multiple of stable's fails...")
    p95_ratio_floor: float = Field(0.01, ge=0, description="...when it is also at least this many seconds slower.")


class RollbackConfig(BaseModel):
    """The watch after a promotion (its triggers) and rollback settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: never a usable setting

    watch: float = Field(600.0, ge=0, description="Seconds to watch a promoted release; 0 skips the watch")
    interval: float = Field(10.0, gt=0, description="Seconds per watch measurement")
    min_requests: int = Field(20, ge=1, description="Fewer requests in a measurement: no metrics verdict")
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_p95_latency: float = Field(3.0, gt=0)
    min_availability: float = Field(0.95, ge=0, le=1)
    health_failing_for: float = Field(120.0, gt=0, description="Seconds of failing health checks that trigger")
    lock_wait: float = Field(60.0, ge=0, description="Seconds `turnout rollback` waits for a running deployment")


CONTRACT_RULES = [
    "ban-drop-column",
    "ban-drop-table",
    "ban-drop-database",
    "renaming-column",
    "renaming-table",
    "changing-column-type",
    "adding-required-field",
    "adding-not-nullable-field",
]


class DatabaseConfig(BaseModel):
    """`[database]`: the application's database and its Alembic migrations (turnout migrate).

    The URL is never written in the file: `url_env` names an environment variable holding it, or
    `secret_block` a Prefect Secret block. `default_url` is only for credential-free embedded
    databases (SQLite): a URL with a password there is refused.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: never a usable setting

    url_env: str | None = Field(None, description="Environment variable holding the SQLAlchemy URL")
    secret_block: str | None = Field(None, description="Prefect Secret block holding the URL")
    default_url: str | None = Field(None, description="A credential-free URL (SQLite) when neither is set")
    alembic_ini: str | None = Field(None, description="Path to the application's alembic.ini")
    script_location: str | None = Field(None, description="Or: the Alembic script directory")
    backup_before: bool | None = Field(None, description="Back up before migrating (default: on in production)")
    backup_dir: str = Field("backups", description="Under the state directory")
    retention: int = Field(5, ge=1, description="Backups kept per environment")
    restore_jobs: int = Field(2, ge=1, le=32, description="pg_restore -j for the proof and restores")
    lock_timeout: float = Field(1.0, gt=0, description="Seconds a migration statement may wait for a lock")
    statement_timeout: float = Field(30.0, gt=0, description="Seconds a migration statement may run")
    lock_retries: int = Field(5, ge=0, description="Retries after a lock timeout (SQLSTATE 55P03)")
    retry_backoff: float = Field(1.0, ge=0, description="Seconds before the first retry; doubles each time")
    contract_rules: list[str] = Field(
        default_factory=lambda: list(CONTRACT_RULES), description="squawk rules that make a migration a contract"
    )
    lint_errors: list[str] = Field(default_factory=list, description="squawk rules that refuse a migration")
    lint_exclude: list[str] = Field(
        default_factory=lambda: ["require-lock-timeout", "require-statement-timeout"],
        description="squawk rules not run (turnout sets both timeouts itself)",
    )

    @model_validator(mode="after")
    def _sources(self) -> DatabaseConfig:
        if not (self.url_env or self.secret_block or self.default_url):
            raise ValueError("set url_env (an environment variable holding the URL), secret_block, or default_url")
        if self.default_url and "@" in self.default_url.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError(
                "default_url must not carry credentials: put the URL in an environment variable "
                "(url_env) or a Prefect Secret block (secret_block)"
            )
        if not (self.alembic_ini or self.script_location):
            raise ValueError("set alembic_ini or script_location (the application's Alembic project)")
        return self


class Environment(BaseModel):
    """One environment file, validated. `root` is the project root relative paths resolve against."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: never a usable setting

    name: str
    state_dir: Path = Path(".turnout/default")
    ledger_url: str | None = Field(None, description="Any SQLAlchemy URL; default SQLite under state_dir.")
    router: PluginTable
    target: PluginTable
    health: HealthConfig = Field(default_factory=HealthConfig)
    metrics: PluginTable | None = None
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    gates: list[PluginTable] = Field(default_factory=list)
    notifiers: list[PluginTable] = Field(default_factory=list)
    database: DatabaseConfig | None = None
    root: Path = Field(default=Path("."), exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ENV_NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (it names files and upstreams)")
        return v

    @model_validator(mode="after")
    def _resolve_paths(self) -> Environment:
        if not self.state_dir.is_absolute():
            self.state_dir = (self.root / self.state_dir).resolve()
        return self

    @property
    def effective_ledger_url(self) -> str:
        """The ledger's SQLAlchemy URL: `ledger_url`, or a SQLite file in the state directory."""
        return self.ledger_url or f"sqlite:///{self.state_dir / 'ledger.sqlite'}"

    def resolve(self, path: str | Path) -> Path:
        """A path from the environment file, made absolute against the project root."""
        p = Path(path)
        return p if p.is_absolute() else (self.root / p).resolve()


def config_dir(explicit: str | Path | None = None) -> Path:
    """Where environment files live: the argument, `$TURNOUT_CONFIG_DIR`, or `./deployments`."""
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("TURNOUT_CONFIG_DIR"):
        return Path(os.environ["TURNOUT_CONFIG_DIR"]).resolve()
    return (Path.cwd() / "deployments").resolve()


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    """One line per problem: `<source>: <prefix><dotted.key>: <reason>`."""
    lines = []
    for e in err.errors():
        loc = prefix + ".".join(str(p) for p in e["loc"]) if e["loc"] else (prefix.rstrip(".") or "(top level)")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def load_environment(name: str, directory: str | Path | None = None) -> Environment:
    """Read and validate `deployments/<name>.toml`; raise ConfigError naming the problem."""
    if not _ENV_NAME_RE.match(name or ""):
        raise ConfigError(f"environment name {name!r} is not valid: use lowercase letters, digits, '-' or '_'")
    cdir = config_dir(directory)
    path = cdir / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in cdir.glob("*.toml")) if cdir.is_dir() else []
        hint = f"known environments: {', '.join(known)}" if known else f"no environment files in {cdir}"
        raise ConfigError(f"unknown environment {name!r}: {path} does not exist ({hint})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}") from None
    if data.get("name", name) != name:
        raise ConfigError(f"{path}: name: is {data['name']!r} but the file is for environment {name!r}")
    data.setdefault("name", name)
    data["root"] = cdir.parent
    try:
        return Environment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(str(path), e)) from None
