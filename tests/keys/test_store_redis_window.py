"""The Redis store's window in slots: what the contract suite cannot see from outside."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_py

from oai_gateway.keys.store import Settlement
from oai_gateway.keys.store_redis import key_names
from tests.keys.contract import admission, opened, record
from tests.keys.redis_server import RedisServer

pytestmark = pytest.mark.anyio
WINDOW_S = 0.3


def fields(redis: RedisServer, name: str) -> dict[str, int]:
    """A window hash as {field: value}."""
    with redis_py.Redis.from_url(redis.url, decode_responses=True) as client:
        found: dict[str, str] = client.hgetall(name)
    return {field: int(value) for field, value in found.items()}


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    redis_server.command("FLUSHALL")
    return redis_server


async def test_requests_of_one_slot_share_one_field_and_old_slots_go(redis: RedisServer) -> None:
    async with opened(redis.url) as store:
        key_id = record().id
        requests, tokens = key_names(key_id)[:2]
        for _ in range(50):
            assert (await store.admit(key_id, admission(rpm=1000, tpm=10**6, tokens=3))).admitted
        counted = fields(redis, requests)
        assert counted["#sum"] == 50
        assert 3 <= len(counted) <= 4  # '#sum', '#min' and one slot (two across a boundary)
        assert fields(redis, tokens)["#sum"] == 150
        await asyncio.sleep(WINDOW_S * 1.5)
        short = admission(rpm=1000, tpm=10**6, tokens=7, window_s=WINDOW_S)
        other = record().id
        await store.admit(other, admission(rpm=1000, tpm=10**6, tokens=5, window_s=WINDOW_S))
        await asyncio.sleep(WINDOW_S * 1.5)
        decision = await store.admit(other, short)
        assert (decision.remaining_requests, decision.remaining_tokens) == (999, 10**6 - 7)
        left = fields(redis, key_names(other)[1])
        assert left["#sum"] == 7
        assert len(left) == 2  # '#sum' and the one slot still in the window


async def test_a_settlement_after_its_slot_left_the_window_changes_nothing(
    redis: RedisServer,
) -> None:
    async with opened(redis.url) as store:
        key_id = record().id
        old = admission(tpm=100, tokens=60, window_s=WINDOW_S)
        assert (await store.admit(key_id, old)).admitted
        await asyncio.sleep(WINDOW_S * 1.5)
        fresh = admission(tpm=100, tokens=30, window_s=WINDOW_S)
        assert (await store.admit(key_id, fresh)).remaining_tokens == 70
        await store.settle(key_id, Settlement(old.request_id, tokens_delta=-60))
        await store.settle(key_id, Settlement("never-admitted", tokens_delta=-10))
        assert fields(redis, key_names(key_id)[1])["#sum"] == 30
        await store.settle(key_id, Settlement(fresh.request_id, tokens_delta=-20))
        assert fields(redis, key_names(key_id)[1])["#sum"] == 10


async def test_a_tokens_refusal_waits_for_the_slots_that_free_enough(redis: RedisServer) -> None:
    async with opened(redis.url) as store:
        key_id = record().id
        assert (await store.admit(key_id, admission(tpm=100, tokens=40))).admitted
        await asyncio.sleep(1.1)  # the next one lands in a later slot
        assert (await store.admit(key_id, admission(tpm=100, tokens=40))).admitted
        decision = await store.admit(key_id, admission(tpm=100, tokens=50))
        assert decision.refused == "tokens"
        # 30 must leave: the first slot's 40 do, at its end plus 60 s, about 59 s from now.
        assert 57.5 <= decision.retry_after_s <= 61
