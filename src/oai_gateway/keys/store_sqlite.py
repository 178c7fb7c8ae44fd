"""`sqlite:///…`: the Store in one SQLite file, shared by every worker and process on one host.

WAL lets readers run beside the one writer; every change is one `BEGIN IMMEDIATE` transaction,
so concurrent admissions from many processes serialise on the file's write lock.

The hot-path calls (admission, settlement, key reads) run on the event loop itself, on a second
connection that never waits: its busy timeout is zero, so a locked file fails at once, and a
commit only writes to the WAL (no fsync with synchronous=NORMAL; that connection never
checkpoints). A hand-off to a thread and back costs more CPU than the transaction itself. Only
when the file is locked (another worker writing) does the call go to the dedicated thread, which
owns the other connection, waits for the lock there, and does every slow job: ledger batches,
roll-ups, checkpoints. The event loop never waits for a lock or an fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from oai_gateway.keys.admission import Counters, decide
from oai_gateway.keys.records import KeyRecord, decode_record, encode_record, period_index
from oai_gateway.keys.secrets import new_pepper
from oai_gateway.keys.store import (
    ALL_KEYS,
    Admission,
    Decision,
    KeyExistsError,
    KeyNotFoundError,
    Settlement,
    StoreUnavailableError,
    remember_slot,
)
from oai_gateway.keys.usage import UsageQuery, UsageRecord, UsageRow
from oai_gateway.keys.usage_sqlite import SCHEMA as USAGE_SCHEMA
from oai_gateway.keys.usage_sqlite import insert_usage, roll_up_usage

T = TypeVar("T")
CHANGE_POLL_S = 0.25  # how often the key version counter is read for changes by other processes
BUSY_TIMEOUT_MS = 5000
# Commits on the event loop's connection between two checkpoints run by the thread (SQLite's
# own automatic checkpoint comes every 1,000 WAL pages; a commit here writes a few).
CHECKPOINT_EVERY = 250
SETTLE_DEFER_S = 0.05  # the longest a settlement waits for an admission to share a commit with
SLOTS = 60  # a window is counted in this many slots

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS keys_newest ON keys (created_at DESC, id DESC);
-- The rpm/tpm window in slots of 1/60 of it: one row per key and slot, not one per request,
-- and one per key (slot -1) holding the sums of its slots.
DROP TABLE IF EXISTS key_window;
DROP TABLE IF EXISTS key_window_totals;
CREATE TABLE IF NOT EXISTS key_slots (
    key_id TEXT NOT NULL, slot INTEGER NOT NULL, requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL, PRIMARY KEY (key_id, slot)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_leases (
    key_id TEXT NOT NULL, request_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (key_id, request_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_budget (
    key_id TEXT PRIMARY KEY, period INTEGER NOT NULL, used REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('keys_version', '0');
"""


