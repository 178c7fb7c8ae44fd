"""The usage ledger in SQLite: one row per request in table `usage`, rolled up with GROUP BY.

A batch is one transaction (one `executemany`), so the file's write lock is taken once per batch
rather than once per request; bench/ledger_write_rate.py measures what that sustains.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from oai_gateway.keys.usage import UsageQuery, UsageRecord, UsageRow, sort_rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    at REAL NOT NULL, day TEXT NOT NULL, key_id TEXT NOT NULL, route TEXT NOT NULL,
    provider TEXT, model TEXT, status INTEGER NOT NULL, stream INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL, priced INTEGER NOT NULL, duration_ms REAL NOT NULL,
    request_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at);
CREATE INDEX IF NOT EXISTS usage_key_at ON usage (key_id, at);
"""

_INSERT = "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_COLUMNS = {"key": "key_id", "model": "model", "provider": "provider", "day": "day"}
_TOTALS = (
    "count(*), sum(status >= 400), sum(input_tokens), sum(output_tokens), sum(cached_tokens), "
    "sum(cost_nanos), sum(1 - priced)"
)


def insert_usage(conn: sqlite3.Connection, records: Sequence[UsageRecord]) -> None:
    rows = [
        (
            r.timestamp,
            r.day,
            r.key_id,
            r.route,
            r.provider,
            r.model,
            r.status,
            int(r.stream),
            r.input_tokens,
            r.output_tokens,
            r.cached_tokens,
            r.cost_nanos,
            int(r.priced),
            r.duration_ms,
            r.request_id,
        )
        for r in records
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_INSERT, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def roll_up_usage(conn: sqlite3.Connection, query: UsageQuery) -> list[UsageRow]:
    where: list[str] = []
    args: list[object] = []
    for column, value in (
        ("key_id", query.key_id),
        ("provider", query.provider),
        ("model", query.model),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        where.append("at >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("at < ?")
        args.append(query.until)
    groups = [_COLUMNS[g] for g in query.group_by]
    # Column names come from the fixed _COLUMNS table, never from the request.
    sql = f"SELECT {', '.join([*groups, _TOTALS])} FROM usage"  # noqa: S608
    sql += f" WHERE {' AND '.join(where)}" if where else ""
    sql += f" GROUP BY {', '.join(groups)}" if groups else ""
    rows = [_row(groups, values) for values in conn.execute(sql, args)]
    return sort_rows(r for r in rows if r.requests)


def _row(groups: Sequence[str], values: Sequence[Any]) -> UsageRow:
    named: dict[str, Any] = dict(zip(groups, values, strict=False))
    totals = [int(v or 0) for v in values[len(groups) :]]
    return UsageRow(
        key_id=named.get("key_id"),
        model=named.get("model"),
        provider=named.get("provider"),
        day=named.get("day"),
        requests=totals[0],
        errors=totals[1],
        input_tokens=totals[2],
        output_tokens=totals[3],
        cached_tokens=totals[4],
        cost_nanos=totals[5],
        unpriced_requests=totals[6],
    )
