"""Key records cached per process for at most TTL_S, dropped at once on a change notice.

The TTL bounds how long a revocation or change takes to reach this process even when notices
are lost; notices (Redis pub/sub, the SQLite version counter) make it immediate in practice.
An expired entry is kept as a stale copy, for STORE_FAILURE_MODE=open while the store is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from oai_gateway.keys.records import KeyRecord
from oai_gateway.keys.store import ALL_KEYS, Store, StoreUnavailableError

TTL_S = 1.0
MAX_ENTRIES = 10_000  # past this the cache starts over: unknown ids cannot grow it forever
_log = logging.getLogger("oai_gateway")


class KeyCache:
    def __init__(self, store: Store, ttl_s: float = TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, KeyRecord | None]] = {}
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch(), name="key-change-watcher")

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def get(self, key_id: str, *, stale_ok: bool = False) -> KeyRecord | None:
        """The record (None: no such key); StoreUnavailableError when the store is away and
        there is no fresh copy (or, with `stale_ok`, no copy at all)."""
        entry = self._entries.get(key_id)
        if entry is not None and time.monotonic() < entry[0]:
            return entry[1]
        try:
            return await self._load(key_id)
        except StoreUnavailableError:
            if stale_ok and entry is not None:
                return entry[1]
            raise

    async def _load(self, key_id: str) -> KeyRecord | None:
        # One store read per id however many requests wait for it.
        pending = self._loading.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._loading[key_id] = future
        try:
            record = await self._store.get_key(key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(record)
        finally:
            del self._loading[key_id]
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_id] = (time.monotonic() + self._ttl_s, record)
        return record

    def invalidate(self, key_id: str) -> None:
        if key_id == ALL_KEYS:
            self._expire_all()
        elif key_id in self._entries:
            self._entries[key_id] = (0.0, self._entries[key_id][1])

    def _expire_all(self) -> None:
        # Expired, not deleted: the stale copies still serve STORE_FAILURE_MODE=open.
        self._entries = {k: (0.0, record) for k, (_, record) in self._entries.items()}

    async def _watch(self) -> None:
        while True:
            try:
                async for key_id in self._store.changes():
                    self.invalidate(key_id)
                return
            except Exception:
                _log.warning("key change notices stopped; retrying", exc_info=True)
                await asyncio.sleep(TTL_S)