class SQLiteDatabase:
    """One connection on one thread; `run(fn)` calls fn(connection) there and awaits it.
    `run_here(fn)` calls it on the event loop's own connection unless the file is locked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._here: sqlite3.Connection | None = None  # opened once the schema exists
        self._commits_here = 0
        # Writes of this process on the thread: the event loop's writes wait for them instead
        # of failing on the lock they hold and following them to the thread.
        self._thread_writes = 0
        self._thread_idle = asyncio.Event()
        self._thread_idle.set()

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; no fsync per commit
        conn.executescript(SCHEMA + USAGE_SCHEMA)
        self._conn = conn

    def _connect_here(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")  # a locked file is an error, never a wait
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints (fsync) run on the thread
        self._here = conn
        return conn

    async def open(self) -> None:
        await self.run(lambda _conn: None)
        if self._here is None:
            self._connect_here()

    async def run_here(self, work: Callable[[sqlite3.Connection], T], *, writes: bool) -> T:
        """`work` on the event loop's connection; on the thread when that fails (the file is
        locked by another writer, or worse: the thread waits, or reports the error).
        `work` must leave nothing behind when it fails (one transaction, or a read)."""
        while writes and self._thread_writes:  # another may start before this task resumes
            await self._thread_idle.wait()
        conn = self._here
        if conn is None and self._conn is not None:  # the store came up after the start
            with contextlib.suppress(sqlite3.OperationalError):
                conn = self._connect_here()
        if conn is not None:
            result = self._on_loop(conn, work, writes=writes)
            if not isinstance(result, NotHere):
                return result
        return await self.run(work, writes=writes)

    def try_here(self, work: Callable[[sqlite3.Connection], T]) -> T | NotHere:
        """The write `work` on the event loop's connection at once, or NOT_HERE when it cannot
        run there now: a write of this process's thread is in flight, the connection is not
        open yet, or the file is locked (then `run_here` waits or takes it to the thread)."""
        if self._thread_writes or self._here is None:
            return NOT_HERE
        return self._on_loop(self._here, work, writes=True)

    def _on_loop(
        self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], *, writes: bool
    ) -> T | NotHere:
        try:
            result = work(conn)
        except sqlite3.OperationalError:
            # SQLITE_BUSY above all: the thread's connection waits for the lock instead.
            if conn.in_transaction:
                conn.rollback()
            return NOT_HERE
        if writes:
            self._committed_here()
        return result

    def _committed_here(self) -> None:
        self._commits_here += 1
        if self._commits_here >= CHECKPOINT_EVERY:
            self._commits_here = 0
            # fetchall: a cursor left unread would keep its statement, and a snapshot, open.
            checkpoint = self.run(
                lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall(), writes=False
            )
            task = asyncio.get_running_loop().create_task(checkpoint)
            task.add_done_callback(_ignore_failure)

    async def run(self, work: Callable[[sqlite3.Connection], T], *, writes: bool = True) -> T:
        """`work` on the thread; `writes` unless it only reads (WAL readers take no lock)."""

        def call() -> T:
            if self._conn is None:
                self._connect()
            assert self._conn is not None
            return work(self._conn)

        loop = asyncio.get_running_loop()
        if writes:
            self._thread_writes += 1
            self._thread_idle.clear()
        try:
            return await loop.run_in_executor(self._thread, call)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from exc
        finally:
            if writes:
                self._thread_writes -= 1
                if not self._thread_writes:
                    self._thread_idle.set()

    async def close(self) -> None:
        if self._here is not None:
            self._here.close()
            self._here = None

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=True)


class NotHere:
    """`try_here`'s answer when the work did not run on the event loop's connection."""


NOT_HERE = NotHere()


def _ignore_failure(task: asyncio.Future[Any]) -> None:
    # A checkpoint that failed (file locked, store gone) is simply made by a later one; a
    # failed task or release that nobody waits for has nobody to tell.
    if not task.cancelled():
        task.exception()


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` inside BEGIN IMMEDIATE: the write lock is taken before the first read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


# key id, settlement, the slot its admission was counted in, the settling caller's future
Pending = list[tuple[str, Settlement, int | None, "asyncio.Future[None]"]]
Admitted = tuple[Decision, int | None]  # the decision, and the window slot that counted it
# the admissions of one loop turn: key id, admission, the admitting caller's future
Admitting = list[tuple[str, Admission, "asyncio.Future[Admitted]"]]


class SQLiteStore:
    # A settlement waits for the next admission and shares its transaction (one commit per
    # request instead of two), or goes alone after SETTLE_DEFER_S. Admissions share
    # transactions too: the first of a turn of the event loop goes at once, and the others of
    # that turn (under load many requests reach their admission in the same turn) go together
    # at the start of the next; a transaction's fixed part (its locks, its WAL frame, its
    # commit) is most of what one costs.
    settles_later = True

    def __init__(self, path: Path) -> None:
        self.database = SQLiteDatabase(path)
        self._closed = asyncio.Event()
        self._pending: Pending = []
        self._timer: asyncio.TimerHandle | None = None
        # request id -> window slot of the admissions this process made and has not settled;
        # only this process settles them (a ticket never leaves it).
        self._slots: dict[str, int] = {}
        self._admitting: Admitting = []
        self._turn_open = False  # an admission went at once in this turn of the event loop

    async def start(self) -> None:
        await self.database.open()

    async def aclose(self) -> None:
        self._closed.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        admitting, self._admitting = self._admitting, []
        with contextlib.suppress(StoreUnavailableError):  # reported to each caller
            await self._apply(self._take_pending(), admitting)
        await self.database.close()

    async def pepper(self) -> str:
        def read(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('pepper', ?)", (new_pepper(),))
            row = conn.execute("SELECT value FROM meta WHERE name = 'pepper'").fetchone()
            return str(row[0])

        return await self.database.run(read)

    async def create_key(self, record: KeyRecord) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO keys VALUES (?, ?, ?)",
                    (record.id, record.created_at, encode_record(record)),
                )
            except sqlite3.IntegrityError:
                raise KeyExistsError(record.id) from None

        await self.database.run(insert)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        def read(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute("SELECT record FROM keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else decode_record(row[0])

        return await self.database.run_here(read, writes=False)

    async def list_keys(self, limit: int, after: str | None = None) -> list[KeyRecord]:
        def read(conn: sqlite3.Connection) -> list[KeyRecord]:
            args: tuple[str, ...] = ()
            if after is None:
                sql = "SELECT record FROM keys"
            else:
                sql = (
                    "SELECT record FROM keys WHERE (created_at, id) < "
                    "(SELECT created_at, id FROM keys WHERE id = ?)"
                )
                args = (after,)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            return [decode_record(r[0]) for r in conn.execute(sql, (*args, limit))]

        return await self.database.run(read, writes=False)

    async def put_key(self, record: KeyRecord) -> None:
        def update(conn: sqlite3.Connection) -> None:
            changed = conn.execute(
                "UPDATE keys SET record = ? WHERE id = ?", (encode_record(record), record.id)
            ).rowcount
            if not changed:
                raise KeyNotFoundError(record.id)
            conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'keys_version'"
            )

        await self.database.run(lambda conn: transaction(conn, update))

    async def _version(self) -> str:
        def read(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT value FROM meta WHERE name = 'keys_version'").fetchone()
            return str(row[0])

        return await self.database.run_here(read, writes=False)

    async def changes(self) -> AsyncIterator[str]:
        seen: str | None = None
        while not self._closed.is_set():
            try:
                version = await self._version()
            except StoreUnavailableError:
                version = None  # unknown: whatever happened meanwhile, start over when back
            if version != seen:
                if seen is not None:
                    yield ALL_KEYS
                seen = version
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), CHANGE_POLL_S)

    async def append_usage(self, records: Sequence[UsageRecord]) -> None:
        await self.database.run(lambda conn: insert_usage(conn, records))

    async def usage_rollup(self, query: UsageQuery) -> list[UsageRow]:
        return await self.database.run(lambda conn: roll_up_usage(conn, query), writes=False)

    async def admit(self, key_id: str, admission: Admission) -> Decision:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Admitted] = loop.create_future()
        self._admitting.append((key_id, admission, future))
        if not self._turn_open:
            # The first admission of a loop turn goes at once: a lone request waits for
            # nothing. Those after it in the same turn wait for the next one, together.
            self._turn_open = True
            loop.call_soon(self._admit_now)
            self._send_admissions()
        decision, slot = await future  # at once when it was sent at once on this connection
        if slot is not None:
            remember_slot(self._slots, admission.request_id, slot)
        return decision

    def settle(self, key_id: str, settlement: Settlement) -> asyncio.Future[None]:
        return self._queue(key_id, settlement, self._slots.pop(settlement.request_id, None))

    def _queue(self, key_id: str, settlement: Settlement, slot: int | None) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((key_id, settlement, slot, future))
        if self._timer is None:
            # Not cancelled when an admission takes the settlements first: one timer per
            # SETTLE_DEFER_S at most, however many requests settle meanwhile.
            self._timer = loop.call_later(SETTLE_DEFER_S, self._settle_now)
        return future

    def _take_pending(self) -> Pending:
        pending, self._pending = self._pending, []
        return pending

    def _settle_now(self) -> None:
        self._timer = None
        if self._pending:
            task = asyncio.get_running_loop().create_task(self._apply(self._take_pending(), []))
            task.add_done_callback(_ignore_failure)  # the settlements' own futures carry it

    def _admit_now(self) -> None:
        """The loop turn is over: the admissions that came after its first go together."""
        self._turn_open = False
        self._send_admissions()

    def _send_admissions(self) -> None:
        """The admissions waiting and the settlements, in one transaction on the loop's
        connection when it can take it at once, else in a task that waits for it."""
        admitting = [each for each in self._admitting if not each[2].done()]  # callers gone
        self._admitting = []
        if not admitting:
            return
        pending = self._take_pending()
        work = _batch(pending, admitting)
        try:
            admitted = self.database.try_here(lambda conn: transaction(conn, work))
        except Exception as exc:
            self._failed(pending, admitting, exc)
            return
        if isinstance(admitted, NotHere):
            task = asyncio.get_running_loop().create_task(self._apply(pending, admitting))
            task.add_done_callback(_ignore_failure)  # the callers' own futures carry it
            return
        self._answer(pending, admitting, admitted)

    async def _apply(self, pending: Pending, admitting: Admitting) -> None:
        """The pending settlements, then the admissions, in one transaction."""
        if not pending and not admitting:
            return
        work = _batch(pending, admitting)
        try:
            admitted = await self.database.run_here(
                lambda conn: transaction(conn, work), writes=True
            )
        except BaseException as exc:
            failed = exc if isinstance(exc, Exception) else StoreUnavailableError(repr(exc))
            self._failed(pending, admitting, failed)
            raise
        self._answer(pending, admitting, admitted)

    def _answer(self, pending: Pending, admitting: Admitting, admitted: list[Admitted]) -> None:
        for *_, settled in pending:
            if not settled.done():
                settled.set_result(None)
        for (key_id, admission, future), (decision, slot) in zip(admitting, admitted, strict=True):
            if not future.done():
                future.set_result((decision, slot))
            elif decision.admitted:
                # The caller left while its admission was made: give back its lease at once
                # (its reservation stands, as for any request whose usage never came).
                released = self._queue(key_id, _abandoned(admission, decision), slot)
                released.add_done_callback(_ignore_failure)  # nobody waits for it

    def _failed(self, pending: Pending, admitting: Admitting, exc: Exception) -> None:
        for *_, future in pending:
            if not future.done():
                future.set_exception(exc)
        for *_, admitted_future in admitting:
            if not admitted_future.done():
                admitted_future.set_exception(exc)

    async def refresh_leases(self, key_id: str, request_ids: Sequence[str], ttl_s: float) -> None:
        def refresh(conn: sqlite3.Connection) -> None:
            until = time.time() + ttl_s
            conn.executemany(
                "UPDATE key_leases SET expires_at = ? WHERE key_id = ? AND request_id = ?",
                [(until, key_id, request_id) for request_id in request_ids],
            )

        await self.database.run(lambda conn: transaction(conn, refresh))


def _slot_width(window_s: float) -> float:
    return window_s / SLOTS


def _window(conn: sqlite3.Connection, key_id: str, now: float, window_s: float) -> Window:
    """The window's (requests, tokens, end of its oldest slot) at `now`.

    A slot counts until its end plus `window_s` has passed, so an entry stays between 60 and
    61 seconds (never less: no window of 60 s ever holds more than the limit). The sums come
    from the key's TOTALS row, two rows read instead of summing 60; when a slot has left the
    window (about once a slot width per busy key), or the row is missing, the old slots are
    deleted and the row is counted again from the slots that remain.
    """
    width = _slot_width(window_s)
    first = math.floor((now - window_s) / width)  # the oldest slot still in the window
    rows = conn.execute(_HEAD_SQL, (key_id,)).fetchall()
    if len(rows) == 2 and rows[0][0] == TOTALS and rows[1][0] >= first:
        (_, requests, tokens), (oldest, _, _) = rows
    elif len(rows) == 1 and rows[0][0] == TOTALS and rows[0][1] == 0 and rows[0][2] == 0:
        requests, tokens, oldest = 0, 0, None  # the key's window is empty
    else:
        requests, tokens, oldest = _recount(conn, key_id, first)
    return requests, tokens, None if oldest is None else (oldest + 1) * width


def _recount(conn: sqlite3.Connection, key_id: str, first: int) -> tuple[int, int, int | None]:
    # TOTALS is below any slot, so it goes too, and is written again from what is left.
    conn.execute("DELETE FROM key_slots WHERE key_id = ? AND slot < ?", (key_id, first))
    requests, tokens, oldest = conn.execute(_RECOUNT_SQL, (key_id,)).fetchone()
    conn.execute("INSERT INTO key_slots VALUES (?, ?, ?, ?)", (key_id, TOTALS, requests, tokens))
    return requests, tokens, oldest


# A key's row of this slot holds the sums of its slots in the window; real slots, counted from
# the epoch, are all far above it.
TOTALS = -1
_HEAD_SQL = "SELECT slot, requests, tokens FROM key_slots WHERE key_id = ? ORDER BY slot LIMIT 2"
_RECOUNT_SQL = (
    "SELECT coalesce(sum(requests), 0), coalesce(sum(tokens), 0), min(slot) "
    "FROM key_slots WHERE key_id = ?"
)
Window = tuple[int, int, float | None]


def _batch(
    pending: Pending, admitting: Admitting
) -> Callable[[sqlite3.Connection], list[Admitted]]:
    """One transaction's work: the settlements, then each admission in the order they came;
    the first admission carries the token corrections queued for its own key and slot."""

    def work(conn: sqlite3.Connection) -> list[Admitted]:
        now = time.time()
        if not admitting:
            for key_id, settlement, slot, _ in pending:
                _settle(conn, key_id, settlement, slot)
            return []
        key_id, admission, _ = admitting[0]
        carried = _settle_all_but_carried(conn, pending, key_id, _slot_of(admission, now))
        windows = _Windows(conn, now)
        admitted = [_admit(conn, key_id, admission, windows, carried)]
        for key_id, admission, _ in admitting[1:]:
            admitted.append(_admit(conn, key_id, admission, windows, 0))
        windows.write_all()
        return admitted

    return work


class _KeyWindow:
    """One key's window as a transaction's admissions see it, and what they added unwritten."""

    __slots__ = ("added_requests", "added_tokens", "oldest", "requests", "slot", "tokens")

    def __init__(self, slot: int, window: Window, carried: int) -> None:
        self.slot = slot
        self.requests, tokens, self.oldest = window
        self.tokens = tokens + carried
        self.added_requests, self.added_tokens = 0, carried


class _Windows:
    """The windows of one transaction's admissions: a key's is read once however many of its
    admissions the batch holds, and their counts are written once, after the last of them
    (or before a refusal reads the key's slots). Every admission of a batch shares its `now`,
    so a key's admissions in it share their slot."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self.now = now
        self._seen: dict[tuple[str, float], _KeyWindow] = {}

    def view(self, key_id: str, slot: int, window_s: float, carried: int) -> _KeyWindow:
        seen = self._seen.get((key_id, window_s))
        if seen is None:
            window = _window(self._conn, key_id, self.now, window_s)
            seen = self._seen[(key_id, window_s)] = _KeyWindow(slot, window, carried)
        else:
            seen.tokens += carried
            seen.added_tokens += carried
        return seen

    def add(self, seen: _KeyWindow, tokens: int, window_s: float) -> None:
        seen.requests += 1
        seen.tokens += tokens
        seen.added_requests += 1
        seen.added_tokens += tokens
        if seen.oldest is None:  # the window was empty: this slot is now its oldest
            seen.oldest = (seen.slot + 1) * _slot_width(window_s)

    def write(self, key_id: str, window_s: float) -> None:
        seen = self._seen.get((key_id, window_s))
        if seen is None:
            return
        if seen.added_requests:
            self._conn.execute(  # the slot's row and the key's TOTALS, left in place by `_window`
                "INSERT INTO key_slots VALUES (?1, ?2, ?3, ?4), (?1, -1, ?3, ?4) ON CONFLICT DO "
                "UPDATE SET requests = requests + excluded.requests, "
                "tokens = tokens + excluded.tokens",
                (key_id, seen.slot, seen.added_requests, seen.added_tokens),
            )
        elif seen.added_tokens:
            _correct_tokens(self._conn, key_id, seen.slot, seen.added_tokens)
        seen.added_requests, seen.added_tokens = 0, 0

    def write_all(self) -> None:
        for key_id, window_s in self._seen:
            self.write(key_id, window_s)


def _abandoned(admission: Admission, decision: Decision) -> Settlement:
    return Settlement(
        request_id=admission.request_id,
        budget_period=admission.budget_period,
        period=decision.period,
        release_lease=admission.max_parallel is not None,
    )


def _slot_of(admission: Admission, now: float) -> int | None:
    """The window slot an admission at `now` is counted in; None without rpm and tpm."""
    if admission.rpm is None and admission.tpm is None:
        return None
    return math.floor(now / _slot_width(admission.window_s))


def _settle_all_but_carried(
    conn: sqlite3.Connection, pending: Pending, key_id: str, slot: int | None
) -> int:
    """Settle `pending`, except the token corrections of the admitting key's current slot,
    whose sum is returned: the admission writes that slot's row anyway, so it carries them
    (two fewer statements per request in a steady stream of one key's requests)."""
    carried = 0
    for settled_key, settlement, settled_slot, _ in pending:
        tokens = True
        if slot is not None and settled_slot == slot and settled_key == key_id:
            carried += settlement.tokens_delta
            tokens = False
        _settle(conn, settled_key, settlement, settled_slot, tokens=tokens)
    return carried


def _admit(
    conn: sqlite3.Connection, key_id: str, admission: Admission, windows: _Windows, carried: int
) -> Admitted:
    """The decision at the batch's `now`; `carried`: token corrections for the current slot,
    not yet written, that the window counts as if they were."""
    now = windows.now
    requests, tokens, oldest, seen = 0, 0, None, None
    slot = _slot_of(admission, now)
    if slot is not None:
        seen = windows.view(key_id, slot, admission.window_s, carried)
        requests, tokens, oldest = seen.requests, seen.tokens, seen.oldest
    leases = 0
    if admission.max_parallel is not None:
        conn.execute("DELETE FROM key_leases WHERE key_id = ? AND expires_at <= ?", (key_id, now))
        (leases,) = conn.execute(
            "SELECT count(*) FROM key_leases WHERE key_id = ?", (key_id,)
        ).fetchone()
    period, used = period_index(admission.budget_period, now), 0.0
    if admission.budget_limit is not None:
        row = conn.execute(
            "SELECT period, used FROM key_budget WHERE key_id = ?", (key_id,)
        ).fetchone()
        used = row[1] if row is not None and row[0] == period else 0.0
    counters = Counters(now, requests, tokens, oldest, leases, used, period)
    width = _slot_width(admission.window_s)

    def entries() -> list[tuple[float, int]]:
        windows.write(key_id, admission.window_s)  # refused: the slots must show every count
        sql = "SELECT (slot + 1) * ?, tokens FROM key_slots WHERE key_id = ? AND slot >= ? "
        first = math.floor((now - admission.window_s) / width)
        return conn.execute(sql + "ORDER BY slot", (width, key_id, first)).fetchall()

    decision = decide(admission, counters, entries)
    if not decision.admitted:
        return decision, None
    if seen is not None:
        windows.add(seen, admission.tokens, admission.window_s)
    _reserve(conn, key_id, admission, now, used)
    return decision, slot


def _reserve(
    conn: sqlite3.Connection, key_id: str, admission: Admission, now: float, used: float
) -> None:
    """The lease and the budget; the window's counts are `_Windows`' to write."""
    if admission.max_parallel is not None:
        conn.execute(
            "INSERT INTO key_leases VALUES (?, ?, ?)",
            (key_id, admission.request_id, now + admission.lease_ttl_s),
        )
    if admission.budget_limit is not None:
        conn.execute(
            "INSERT INTO key_budget VALUES (?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
            "period = excluded.period, used = excluded.used",
            (key_id, period_index(admission.budget_period, now), used + admission.budget_cost),
        )


def _correct_tokens(conn: sqlite3.Connection, key_id: str, slot: int, delta: int) -> None:
    # A slot already gone from the window (or forgotten) has nothing left to correct, and
    # then neither has TOTALS, which no longer counts it.
    sql = "UPDATE key_slots SET tokens = tokens + ? WHERE key_id = ? AND slot = ?"
    if conn.execute(sql, (delta, key_id, slot)).rowcount:
        conn.execute(sql, (delta, key_id, TOTALS))


def _settle(
    conn: sqlite3.Connection,
    key_id: str,
    settlement: Settlement,
    slot: int | None,
    *,
    tokens: bool = True,
) -> None:
    if tokens and settlement.tokens_delta and slot is not None:
        _correct_tokens(conn, key_id, slot, settlement.tokens_delta)
    if settlement.budget_delta:
        conn.execute(
            "UPDATE key_budget SET used = used + ? WHERE key_id = ? AND period = ?",
            (settlement.budget_delta, key_id, settlement.period),
        )
    if settlement.release_lease:
        conn.execute(
            "DELETE FROM key_leases WHERE key_id = ? AND request_id = ?",
            (key_id, settlement.request_id),
        )
