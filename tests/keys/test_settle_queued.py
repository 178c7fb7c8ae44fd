"""Settlements a store queues (SQLite, Redis): the request does not wait, failures still count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from oai_gateway.keys.auth import Principal
from oai_gateway.keys.enforcement import KeyEnforcement
from oai_gateway.keys.limits import Estimate
from oai_gateway.keys.metrics import KeyMetrics
from oai_gateway.keys.records import Limits
from oai_gateway.keys.store import Settlement, StoreUnavailableError
from oai_gateway.keys.store_memory import MemoryStore
from oai_gateway.observability.metrics import GatewayMetrics
from tests.keys.contract import record

pytestmark = pytest.mark.anyio


class QueuingStore(MemoryStore):
    """Queues each settlement; the test decides how each one ends."""

    settles_later = True

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[asyncio.Future[None]] = []

    def settle(self, key_id: str, settlement: Settlement) -> asyncio.Future[None]:  # type: ignore[override]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued.append(future)
        return future


async def settle_one(store: QueuingStore) -> KeyEnforcement:
    enforcement = KeyEnforcement(
        [], store, KeyMetrics(GatewayMetrics(), per_key=False), failure_open=False, providers={}
    )
    key = record(limits=Limits(rpm=10, tpm=1000))
    principal = Principal(key_id=key.id, record=key)
    ticket = await enforcement.admit_key(principal, "custom", None, Estimate(10, 10))
    await enforcement.settle_ticket(ticket, {"prompt_tokens": 1, "completion_tokens": 1})
    assert len(store.queued) == 1  # queued, and settle_ticket returned without waiting
    return enforcement


async def test_a_queued_settlement_that_fails_counts_as_a_store_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = QueuingStore()
    enforcement = await settle_one(store)
    store.queued[0].set_exception(StoreUnavailableError("store gone"))
    with caplog.at_level(logging.WARNING, logger="oai_gateway"):
        await asyncio.sleep(0)  # the done-callback runs
    assert enforcement._metrics.store_errors.labels("settle")._value.get() == 1
    assert "store gone" in caplog.text
    assert not enforcement._settling


async def test_any_other_failure_is_logged_and_aclose_waits_for_what_is_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = QueuingStore()
    enforcement = await settle_one(store)
    assert enforcement._settling
    store.queued[0].set_exception(RuntimeError("bug"))
    with caplog.at_level(logging.ERROR, logger="oai_gateway"):
        await enforcement.aclose()
    assert "settling a request failed" in caplog.text
    assert not enforcement._settling
