"""`redis://…` / `rediss://…`: the Store in Redis ≥ 7, shared by any number of replicas.

Each hot-path call is one EVALSHA of a Lua script (loaded again on NOSCRIPT) that reads the
server's clock, so replicas with skewed clocks still share one window. Every key of one virtual
key carries the hash tag `{<id>}`, so a script only touches one Redis Cluster slot. Key changes
are published on one channel; subscribers drop their cached record at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from oai_gateway.keys.records import KeyRecord, decode_record, encode_record, parse_time
from oai_gateway.keys.redis_batch import DEFER_S, ScriptBatcher
from oai_gateway.keys.secrets import new_pepper
from oai_gateway.keys.store import (
    ALL_KEYS,
    Admission,
    Decision,
    KeyExistsError,
    KeyNotFoundError,
    Refusal,
    Settlement,
    StoreUnavailableError,
    remember_slot,
)
from oai_gateway.keys.usage import UsageQuery, UsageRecord, UsageRow
from oai_gateway.keys.usage_redis import (
    APPEND_SCRIPT,
    HOURS,
    batch_arguments,
    hour_key,
    hour_range,
    roll_up_hours,
)

T = TypeVar("T")
_log = logging.getLogger("oai_gateway")
PREFIX = "gw"
INDEX = f"{PREFIX}:keys"  # ZSET id -> created_at epoch, for listing newest first
PEPPER = f"{PREFIX}:pepper"
CHANNEL = f"{PREFIX}:keys:changed"
TIMEOUT_S = 1.0
MAX_CONNECTIONS = 64
RESUBSCRIBE_S = 0.5
# KEYS[1] the leases ZSET; ARGV ttl (s), then the request ids whose leases still exist.
REFRESH_LEASES = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[1]) + 1) * 1000))
return 0
"""
_REFUSALS: tuple[Refusal | None, ...] = (None, "requests", "tokens", "parallel", "budget")


def _script(name: str) -> str:
    return resources.files("oai_gateway.keys").joinpath(name).read_text()


def _scripts() -> tuple[str, str]:
    """The admission and the settlement script, both starting with the settlement function."""
    settle = _script("store_redis_settle.lua")
    return settle + _script("store_redis_admit.lua"), settle + "settle_from(1)\nreturn 0\n"


def _settlement_args(settlement: Settlement, slot: int | None) -> list[str]:
    return [
        settlement.request_id,
        "" if slot is None else str(slot),
        str(settlement.tokens_delta),
        repr(settlement.budget_delta),
        str(settlement.period),
        "1" if settlement.release_lease else "0",
    ]


def _report(waiting: list[asyncio.Future[None]]) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback passing a script call's outcome on to the settlements it carried."""

    def report(call: asyncio.Future[Any]) -> None:
        failed = None if call.cancelled() else call.exception()
        if isinstance(failed, RedisError | OSError):
            failed = StoreUnavailableError(f"Redis store: {type(failed).__name__}: {failed}")
        for future in waiting:
            if future.done():
                continue
            if failed is None:
                future.set_result(None)
            else:
                future.set_exception(failed)

    return report


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.lru_cache(maxsize=4096)
def key_names(key_id: str) -> tuple[str, ...]:
    """The limiter keys of one virtual key, all in the slot of its hash tag (cached: the same
    tuple per key, so the batcher reuses its encoded call head)."""
    tag = f"{PREFIX}:{{{key_id}}}"
    # The window's two hashes are named apart from the request log they replace (`:log`, a
    # ZSET, and `:tok`), which simply expires after an upgrade.
    return (f"{tag}:wreq", f"{tag}:wtok", f"{tag}:lease", f"{tag}:budget")


def record_name(key_id: str) -> str:
    return f"{PREFIX}:{{{key_id}}}:key"


