"""The SQLite store's admissions of one loop turn, shared in one transaction: what the contract
suite cannot see from outside (the transactions, callers that leave, failures)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oai_gateway.keys import store_sqlite
from oai_gateway.keys.store import Decision, StoreUnavailableError
from tests.keys.contract import admission, opened, record

pytestmark = pytest.mark.anyio


async def test_admissions_of_one_loop_turn_share_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = []
    real = store_sqlite.transaction

    def counted(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any]) -> Any:
        transactions.append(1)
        return real(conn, work)

    monkeypatch.setattr(store_sqlite, "transaction", counted)
    async with opened(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        key_id = record().id
        before = len(transactions)
        decisions: list[Decision] = await asyncio.gather(
            *(store.admit(key_id, admission(rpm=3, tpm=100, tokens=10)) for _ in range(10))
        )
        # The first went at once, the nine that came in the same loop turn together after it.
        assert len(transactions) - before == 2
    assert [d.admitted for d in decisions] == [True] * 3 + [False] * 7  # in the order they came
    assert [d.remaining_tokens for d in decisions[:3]] == [90, 80, 70]


async def test_a_caller_gone_before_its_turn_is_not_admitted(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        key_id = record().id
        first = asyncio.create_task(store.admit(key_id, admission(rpm=5)))
        left = asyncio.create_task(store.admit(key_id, admission(rpm=5)))
        await asyncio.sleep(0)  # both asked: the first went at once, the other waits a turn
        left.cancel()
        assert (await first).remaining_requests == 4
        with pytest.raises(asyncio.CancelledError):
            await left
        assert (await store.admit(key_id, admission(rpm=5))).remaining_requests == 3


async def test_a_caller_gone_while_its_admission_waits_gets_its_lease_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    async with opened(f"sqlite:///{path}") as store:
        assert isinstance(store, store_sqlite.SQLiteStore)
        key_id = record().id
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            left = asyncio.create_task(store.admit(key_id, admission(max_parallel=1)))
            for _ in range(50):  # bounded: until the admission waits on the store's thread
                await asyncio.sleep(0.01)
                if store.database._thread_writes:
                    break
            assert store.database._thread_writes
            left.cancel()
            with pytest.raises(asyncio.CancelledError):
                await left
        finally:
            other.execute("COMMIT")
            other.close()
        for _ in range(100):  # bounded: the thread's transaction ends once the lock is free
            if not store.database._thread_writes:
                break
            await asyncio.sleep(0.01)
        # Admitted for nobody: its lease went back with the next transaction.
        assert (await store.admit(key_id, admission(max_parallel=1))).admitted


async def test_a_failed_batch_fails_each_of_its_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        assert isinstance(store, store_sqlite.SQLiteStore)
        key_id = record().id

        def broken(*args: object) -> None:
            raise RuntimeError("unexpected")

        with monkeypatch.context() as patch:
            patch.setattr(store_sqlite, "_admit", broken)
            outcomes = await asyncio.gather(
                *(store.admit(key_id, admission(rpm=5)) for _ in range(3)),
                return_exceptions=True,
            )
        assert all(isinstance(o, RuntimeError) for o in outcomes)

        async def unavailable(*args: object, **kwargs: object) -> None:
            raise StoreUnavailableError("gone")

        with monkeypatch.context() as patch:
            patch.setattr(store.database, "try_here", lambda work: store_sqlite.NOT_HERE)
            patch.setattr(store.database, "run_here", unavailable)
            with pytest.raises(StoreUnavailableError):
                await store.admit(key_id, admission(rpm=5))
        assert (await store.admit(key_id, admission(rpm=5))).remaining_requests == 4


async def test_a_batch_reads_each_window_once_and_writes_its_counts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two keys' admissions interleaved in one batch: each key's window read once, its
    admitted counts written in one statement, and the rows then hold exactly what was admitted
    (the slot and the key's TOTALS alike)."""
    path = tmp_path / "keys.db"
    reads: list[str] = []
    real = store_sqlite._window

    def counted(conn: sqlite3.Connection, key_id: str, now: float, window_s: float) -> Any:
        reads.append(key_id)
        return real(conn, key_id, now, window_s)

    monkeypatch.setattr(store_sqlite, "_window", counted)
    async with opened(f"sqlite:///{path}") as store:
        first = await store.admit("k1", admission(rpm=4, tokens=7))  # goes alone, at once
        assert first.remaining_requests == 3
        reads.clear()
        decisions: list[Decision] = await asyncio.gather(
            *(
                store.admit(key, admission(rpm=4, tokens=7))
                for _ in range(4)
                for key in ("k1", "k2")
            )
        )
    # The gather's first admission went alone, the seven after it in one batch.
    assert sorted(reads) == ["k1", "k1", "k2"]
    assert [d.remaining_requests for d in decisions[0::2]] == [2, 1, 0, 0]  # k1
    assert [d.admitted for d in decisions[0::2]] == [True, True, True, False]
    assert [d.remaining_requests for d in decisions[1::2]] == [3, 2, 1, 0]  # k2
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT key_id, slot = -1, requests, tokens FROM key_slots ORDER BY key_id, slot"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("k1", 1, 4, 28), ("k1", 0, 4, 28), ("k2", 1, 4, 28), ("k2", 0, 4, 28)]
