"""A database's fingerprint: its tables, the rows in each and a checksum per table (order-independent)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

__all__ = ["fingerprint", "differences", "engine_for"]


def engine_for(url: str) -> Engine:
    """An engine that holds no connection between uses (so scratch databases can be dropped)."""
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)


def fingerprint(engine: Engine) -> dict[str, dict[str, Any]]:
    """{table: {"rows": n, "checksum": md5}} for every table of the default schema."""
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        names = sorted(inspect(conn).get_table_names())
        for name in names:
            q = conn.dialect.identifier_preparer.quote(name)
            if conn.dialect.name == "postgresql":
                # the sum of each row's 60-bit md5 prefix: order-independent, and no sort of the whole table
                rows, checksum = conn.execute(
                    text(
                        f"SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) "
                        f"FROM {q} t"
                    )
                ).one()
            else:
                rows = checksum = 0
                for r in conn.execute(text(f"SELECT * FROM {q}")):
                    rows += 1
                    checksum += int(hashlib.md5(repr(tuple(r)).encode()).hexdigest()[:15], 16)
            out[name] = {"rows": int(rows), "checksum": str(checksum)}
    return out


def differences(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]], only: set[str] | None = None
) -> list[str]:
    """What differs between two fingerprints (limited to `only` tables when given); [] when equal."""
    names = (set(expected) | set(actual)) if only is None else only
    diffs = []
    for name in sorted(names):
        e, a = expected.get(name), actual.get(name)
        if e is None:
            diffs.append(f"table {name} is new")
        elif a is None:
            diffs.append(f"table {name} is missing")
        elif e["rows"] != a["rows"]:
            diffs.append(f"table {name}: {a['rows']} rows, expected {e['rows']}")
        elif e["checksum"] != a["checksum"]:
            diffs.append(f"table {name}: same {a['rows']} rows but different content")
    return diffs
