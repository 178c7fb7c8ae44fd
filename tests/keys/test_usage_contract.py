"""One ledger contract, every backend: batches appended, totals rolled up the same way."""

from __future__ import annotations

import pytest

from oai_gateway.keys.usage import UsageQuery, UsageRecord, day_start
from tests.keys.contract import another, opened

pytestmark = pytest.mark.anyio

DAY = day_start("2026-12-01")
HOUR = 3600.0


def used(key: str, at: float, **values: object) -> UsageRecord:
    fields: dict[str, object] = {
        "key_id": key,
        "route": "/{provider}/v1/chat/completions",
        "provider": "custom",
        "model": "gpt-test",
        "status": 200,
        "stream": False,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 2,
        "cost_nanos": 1500,
        "priced": True,
        "duration_ms": 3.5,
        "timestamp": at,
    }
    fields.update(values)
    return UsageRecord(**fields)  # type: ignore[arg-type]


RECORDS = [
    used("aaaaaaaaaaaa", DAY + 60),
    used("aaaaaaaaaaaa", DAY + 120, status=429, input_tokens=0, output_tokens=0, cost_nanos=0),
    used("aaaaaaaaaaaa", DAY + HOUR + 1, model="other", priced=False, cost_nanos=0),
    used("static-1", DAY + 2 * HOUR, provider="ollama", model="llama3.2:1b", stream=True),
    used("static-1", DAY + 86_400 + 5, provider="ollama", model="llama3.2:1b", output_tokens=7),
    used(
        "static-2",
        DAY + 30,
        provider=None,
        model=None,
        route="/x",
        status=404,
        input_tokens=0,
        output_tokens=0,
        cached_tokens=0,
        cost_nanos=0,
        priced=False,
    ),
]


def table(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [tuple(row.values()) for row in rows]


async def test_an_empty_ledger_rolls_up_to_nothing(url: str) -> None:
    async with opened(url) as store:
        assert await store.usage_rollup(UsageQuery()) == []
        assert await store.usage_rollup(UsageQuery(group_by=("key", "day"))) == []


async def test_totals_over_everything(url: str) -> None:
    async with opened(url) as store:
        await store.append_usage(RECORDS[:4])
        await store.append_usage(RECORDS[4:])
        (total,) = await store.usage_rollup(UsageQuery())
    assert total.as_json(()) == {
        "requests": 6,
        "errors": 2,
        "input_tokens": 40,
        "output_tokens": 22,
        "cached_tokens": 10,
        "cost_usd": 4500 / 1e9,
        "unpriced_requests": 2,
    }


async def test_grouped_by_key_and_day(url: str) -> None:
    async with opened(url) as store:
        await store.append_usage(RECORDS)
        rows = await store.usage_rollup(UsageQuery(group_by=("key", "day")))
    assert [(r.key_id, r.day, r.requests, r.errors, r.output_tokens) for r in rows] == [
        ("aaaaaaaaaaaa", "2026-12-01", 3, 1, 10),
        ("static-1", "2026-12-01", 1, 0, 5),
        ("static-1", "2026-12-02", 1, 0, 7),
        ("static-2", "2026-12-01", 1, 1, 0),
    ]


async def test_grouped_by_provider_and_model_with_unknown_ones(url: str) -> None:
    async with opened(url) as store:
        await store.append_usage(RECORDS)
        rows = await store.usage_rollup(UsageQuery(group_by=("provider", "model")))
    assert [(r.provider, r.model, r.requests, r.cost_nanos, r.unpriced_requests) for r in rows] == [
        (None, None, 1, 0, 1),
        ("custom", "gpt-test", 2, 1500, 0),
        ("custom", "other", 1, 0, 1),
        ("ollama", "llama3.2:1b", 2, 3000, 0),
    ]
    assert table([rows[1].as_json(("model", "provider"))])[0][:2] == ("gpt-test", "custom")


async def test_filters_by_key_provider_and_model(url: str) -> None:
    async with opened(url) as store:
        await store.append_usage(RECORDS)
        by_key = await store.usage_rollup(UsageQuery(key_id="static-1"))
        by_provider = await store.usage_rollup(UsageQuery(provider="custom", group_by=("model",)))
        by_model = await store.usage_rollup(UsageQuery(model="llama3.2:1b", group_by=("key",)))
        nothing = await store.usage_rollup(UsageQuery(key_id="zzzzzzzzzzzz"))
    assert [r.requests for r in by_key] == [2]
    assert [(r.model, r.requests) for r in by_provider] == [("gpt-test", 2), ("other", 1)]
    assert [(r.key_id, r.requests) for r in by_model] == [("static-1", 2)]
    assert nothing == []


async def test_since_is_inclusive_and_until_exclusive_on_whole_hours(url: str) -> None:
    async with opened(url) as store:
        await store.append_usage(RECORDS)
        first_hour = await store.usage_rollup(UsageQuery(since=DAY, until=DAY + HOUR))
        later = await store.usage_rollup(UsageQuery(since=DAY + HOUR, group_by=("day",)))
        before = await store.usage_rollup(UsageQuery(until=DAY))
    assert [r.requests for r in first_hour] == [3]
    assert [(r.day, r.requests) for r in later] == [("2026-12-01", 2), ("2026-12-02", 1)]
    assert before == []


async def test_batches_from_two_processes_add_up(url: str, backend: str) -> None:
    async with opened(url) as first, another(url, backend, first) as second:
        await first.append_usage(RECORDS[:3])
        await second.append_usage(RECORDS[:3])
        rows = await first.usage_rollup(UsageQuery(group_by=("key",)))
        seen_by_second = await second.usage_rollup(UsageQuery(group_by=("key",)))
    assert [(r.key_id, r.requests, r.input_tokens) for r in rows] == [("aaaaaaaaaaaa", 6, 40)]
    assert seen_by_second == rows


async def test_every_grouping_at_once(url: str) -> None:
    group_by = ("key", "model", "provider", "day")
    async with opened(url) as store:
        await store.append_usage(RECORDS)
        rows = await store.usage_rollup(UsageQuery(group_by=group_by))
    assert len(rows) == 5
    assert sum(r.requests for r in rows) == len(RECORDS)
    assert set(rows[0].as_json(group_by)) >= {"key_id", "model", "provider", "day"}
