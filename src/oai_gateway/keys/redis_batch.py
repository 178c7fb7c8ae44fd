"""Script calls to Redis, batched: every call made in one turn of the event loop goes out in one
pipeline, so however many requests are in flight they share one round trip and one pooled
connection instead of each checking out its own (each call is still its own atomic script).

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
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

# script, key names, arguments, the caller's future, the call as RESP bytes
Call = tuple[AsyncScript, Sequence[str], Sequence[Any], "asyncio.Future[Any]", bytes]
HEADS_KEPT = 4096  # cached call heads; past this the cache starts again (bounded memory)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _encoded(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


class ScriptBatcher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._heads: dict[tuple[str, Sequence[str]], tuple[bytes, int]] = {}

    def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """An awaitable of the script's reply (its exception on failure)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((script, keys, args, future, self._pack(script, keys, args)))
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

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

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
        pool = self._redis.connection_pool
        conn: Connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            # The pool's retry policy, as redis-py's pipeline applies it: a dead pooled
            # connection is dropped and the batch written once more on a new one.
            replies: list[Any] = await conn.retry.call_with_retry(
                lambda: _exchange(conn, batch), lambda _: conn.disconnect()
            )
            return replies
        finally:
            await pool.release(conn)

    async def aclose(self) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


async def _exchange(conn: Connection, batch: list[Call]) -> list[Any]:
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
