"""The ledger against real stores that go away and writers that race (SPEC §10.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oai_gateway.keys.ledger import Ledger
from oai_gateway.keys.store import open_store
from oai_gateway.keys.usage import UsageQuery, UsageRecord
from tests.keys.contract import opened
from tests.keys.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def used(n: int, key: str = "static-1") -> UsageRecord:
    return UsageRecord(
        key,
        "/{provider}/v1/chat/completions",
        "custom",
        "m",
        200,
        False,
        input_tokens=n,
        output_tokens=1,
        request_id=f"r{n}",
    )


async def test_records_wait_while_redis_is_down_and_are_written_when_it_is_back(
    redis_server: RedisServer,
) -> None:
    redis_server.command("FLUSHALL")
    async with opened(redis_server.url) as store:
        ledger = Ledger(store, interval_s=3600)
        for n in range(10):
            ledger.record(used(n))
        redis_server.stop()
        try:
            assert await ledger.flush() is False  # refused: the records stay queued
            assert ledger.pending == 10
            ledger.record(used(10))
        finally:
            redis_server.start()
        assert await ledger.flush() is True
        assert ledger.pending == 0
        (row,) = await store.usage_rollup(UsageQuery())
    assert (row.requests, row.input_tokens) == (11, sum(range(11)))


async def test_writers_of_two_processes_racing_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first, second = open_store(url), open_store(url)
    await first.start()
    await second.start()
    try:
        ledgers = [Ledger(first, batch_size=7), Ledger(second, batch_size=7)]
        for index, ledger in enumerate(ledgers):
            for n in range(200):
                ledger.record(used(n, key=f"static-{index + 1}"))
        await asyncio.gather(*(ledger.aclose() for ledger in ledgers))
        rows = await first.usage_rollup(UsageQuery(group_by=("key",)))
    finally:
        await first.aclose()
        await second.aclose()
    assert [(r.key_id, r.requests) for r in rows] == [("static-1", 200), ("static-2", 200)]
