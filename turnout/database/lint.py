"""Lint each pending migration's SQL with squawk, and classify it expand or contract.

*expand*: additive, both the old and the new release keep working (new tables, nullable columns, indexes).
*contract*: the old release breaks (drops, renames, type changes, a new NOT NULL without a default). A
contract migration is refused while the old release still takes traffic; it is a follow-up once the
old slot is retired. Which squawk rules make a contract, and which refuse a migration outright, are
settings (`[database] contract_rules`, `lint_errors`, `lint_exclude`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turnout.config import DatabaseConfig
from turnout.errors import ConfigError

__all__ = ["Finding", "MigrationLint", "lint_sql", "squawk_binary"]


@dataclass(frozen=True)
class Finding:
    """One squawk finding, with the statement it is about."""

    rule: str
    level: str  # error (refuses), contract (refused while the old release is live), warning
    message: str
    line: int
    statement: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "level": self.level,
            "message": self.message,
            "line": self.line,
            "statement": self.statement,
        }


@dataclass
class MigrationLint:
    """The lint of one migration: its kind and its findings."""

    revision: str
    message: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """`contract` when any finding is a contract rule, else `expand`."""
        return "contract" if any(f.level == "contract" for f in self.findings) else "expand"

    @property
    def errors(self) -> list[Finding]:
        """Findings that refuse the migration whatever the traffic."""
        return [f for f in self.findings if f.level == "error"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "message": self.message,
            "kind": self.kind,
            "findings": [f.as_dict() for f in self.findings],
        }


def squawk_binary() -> str:
    """The squawk executable (PyPI squawk-cli, installed with turnout), or ConfigError."""
    here = Path(sys.executable).parent / "squawk"
    path = str(here) if here.is_file() else shutil.which("squawk")
    if not path:
        raise ConfigError("squawk is not installed (pip install squawk-cli): migrations cannot be linted")
    return path


def lint_sql(revision: str, message: str, sql: str, cfg: DatabaseConfig) -> MigrationLint:
    """Run squawk on one migration's SQL and sort its findings into error / contract / warning."""
    result = MigrationLint(revision, message)
    with tempfile.NamedTemporaryFile("w", suffix=f"-{revision}.sql", delete=False) as f:
        f.write(sql)
        path = f.name
    try:
        args = [squawk_binary(), "--reporter", "json"]
        if cfg.lint_exclude:
            args += ["--exclude", ",".join(cfg.lint_exclude)]
        proc = subprocess.run([*args, path], capture_output=True, text=True, timeout=60)
    finally:
        Path(path).unlink(missing_ok=True)
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("["):
        raise ConfigError(f"squawk could not lint migration {revision}: {(proc.stderr or proc.stdout).strip()[:500]}")
    lines = sql.splitlines()
    for item in json.loads(proc.stdout):
        rule = item.get("rule_name") or "syntax-error"
        line = int(item.get("line") or 0)  # squawk counts lines from 0
        if "alembic_version" in _statement(lines, line):
            continue  # Alembic's own bookkeeping table, not the application's schema
        level = (
            "error"
            if rule in cfg.lint_errors or rule == "syntax-error"
            else "contract"
            if rule in cfg.contract_rules
            else "warning"
        )
        result.findings.append(Finding(rule, level, item.get("message", ""), line + 1, _statement(lines, line)))
    return result


def _statement(lines: list[str], line: int) -> str:
    """The SQL statement that starts at or contains 0-based `line` (up to its semicolon)."""
    if not 0 <= line < len(lines):
        return ""
    start = line
    while start > 0 and not lines[start - 1].rstrip().endswith(";") and lines[start - 1].strip():
        start -= 1
    out = []
    for text in lines[start:]:
        out.append(text.strip())
        if text.rstrip().endswith(";"):
            break
    return " ".join(x for x in out if x)[:300]
