"""Script calls to Redis, batched: every call made in one turn of the event loop goes out in one
pipeline, so however many requests are in flight they share one round trip and one pooled
connection instead of each checking out its own (each call is still its own atomic script).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[AsyncScript, Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """An awaitable of the script's reply (its exception on failure)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((script, [len(keys), *keys, *args], future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self._pipeline(batch)
            for (script, args, future), reply in zip(batch, replies, strict=True):
                answer = reply
                if isinstance(reply, NoScriptError):
                    # Redis restarted or flushed its scripts: load it again, then run this call.
                    script.sha = await self._redis.script_load(script.script)
                    answer = await self._redis.evalsha(script.sha, *args)
                _settle(future, answer)
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, args, _ in batch:
            pipe.execute_command("EVALSHA", script.sha, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def aclose(self) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)
