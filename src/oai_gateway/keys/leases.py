"""Keeps the `max_parallel` leases of this process's requests in flight alive.

A lease expires LEASE_TTL_S after it was taken or last refreshed, so the slots of a process that
died come back within that time; while a request (a long stream, say) is still running, this
keeper pushes its lease's expiry forward every REFRESH_S, one store call per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from oai_gateway.keys.store import Store, StoreUnavailableError

LEASE_TTL_S = 30.0
REFRESH_S = 10.0
_log = logging.getLogger("oai_gateway")


class LeaseKeeper:
    def __init__(self, store: Store, ttl_s: float = LEASE_TTL_S, every_s: float = REFRESH_S):
        self._store = store
        self.ttl_s = ttl_s
        self._every_s = every_s
        self._held: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lease-keeper")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def hold(self, key_id: str, request_id: str) -> None:
        self._held.setdefault(key_id, set()).add(request_id)

    def drop(self, key_id: str, request_id: str) -> None:
        held = self._held.get(key_id)
        if held is not None:
            held.discard(request_id)
            if not held:
                del self._held[key_id]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.refresh()

    async def refresh(self) -> None:
        for key_id, request_ids in list(self._held.items()):
            try:
                await self._store.refresh_leases(key_id, sorted(request_ids), self.ttl_s)
            except StoreUnavailableError as exc:
                # The next round tries again; until then the lease runs on its last expiry.
                _log.warning("could not refresh leases of key %s: %s", key_id, exc)
