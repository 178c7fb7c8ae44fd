"""Usage values: costs in nano-dollars, token extraction, time bounds and the in-process roll-up."""

from __future__ import annotations

import pytest

from oai_gateway.config.settings import Price
from oai_gateway.keys.usage import (
    UsageQuery,
    UsageRecord,
    cost_nanos,
    day_start,
    parse_bound,
    roll_up,
    usage_tokens,
)

DAY = day_start("2026-12-01")
PRICES = {"big": Price(input=2.5, output=10.0), "tiny": Price(input=0.1, output=0.2)}


def record(key: str, model: str, at: float, status: int = 200, tokens: int = 10) -> UsageRecord:
    cost, priced = cost_nanos(PRICES, model, tokens, tokens * 2)
    return UsageRecord(
        key_id=key,
        route="/{provider}/v1/chat/completions",
        provider="custom",
        model=model,
        status=status,
        stream=False,
        input_tokens=tokens,
        output_tokens=tokens * 2,
        cached_tokens=1,
        cost_nanos=cost,
        priced=priced,
        timestamp=at,
    )


def test_cost_is_usd_per_million_tokens_in_nano_dollars() -> None:
    # 1000 input at $2.50/M + 500 output at $10/M = $0.0025 + $0.005
    assert cost_nanos(PRICES, "big", 1000, 500) == (7_500_000, True)
    assert cost_nanos(PRICES, "tiny", 1, 1) == (300, True)


def test_a_model_without_a_price_costs_nothing_and_is_unpriced() -> None:
    assert cost_nanos(PRICES, "other", 1000, 1000) == (0, False)
    assert cost_nanos(PRICES, None, 1000, 1000) == (0, False)


def test_tokens_from_chat_and_responses_usage() -> None:
    chat = {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    responses = {
        "input_tokens": 5,
        "output_tokens": 2,
        "input_tokens_details": {"cached_tokens": 1},
    }
    assert usage_tokens(chat) == (7, 3, 4)
    assert usage_tokens(responses) == (5, 2, 1)
    assert usage_tokens(None) == (0, 0, 0)
    assert usage_tokens({"prompt_tokens": "7", "completion_tokens": -1}) == (0, 0, 0)
    assert usage_tokens({"prompt_tokens": True}) == (0, 0, 0)


def test_time_bounds() -> None:
    assert parse_bound("2026-12-01") == DAY
    assert parse_bound("2026-12-01T00:00:00Z") == DAY
    assert parse_bound("2026-12-01T01:00:00+01:00") == DAY
    assert parse_bound("2026-12-01T00:00:00") == DAY  # no offset: UTC
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_bound("yesterday")


def test_roll_up_groups_filters_and_sorts() -> None:
    records = [
        record("k2", "big", DAY + 10),
        record("k1", "big", DAY + 20, status=500),
        record("k1", "tiny", DAY + 86_400 + 5),
        record("k1", "other", DAY + 30),
    ]
    rows = roll_up(records, UsageQuery(group_by=("key", "day")))
    assert [(r.key_id, r.day, r.requests) for r in rows] == [
        ("k1", "2026-12-01", 2),
        ("k1", "2026-12-02", 1),
        ("k2", "2026-12-01", 1),
    ]
    assert rows[0].errors == 1
    assert rows[0].unpriced_requests == 1
    (total,) = roll_up(records, UsageQuery())
    assert (total.requests, total.input_tokens, total.output_tokens, total.cached_tokens) == (
        4,
        40,
        80,
        4,
    )
    assert total.as_json(()) == {
        "requests": 4,
        "errors": 1,
        "input_tokens": 40,
        "output_tokens": 80,
        "cached_tokens": 4,
        "cost_usd": round((2 * (10 * 2.5 + 20 * 10.0) + 10 * 0.1 + 20 * 0.2) / 1e6, 9),
        "unpriced_requests": 1,
    }
    window = UsageQuery(key_id="k1", since=DAY + 20, until=DAY + 86_400)
    assert [r.requests for r in roll_up(records, window)] == [2]
    assert roll_up(records, UsageQuery(model="none")) == []


def test_rows_name_only_the_grouped_fields() -> None:
    (row,) = roll_up([record("k1", "big", DAY)], UsageQuery(group_by=("model", "provider")))
    shown = row.as_json(("model", "provider"))
    assert shown["model"] == "big"
    assert shown["provider"] == "custom"
    assert "key_id" not in shown
    assert "day" not in shown
