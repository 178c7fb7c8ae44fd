"""The usage ledger's writer: records leave the request path at once and reach the store in
batches, from one background task per process.

`record` only appends to a bounded in-memory queue, so a slow or unreachable store never delays
a response. The flush task writes whatever has accumulated every `interval_s` (sooner once a
whole batch is waiting); a failed write keeps its records at the head of the queue and is
retried. `aclose` (lifespan shutdown, which SIGTERM reaches) writes everything still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from oai_gateway.keys.usage import UsageRecord

_log = logging.getLogger("oai_gateway.ledger")

DEFAULT_CAPACITY = 100_000
DEFAULT_BATCH = 1_000
DEFAULT_INTERVAL_S = 0.5
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_SHUTDOWN_ATTEMPTS = 3


class UsageSink(Protocol):
    """Where batches go: the store's `append_usage`."""

    async def append_usage(self, records: Sequence[UsageRecord]) -> None: ...


class Ledger:
    def __init__(
        self,
        sink: UsageSink,
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = DEFAULT_BATCH,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._sink = sink
        self._capacity = capacity
        self._batch_size = batch_size
        self.interval_s = interval_s
        self._pending: deque[UsageRecord] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._closing = False
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: UsageRecord) -> None:
        """Queue one record; never blocks. A full queue (the store down for long) drops it."""
        if len(self._pending) >= self._capacity:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _log.warning("usage ledger queue full: %d records dropped so far", self.dropped)
            return
        self._pending.append(record)
        if len(self._pending) >= self._batch_size:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-ledger")

    async def aclose(self) -> None:
        """Stop the flush task and write everything still queued (a few attempts)."""
        if self._task is not None:
            # Not cancelled: a batch being written finishes (or is put back) first.
            self._closing = True
            self._wakeup.set()
            await self._task
            self._task = None
        for _ in range(_SHUTDOWN_ATTEMPTS):
            if await self.flush():
                return
        if self._pending:
            _log.error(
                "usage ledger: %d records could not be written at shutdown", len(self._pending)
            )

    async def flush(self) -> bool:
        """Write everything queued now; False if the store refused a batch (kept for later)."""
        while self._pending:
            count = min(len(self._pending), self._batch_size)
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                await self._sink.append_usage(batch)
            except asyncio.CancelledError:
                self._pending.extendleft(reversed(batch))
                raise
            except Exception as exc:
                self._pending.extendleft(reversed(batch))
                self._failures += 1
                _log.warning(
                    "usage ledger: writing %d records failed (%s); retrying",
                    len(batch),
                    type(exc).__name__,
                )
                return False
            self._failures = 0
            self.written += count
        return True

    async def _run(self) -> None:
        delay = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)
            self._wakeup.clear()
            if self._closing:
                return
            if await self.flush():
                delay = self.interval_s
            else:
                delay = _RETRY_S[min(self._failures, len(_RETRY_S)) - 1]
