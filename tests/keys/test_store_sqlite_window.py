"""The SQLite store's window in slots: what the contract suite cannot see from outside."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from oai_gateway.keys import store_sqlite
from oai_gateway.keys.store import Settlement
from tests.keys.contract import admission, opened, record

pytestmark = pytest.mark.anyio
WINDOW_S = 0.3


def slot_rows(path: Path, key_id: str) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as conn:
        sql = "SELECT slot, requests, tokens FROM key_slots WHERE key_id = ? ORDER BY slot"
        return conn.execute(sql, (key_id,)).fetchall()


async def test_requests_of_one_slot_share_one_row_and_old_slots_are_deleted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        key_id = record().id
        for _ in range(3):
            assert (await store.admit(key_id, admission(rpm=100, window_s=60.0))).admitted
        assert [(requests, tokens) for _, requests, tokens in slot_rows(path, key_id)] in (
            [(3, 0)],
            [(1, 0), (2, 0)],  # a slot boundary fell between them
            [(2, 0), (1, 0)],
        )
        short = record().id
        await store.admit(short, admission(rpm=100, tpm=1000, tokens=5, window_s=WINDOW_S))
        await asyncio.sleep(WINDOW_S * 1.5)
        await store.admit(short, admission(rpm=100, tpm=1000, tokens=7, window_s=WINDOW_S))
        assert [tokens for *_, tokens in slot_rows(path, short)] == [7]


async def test_an_entry_counts_for_at_least_the_whole_window(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        key_id = record().id
        started = time.time()
        assert (await store.admit(key_id, admission(rpm=1, window_s=WINDOW_S))).admitted
        for _ in range(200):  # bounded: the entry leaves after 0.3-0.305 s
            await asyncio.sleep(0.01)
            decision = await store.admit(key_id, admission(rpm=1, window_s=WINDOW_S))
            if decision.admitted:
                break
            assert 0 < decision.retry_after_s <= WINDOW_S * (1 + 1 / store_sqlite.SLOTS)
        assert decision.admitted
        assert time.time() - started >= WINDOW_S


async def test_a_settlement_after_its_slot_left_the_window_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        key_id = record().id
        old = admission(tpm=100, tokens=60, window_s=WINDOW_S)
        assert (await store.admit(key_id, old)).admitted
        await asyncio.sleep(WINDOW_S * 1.5)
        fresh = admission(tpm=100, tokens=30, window_s=WINDOW_S)
        assert (await store.admit(key_id, fresh)).remaining_tokens == 70
        await store.settle(key_id, Settlement(old.request_id, tokens_delta=-60))
        await store.settle(key_id, Settlement("never-admitted", tokens_delta=-10))
        assert [tokens for *_, tokens in slot_rows(path, key_id)] == [30]


async def test_admissions_never_settled_are_forgotten_beyond_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "SLOTS_KEPT", 10)
    async with opened(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        assert isinstance(store, store_sqlite.SQLiteStore)
        key_id = record().id
        first = admission(tpm=10_000, tokens=10)
        await store.admit(key_id, first)
        for _ in range(30):
            await store.admit(key_id, admission(tpm=10_000, tokens=10))
        assert len(store._slots) <= 10
        assert first.request_id not in store._slots
