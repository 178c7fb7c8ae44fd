"""The ledger's writer: batches off the request path, retries, and flushes everything on close."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from oai_gateway.keys.ledger import Ledger
from oai_gateway.keys.usage import UsageRecord

WAIT_S = 5.0


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def record(n: int) -> UsageRecord:
    return UsageRecord(
        key_id="static-1",
        route="/{provider}/v1/chat/completions",
        provider="custom",
        model="m",
        status=200,
        stream=False,
        input_tokens=n,
        request_id=f"r{n}",
    )


class Sink:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[UsageRecord]] = []
        self.failures = failures
        self.attempts = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def append_usage(self, records: Sequence[UsageRecord]) -> None:
        self.attempts += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store down")
        self.batches.append(list(records))

    @property
    def written(self) -> list[int]:
        return [r.input_tokens for batch in self.batches for r in batch]


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():  # noqa: ASYNC110 - polls state the tests cannot await
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


@in_loop
async def test_records_reach_the_sink_in_order_in_batches() -> None:
    sink = Sink()
    ledger = Ledger(sink, batch_size=4, interval_s=0.01)
    ledger.start()
    for n in range(10):
        ledger.record(record(n))
    await until(lambda: len(sink.written) == 10, "all written")
    assert sink.written == list(range(10))
    assert all(len(batch) <= 4 for batch in sink.batches)
    assert ledger.written == 10
    await ledger.aclose()


@in_loop
async def test_record_never_waits_for_the_sink() -> None:
    sink = Sink()
    sink.gate = asyncio.Event()  # the store hangs
    ledger = Ledger(sink, batch_size=2, interval_s=0.01)
    ledger.start()
    ledger.record(record(1))
    await until(sink.entered.is_set, "flush started")
    for n in range(2, 50):
        ledger.record(record(n))  # returns at once although the write is stuck
    assert ledger.pending == 48
    sink.gate.set()
    await ledger.aclose()
    assert sorted(sink.written) == list(range(1, 50))


@in_loop
async def test_a_failed_write_is_retried_without_losing_or_repeating_records() -> None:
    sink = Sink(failures=2)
    ledger = Ledger(sink, batch_size=100, interval_s=0.01)
    ledger.start()
    for n in range(5):
        ledger.record(record(n))
    await until(lambda: len(sink.written) == 5, "written after retries")
    assert sink.attempts == 3
    assert sink.written == list(range(5))
    await ledger.aclose()


@in_loop
async def test_close_writes_everything_still_queued() -> None:
    sink = Sink()
    ledger = Ledger(sink, batch_size=1000, interval_s=3600)  # the timer never fires
    ledger.start()
    for n in range(2500):
        ledger.record(record(n))
    await ledger.aclose()
    assert sink.written == list(range(2500))
    assert ledger.pending == 0


@in_loop
async def test_close_waits_for_a_write_in_progress() -> None:
    sink = Sink()
    sink.gate = asyncio.Event()
    ledger = Ledger(sink, batch_size=1, interval_s=0.01)
    ledger.start()
    ledger.record(record(7))
    await until(sink.entered.is_set, "flush started")
    closing = asyncio.create_task(ledger.aclose())
    await asyncio.sleep(0.02)
    assert not closing.done()
    sink.gate.set()
    await closing
    assert sink.written == [7]


@in_loop
async def test_close_gives_up_after_a_few_attempts_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink(failures=1000)
    ledger = Ledger(sink, interval_s=3600)
    ledger.record(record(1))
    await ledger.aclose()
    assert sink.attempts == 3
    assert "could not be written at shutdown" in caplog.text


@in_loop
async def test_a_full_queue_drops_new_records_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    ledger = Ledger(sink, capacity=3, interval_s=3600)
    for n in range(5):
        ledger.record(record(n))
    assert ledger.dropped == 2
    assert "queue full" in caplog.text
    await ledger.aclose()
    assert sink.written == [0, 1, 2]


@in_loop
async def test_a_cancelled_write_puts_its_batch_back() -> None:
    sink = Sink()
    sink.gate = asyncio.Event()
    ledger = Ledger(sink, interval_s=3600)
    ledger.record(record(1))
    flushing = asyncio.create_task(ledger.flush())
    await until(sink.entered.is_set, "write started")
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert ledger.pending == 1
    sink.gate.set()
    assert await ledger.flush()
    assert sink.written == [1]