class RedisStore:
    settles_later = True  # a settlement rides along with the next admission's round trip

    def __init__(self, url: str) -> None:
        # One retry on a dead pooled connection: after a Redis restart the first command on an
        # old socket fails, the retry opens a new one. No backoff: the hot path must not wait.
        # A bounded pool that waits for a free connection instead of failing when it is busy.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self.redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        admit, settle = _scripts()
        self._admit = self.redis.register_script(admit)
        self._settle = self.redis.register_script(settle)
        # Settlements not sent yet, by key: each rides along with its key's next admission
        # (in the same script call), other keys' with the same batch, or goes after DEFER_S.
        self._settling: dict[str, tuple[list[str], list[asyncio.Future[None]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._refresh = self.redis.register_script(REFRESH_LEASES)
        self._batch = ScriptBatcher(self.redis, TIMEOUT_S)
        self._append_usage = self.redis.register_script(APPEND_SCRIPT)
        self._closed = asyncio.Event()
        # request id -> window slot of the admissions this process made and has not settled
        # (only this process settles them); bounded like the SQLite store's.
        self._slots: dict[str, int] = {}

    async def _call(self, command: Awaitable[T]) -> T:
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis store: {type(exc).__name__}: {exc}") from exc

    async def start(self) -> None:
        await self._call(self.redis.ping())

    async def aclose(self) -> None:
        self._closed.set()
        self._send_settlements()
        await self._batch.aclose()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def pepper(self) -> str:
        await self._call(self.redis.set(PEPPER, new_pepper(), nx=True))
        value = await self._call(self.redis.get(PEPPER))
        return _text(value)

    async def create_key(self, record: KeyRecord) -> None:
        created = await self._call(
            self.redis.set(record_name(record.id), encode_record(record), nx=True)
        )
        if not created:
            raise KeyExistsError(record.id)
        await self._call(self.redis.zadd(INDEX, {record.id: parse_time(record.created_at)}))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        data = await self._call(self.redis.get(record_name(key_id)))
        return None if data is None else decode_record(data)

    async def list_keys(self, limit: int, after: str | None = None) -> list[KeyRecord]:
        start = 0
        if after is not None:
            rank = await self._call(self.redis.zrevrank(INDEX, after))
            if not isinstance(rank, int):
                return []
            start = rank + 1
        ids = await self._call(self.redis.zrevrange(INDEX, start, start + limit - 1))
        records = await asyncio.gather(*(self.get_key(_text(i)) for i in ids))
        return [r for r in records if r is not None]

    async def put_key(self, record: KeyRecord) -> None:
        replaced = await self._call(
            self.redis.set(record_name(record.id), encode_record(record), xx=True)
        )
        if not replaced:
            raise KeyNotFoundError(record.id)
        await self._call(self.redis.publish(CHANNEL, record.id))

    async def changes(self) -> AsyncIterator[str]:
        while not self._closed.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                yield ALL_KEYS  # whatever was published while not subscribed is lost
                while not self._closed.is_set():
                    message = await pubsub.get_message(timeout=TIMEOUT_S)
                    if message is not None and message["type"] == "message":
                        yield message["data"].decode()
            except (RedisError, OSError) as exc:
                _log.debug("key change subscription lost: %s", exc)
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def append_usage(self, records: Sequence[UsageRecord]) -> None:
        keys, totals = batch_arguments(records)
        await self._call(self._append_usage(keys=keys, args=[totals]))

    async def usage_rollup(self, query: UsageQuery) -> list[UsageRow]:
        low, high = hour_range(query)
        found = await self._call(self.redis.zrangebyscore(HOURS, low, high))
        hours = [int(_text(h)) for h in found]
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(hour_key(hour))
        answers = await self._call(pipe.execute()) if hours else []
        return roll_up_hours(query, list(zip(hours, answers, strict=True)))

    async def admit(self, key_id: str, admission: Admission) -> Decision:
        args: list[str | int] = [
            admission.request_id,
            admission.rpm or 0,
            admission.tpm or 0,
            admission.max_parallel or 0,
            admission.tokens,
            "" if admission.budget_limit is None else repr(admission.budget_limit),
            admission.budget_period,
            repr(admission.budget_cost),
            repr(admission.lease_ttl_s),
            repr(admission.window_s),
        ]
        carried = self._settling.pop(key_id, None)
        if self._settling:
            self._send_settlements(deferred=True)  # other keys': in the same batch
        if carried is None:
            call = self._batch.call(self._admit, key_names(key_id), args)
        else:
            call = self._batch.call(self._admit, key_names(key_id), [*args, *carried[0]])
            call.add_done_callback(_report(carried[1]))
        reply = await self._call(call)
        refused, retry_ms, requests, reset_ms, tokens, period, slot = (int(v) for v in reply)
        if slot >= 0:
            remember_slot(self._slots, admission.request_id, slot)
        return Decision(
            refused=_REFUSALS[refused],
            retry_after_s=retry_ms / 1000,
            remaining_requests=None if requests < 0 else requests,
            reset_requests_s=reset_ms / 1000,
            remaining_tokens=None if tokens < 0 else tokens,
            reset_tokens_s=reset_ms / 1000,
            period=period,
        )

    async def refresh_leases(self, key_id: str, request_ids: Sequence[str], ttl_s: float) -> None:
        args = [repr(ttl_s), *request_ids]
        await self._call(self._batch.call(self._refresh, key_names(key_id)[2:3], args))

    def settle(self, key_id: str, settlement: Settlement) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        args, waiting = self._settling.setdefault(key_id, ([], []))
        args += _settlement_args(settlement, self._slots.pop(settlement.request_id, None))
        waiting.append(future)
        if self._timer is None:
            self._timer = loop.call_later(DEFER_S, self._send_settlements)
        return future

    def _send_settlements(self, *, deferred: bool = False) -> None:
        """Every waiting settlement, one script call per key (`deferred`: with the next batch)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        settling, self._settling = self._settling, {}
        for key_id, (args, waiting) in settling.items():
            call = self._batch.call(self._settle, key_names(key_id), args, deferred=deferred)
            call.add_done_callback(_report(waiting))
