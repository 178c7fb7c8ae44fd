"""Helpers for the store contract tests: open a backend, make records and admissions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from oai_gateway.keys.records import KeyRecord, Limits
from oai_gateway.keys.secrets import new_id
from oai_gateway.keys.store import Admission, Store, open_store


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    store = open_store(url)
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()


def record(created_at: str = "2026-12-01T00:00:00Z", **values: Any) -> KeyRecord:
    return KeyRecord(
        id=values.pop("id", None) or new_id(),
        secret_hash="00" * 32,
        created_at=created_at,
        limits=values.pop("limits", Limits()),
        **values,
    )


def admission(**values: Any) -> Admission:
    return Admission(request_id=uuid.uuid4().hex, **values)


@asynccontextmanager
async def another(url: str, backend: str, first: Store) -> AsyncIterator[Store]:
    """A second process's view of the same store; memory has only one process: itself."""
    if backend == "memory":
        yield first
        return
    async with opened(url) as store:
        yield store
