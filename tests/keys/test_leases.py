"""The lease keeper: leases of requests still running are refreshed, released ones are not."""

from __future__ import annotations

import asyncio

import pytest

from oai_gateway.keys.leases import LeaseKeeper
from oai_gateway.keys.store import Settlement, StoreUnavailableError
from oai_gateway.keys.store_memory import MemoryStore
from tests.keys.contract import admission

pytestmark = pytest.mark.anyio


class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def refresh_leases(self, key_id: str, request_ids: object, ttl_s: float) -> None:
        if self.down:
            raise StoreUnavailableError("down")
        await super().refresh_leases(key_id, request_ids, ttl_s)  # type: ignore[arg-type]


async def test_running_requests_keep_their_slot() -> None:
    store = FlakyStore()
    keeper = LeaseKeeper(store, ttl_s=0.3, every_s=0.1)
    held = admission(max_parallel=1, lease_ttl_s=0.3)
    assert (await store.admit("k", held)).admitted
    keeper.hold("k", held.request_id)
    keeper.start()
    try:
        await asyncio.sleep(0.6)  # twice the TTL: only the keeper's refreshes keep it
        assert (await store.admit("k", admission(max_parallel=1))).refused == "parallel"
        keeper.drop("k", held.request_id)
        await asyncio.sleep(0.5)  # dropped, not released: it expires on its own
        assert (await store.admit("k", admission(max_parallel=1, lease_ttl_s=0.3))).admitted
    finally:
        await keeper.aclose()


async def test_a_store_error_is_survived() -> None:
    store = FlakyStore()
    keeper = LeaseKeeper(store, ttl_s=5, every_s=0.05)
    held = admission(max_parallel=1)
    await store.admit("k", held)
    keeper.hold("k", held.request_id)
    store.down = True
    await keeper.refresh()  # logs, does not raise
    store.down = False
    await keeper.refresh()
    await store.settle("k", Settlement(held.request_id, release_lease=True))
    keeper.drop("k", held.request_id)
    keeper.drop("k", "unknown")
    assert (await store.admit("k", admission(max_parallel=1))).admitted
