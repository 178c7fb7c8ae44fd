"""`memory://`: the Store in this process's memory, for one process only (tests, trials)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from oai_gateway.keys.admission import Counters, decide
from oai_gateway.keys.records import KeyRecord, period_index
from oai_gateway.keys.secrets import new_pepper
from oai_gateway.keys.store import (
    Admission,
    Decision,
    KeyExistsError,
    KeyNotFoundError,
    Settlement,
)
from oai_gateway.keys.usage import UsageQuery, UsageRecord, UsageRow, roll_up


@dataclass(slots=True)
class _Entry:
    at: float
    request_id: str
    tokens: int


@dataclass(slots=True)
class _KeyState:
    window: deque[_Entry] = field(default_factory=deque)
    by_request: dict[str, _Entry] = field(default_factory=dict)
    tokens: int = 0
    leases: dict[str, float] = field(default_factory=dict)  # request id -> expiry
    period: int = -1
    budget_used: float = 0.0

    def prune(self, now: float, window_s: float) -> None:
        while self.window and self.window[0].at <= now - window_s:
            entry = self.window.popleft()
            del self.by_request[entry.request_id]
            self.tokens -= entry.tokens
        for request_id in [r for r, until in self.leases.items() if until <= now]:
            del self.leases[request_id]


class MemoryStore:
    settles_later = False

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._usage: list[UsageRecord] = []
        self._states: dict[str, _KeyState] = {}
        self._pepper = new_pepper()
        self._watchers: list[asyncio.Queue[str | None]] = []

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        for queue in self._watchers:
            queue.put_nowait(None)

    async def pepper(self) -> str:
        return self._pepper

    async def create_key(self, record: KeyRecord) -> None:
        if record.id in self._records:
            raise KeyExistsError(record.id)
        self._records[record.id] = record

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    async def list_keys(self, limit: int, after: str | None = None) -> list[KeyRecord]:
        ordered = sorted(self._records.values(), key=lambda r: (r.created_at, r.id), reverse=True)
        if after is not None:
            marker = self._records.get(after)
            if marker is None:
                return []
            ordered = [r for r in ordered if (r.created_at, r.id) < (marker.created_at, marker.id)]
        return ordered[:limit]

    async def put_key(self, record: KeyRecord) -> None:
        if record.id not in self._records:
            raise KeyNotFoundError(record.id)
        self._records[record.id] = record
        for queue in self._watchers:
            queue.put_nowait(record.id)

    async def changes(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while (key_id := await queue.get()) is not None:
                yield key_id
        finally:
            self._watchers.remove(queue)

    async def append_usage(self, records: Sequence[UsageRecord]) -> None:
        self._usage.extend(records)

    async def usage_rollup(self, query: UsageQuery) -> list[UsageRow]:
        return roll_up(self._usage, query)

    async def admit(self, key_id: str, admission: Admission) -> Decision:
        now = time.time()
        state = self._states.setdefault(key_id, _KeyState())
        state.prune(now, admission.window_s)
        period = period_index(admission.budget_period, now)
        if state.period != period:
            state.period, state.budget_used = period, 0.0
        counters = Counters(
            now,
            len(state.window),
            state.tokens,
            state.window[0].at if state.window else None,
            len(state.leases),
            state.budget_used,
            period,
        )
        decision = decide(admission, counters, lambda: [(e.at, e.tokens) for e in state.window])
        if decision.admitted:
            _reserve(state, admission, now)
        return decision

    async def refresh_leases(self, key_id: str, request_ids: Sequence[str], ttl_s: float) -> None:
        state = self._states.get(key_id)
        until = time.time() + ttl_s
        for request_id in request_ids:
            if state is not None and request_id in state.leases:
                state.leases[request_id] = until

    async def settle(self, key_id: str, settlement: Settlement) -> None:
        state = self._states.get(key_id)
        if state is None:
            return
        entry = state.by_request.get(settlement.request_id)
        if entry is not None:
            entry.tokens += settlement.tokens_delta
            state.tokens += settlement.tokens_delta
        if settlement.period == state.period:
            state.budget_used += settlement.budget_delta
        if settlement.release_lease:
            state.leases.pop(settlement.request_id, None)


def _reserve(state: _KeyState, admission: Admission, now: float) -> None:
    if admission.rpm is not None or admission.tpm is not None:
        entry = _Entry(now, admission.request_id, admission.tokens)
        state.window.append(entry)
        state.by_request[admission.request_id] = entry
        state.tokens += admission.tokens
    if admission.max_parallel is not None:
        state.leases[admission.request_id] = now + admission.lease_ttl_s
    if admission.budget_limit is not None:
        state.budget_used += admission.budget_cost
