"""Script calls to Redis, batched: every call made while the previous batch is on the wire (or in
one turn of the event loop) goes out in one pipeline on one connection kept for the purpose, so
however many requests are in flight they share one round trip, and no call pays for a pool
checkout (the pool's lock, wait and health check cost more CPU than the script's own reply).

A call may be `deferred` (a settlement: nobody waits for it): it goes out with the next batch,
or after DEFER_S when no other call comes, so a steady stream of requests pays one round trip
each, the admission, with the previous settlement riding along ahead of it.

The batch is written to the connection as RESP bytes built here, not through redis-py's
pipeline object: the pipeline's per-command packing and bookkeeping cost more CPU than the
script itself. The constant head of a call (EVALSHA, the script's sha, the key names) is encoded
once per script and key and reused, so a request only encodes its own arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

# script, key names, arguments, the caller's future, the call as RESP bytes
Call = tuple[AsyncScript, Sequence[str], Sequence[Any], "asyncio.Future[Any]", bytes]
HEADS_KEPT = 4096  # cached call heads; past this the cache starts again (bounded memory)
DEFER_S = 0.05  # the longest a deferred call waits for a batch to ride along with


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _encoded(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


class ScriptBatcher:
    def __init__(self, redis: aioredis.Redis, timeout_s: float) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        pool = redis.connection_pool
        # Without a socket timeout of its own: one deadline covers a whole exchange (below).
        options = {**pool.connection_kwargs, "socket_timeout": None}
        self._conn: AbstractConnection = pool.connection_class(**options)
        self._pending: list[Call] = []
        self._busy = False  # a batch is being sent, or is about to be
        self._timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        self._heads: dict[tuple[str, Sequence[str]], tuple[bytes, int]] = {}

    def call(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[str | int],
        *,
        deferred: bool = False,
    ) -> Any:
        """An awaitable of the script's reply (its exception on failure)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future, self._pack(script, keys, args)))
        if self._busy:
            return future  # goes out with the batch after the one being sent
        if not deferred:
            self._busy = True
            loop.call_soon(self._start)
        elif self._timer is None:
            self._timer = loop.call_later(DEFER_S, self._start)
        return future

    def _pack(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]) -> bytes:
        head = self._heads.get((script.sha, keys))
        if head is None:
            if len(self._heads) >= HEADS_KEPT:
                self._heads.clear()
            parts = [b"EVALSHA", script.sha.encode(), b"%d" % len(keys), *map(_encoded, keys)]
            head = self._heads[(script.sha, keys)] = (b"".join(map(_bulk, parts)), len(parts))
        body, count = head
        texts = [a if isinstance(a, str) else str(a) for a in args]
        joined = "".join([f"${len(t)}\r\n{t}\r\n" for t in texts])
        # One encode for all arguments; the lengths above count characters, so only when every
        # character is one byte (ids and numbers always are).
        tail = joined.encode() if joined.isascii() else b"".join([_bulk(t.encode()) for t in texts])
        return b"*%d\r\n%s%s" % (count + len(args), body, tail)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sender is None and self._pending:
            self._busy = True
            self._sender = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Send batches until no call is waiting; the calls of one batch are answered in order."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._sender = None
            self._busy = False

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self._pipeline(batch)
            for (script, keys, args, future, _), reply in zip(batch, replies, strict=True):
                answer = reply
                if isinstance(reply, NoScriptError):
                    # Redis restarted or flushed its scripts: load it again, then run this call.
                    script.sha = await self._redis.script_load(script.script)
                    answer = await self._redis.evalsha(script.sha, len(keys), *keys, *args)
                _settle(future, answer)
        except Exception as exc:
            for *_, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        conn = self._conn
        try:
            async with asyncio.timeout(self._timeout_s):
                # The pool's retry policy, as redis-py's pipeline applies it: a dead connection
                # is dropped and the batch written once more on a new one.
                replies: list[Any] = await conn.retry.call_with_retry(
                    lambda: _exchange(conn, batch), lambda _: conn.disconnect()
                )
        except BaseException:
            # Timed out or failed half-way: the replies still owed would be out of step.
            await conn.disconnect()
            raise
        return replies

    async def aclose(self) -> None:
        """Send what is still waiting (deferred calls included), then close the connection."""
        self._start()
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._conn.disconnect()


async def _exchange(conn: AbstractConnection, batch: list[Call]) -> list[Any]:
    """Write the whole batch, then read one reply per call (an error reply is kept, not raised,
    so the replies of the other calls are still read and the connection stays in step)."""
    await conn.send_packed_command([packed for *_, packed in batch], check_health=False)
    replies: list[Any] = []
    for _ in batch:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)
