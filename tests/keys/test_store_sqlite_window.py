"""The SQLite store's window in slots: what the contract suite cannot see from outside."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from oai_gateway.keys import store as store_module
from oai_gateway.keys import store_sqlite
from oai_gateway.keys.store import Decision, Settlement, Store
from tests.keys.contract import admission, opened, record

pytestmark = pytest.mark.anyio
WINDOW_S = 0.3


def slot_rows(path: Path, key_id: str) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as conn:
        sql = "SELECT slot, requests, tokens FROM key_slots WHERE key_id = ? AND slot >= 0 "
        sql += "ORDER BY slot"
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
    monkeypatch.setattr(store_module, "SLOTS_KEPT", 10)
    async with opened(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        assert isinstance(store, store_sqlite.SQLiteStore)
        key_id = record().id
        first = admission(tpm=10_000, tokens=10)
        await store.admit(key_id, first)
        for _ in range(30):
            await store.admit(key_id, admission(tpm=10_000, tokens=10))
        assert len(store._slots) <= 10
        assert first.request_id not in store._slots


def totals_row(path: Path, key_id: str) -> tuple[int, int] | None:
    with sqlite3.connect(path) as conn:
        sql = "SELECT requests, tokens FROM key_slots WHERE key_id = ? AND slot = ?"
        row = conn.execute(sql, (key_id, store_sqlite.TOTALS)).fetchone()
    return None if row is None else (row[0], row[1])


async def test_the_totals_row_is_the_sum_of_the_slots_in_the_window(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        key_id = record().id
        admitted = []
        for tokens in (10, 20, 30):
            planned = admission(rpm=100, tpm=1000, tokens=tokens, window_s=WINDOW_S)
            assert (await store.admit(key_id, planned)).admitted
            admitted.append(planned)
            await asyncio.sleep(WINDOW_S / 10)  # spread over several slots
        await store.settle(key_id, Settlement(admitted[0].request_id, tokens_delta=-4))
        rows = slot_rows(path, key_id)
        assert totals_row(path, key_id) == (3, 56)
        assert (sum(r for _, r, _ in rows), sum(t for *_, t in rows)) == (3, 56)
        await asyncio.sleep(WINDOW_S * 1.5)  # every slot leaves the window
        late = admission(rpm=100, tpm=1000, tokens=5, window_s=WINDOW_S)
        decision = await store.admit(key_id, late)
        assert (decision.remaining_requests, decision.remaining_tokens) == (99, 995)
        assert totals_row(path, key_id) == (1, 5)
        await store.settle(key_id, Settlement(admitted[1].request_id, tokens_delta=-20))
        assert totals_row(path, key_id) == (1, 5)  # its slot is gone: nothing to correct


async def test_slots_without_a_totals_row_are_counted_again(tmp_path: Path) -> None:
    # A file written before the totals row existed, or a row gone wrong: the next admission
    # counts the slots themselves.
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        key_id = record().id
        for _ in range(2):
            assert (await store.admit(key_id, admission(rpm=5, tpm=1000, tokens=7))).admitted
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM key_slots WHERE slot = ?", (store_sqlite.TOTALS,))
        decision = await store.admit(key_id, admission(rpm=5, tpm=1000, tokens=7))
        assert (decision.remaining_requests, decision.remaining_tokens) == (2, 979)
        assert totals_row(path, key_id) == (3, 21)
        with sqlite3.connect(path) as conn:  # a totals row that disagrees with no slot at all
            conn.execute("DELETE FROM key_slots WHERE key_id = ? AND slot >= 0", (key_id,))
        decision = await store.admit(key_id, admission(rpm=5, tpm=1000, tokens=7))
        assert decision.admitted
        assert totals_row(path, key_id) == (1, 7)


async def admitted_after_a_queued_correction(
    store: Store, key_id: str, delta: int, tokens: int
) -> Decision:
    """Admit 600 tokens, queue the settlement correcting them by `delta`, then ask for
    `tokens` more: the second admission (nearly always in the same slot) carries it."""
    first = admission(tpm=1000, tokens=600)
    assert (await store.admit(key_id, first)).admitted
    settled = store.settle(key_id, Settlement(first.request_id, tokens_delta=delta))
    decision = await store.admit(key_id, admission(tpm=1000, tokens=tokens))
    await settled
    return decision


async def test_a_correction_queued_for_the_admitting_slot_counts_in_the_decision(
    tmp_path: Path,
) -> None:
    # The outcome is that of settling first.
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        key_id = record().id
        decision = await admitted_after_a_queued_correction(store, key_id, -500, 500)
        assert decision.admitted  # 100 + 500 fit, 600 + 500 would not
        assert decision.remaining_tokens == 400
        assert totals_row(path, key_id) == (2, 600)
        assert sum(tokens for *_, tokens in slot_rows(path, key_id)) == 600


async def test_a_refused_admission_still_writes_the_correction_it_carried(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        key_id = record().id
        decision = await admitted_after_a_queued_correction(store, key_id, -100, 600)
        assert decision.refused == "tokens"
        assert 0 < decision.retry_after_s <= 61
        assert totals_row(path, key_id) == (1, 500)
        assert [tokens for *_, tokens in slot_rows(path, key_id)] == [500]
        refused_again = await store.admit(key_id, admission(tpm=1000, tokens=600))
        assert refused_again.remaining_tokens == 500


async def test_refusals_by_another_limit_keep_the_window_and_its_corrections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        over_budget = record().id
        for _ in range(2):  # the second finds only an empty totals row
            decision = await store.admit(over_budget, admission(rpm=5, budget_limit=0.0))
            assert (decision.refused, decision.remaining_requests) == ("budget", 5)
        key_id = record().id
        first = admission(rpm=1, tpm=1000, tokens=600)
        assert (await store.admit(key_id, first)).admitted
        settled = store.settle(key_id, Settlement(first.request_id, tokens_delta=-200))
        decision = await store.admit(key_id, admission(rpm=1, tpm=1000, tokens=10))
        await settled
        assert decision.refused == "requests"
        assert totals_row(path, key_id) == (1, 400)
