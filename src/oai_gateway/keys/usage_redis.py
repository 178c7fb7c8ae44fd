"""The usage ledger in Redis: hourly roll-up hashes, incremented by one script per batch.

Redis keeps totals, not rows: `{gw:usage}:h:<hour>` holds, for every key, provider and model seen
in that hour, seven counters (requests, errors, input/output/cached tokens, cost in nano-dollars,
unpriced requests); `{gw:usage}:hours` indexes the hours that have any. A batch is summed in the
process first and applied by one script, so it is counted completely or not at all, whichever
replica sends it. Everything shares one hash tag, so the script runs on one Redis Cluster node.

Queries therefore resolve `since`/`until` to whole hours (an hour counts when any part of it is
inside the range); docs/operations.md says so. Per-request rows live in the SQLite backend only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from oai_gateway.keys.usage import (
    UsageQuery,
    UsageRecord,
    UsageRow,
    day_of,
    sort_rows,
)

PREFIX = "{gw:usage}"
HOURS = PREFIX + ":hours"
_SEP = "\x1f"
_COUNTERS = ("r", "e", "i", "o", "c", "n", "u")
_HOUR_S = 3600

APPEND_SCRIPT = """
local rows = cjson.decode(ARGV[1])
for _, row in ipairs(rows) do
    local hour_key = KEYS[row[1] + 1]
    redis.call('ZADD', KEYS[1], row[2], row[2])
    for i, name in ipairs({'r', 'e', 'i', 'o', 'c', 'n', 'u'}) do
        if row[i + 3] ~= 0 then
            redis.call('HINCRBY', hour_key, row[3] .. name, row[i + 3])
        end
    end
end
return #rows
"""


def hour_key(hour: int) -> str:
    return f"{PREFIX}:h:{hour}"


def _group(record: UsageRecord) -> tuple[int, str]:
    hour = int(record.timestamp // _HOUR_S)
    parts = (record.key_id, record.provider or "", record.model or "")
    return hour, _SEP.join(parts) + _SEP


def batch_arguments(records: Sequence[UsageRecord]) -> tuple[list[str], bytes]:
    """The script's KEYS (hours index, then each hour's hash) and its one ARGV (the sums)."""
    sums: dict[tuple[int, str], list[int]] = {}
    for record in records:
        counters = sums.setdefault(_group(record), [0] * len(_COUNTERS))
        for index, value in enumerate(
            (
                1,
                int(record.error),
                record.input_tokens,
                record.output_tokens,
                record.cached_tokens,
                record.cost_nanos,
                int(not record.priced),
            )
        ):
            counters[index] += value
    hours = sorted({hour for hour, _ in sums})
    position = {hour: index + 1 for index, hour in enumerate(hours)}
    rows = [[position[hour], hour, field, *c] for (hour, field), c in sums.items()]
    return [HOURS, *(hour_key(h) for h in hours)], orjson.dumps(rows)


def hour_range(query: UsageQuery) -> tuple[str, str]:
    """ZRANGE bounds (inclusive) of the hours that overlap [since, until)."""
    low = "-inf" if query.since is None else str(int(query.since // _HOUR_S))
    high = "+inf" if query.until is None else str(math.ceil(query.until / _HOUR_S) - 1)
    return low, high


def roll_up_hours(
    query: UsageQuery, hashes: Sequence[tuple[int, dict[Any, Any]]]
) -> list[UsageRow]:
    """The query's rows from (hour, HGETALL answer) pairs."""
    rows: dict[tuple[str, str, str, str], UsageRow] = {}
    for hour, counters in hashes:
        day = day_of(hour * _HOUR_S)
        for name, value in counters.items():
            text = name.decode() if isinstance(name, bytes) else str(name)
            key_id, provider, model, counter = text.split(_SEP)
            if not _matches(query, key_id, provider, model):
                continue
            row = _row_for(rows, query, (key_id, provider or None, model or None, day))
            _add(row, counter, int(value))
    return sort_rows(rows.values())


def _matches(query: UsageQuery, key_id: str, provider: str, model: str) -> bool:
    return (
        (query.key_id is None or key_id == query.key_id)
        and (query.provider is None or provider == query.provider)
        and (query.model is None or model == query.model)
    )


def _row_for(
    rows: dict[tuple[str, str, str, str], UsageRow],
    query: UsageQuery,
    values: tuple[str, str | None, str | None, str],
) -> UsageRow:
    grouped = set(query.group_by)
    key_id, provider, model, day = values
    empty = UsageRow(
        key_id=key_id if "key" in grouped else None,
        model=model if "model" in grouped else None,
        provider=provider if "provider" in grouped else None,
        day=day if "day" in grouped else None,
    )
    return rows.setdefault(empty.sort_key(), empty)


_FIELDS = {
    "r": "requests",
    "e": "errors",
    "i": "input_tokens",
    "o": "output_tokens",
    "c": "cached_tokens",
    "n": "cost_nanos",
    "u": "unpriced_requests",
}


def _add(row: UsageRow, counter: str, value: int) -> None:
    name = _FIELDS[counter]
    setattr(row, name, getattr(row, name) + value)
