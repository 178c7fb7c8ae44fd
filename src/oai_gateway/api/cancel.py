"""Running a handler's work so that a client who leaves cancels it (and the upstream call)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from oai_gateway.api.exchange import Exchange
from oai_gateway.errors import ClientDisconnectedError, ShuttingDownError
from oai_gateway.server.asgi import DISCONNECT_SIGNAL, DisconnectSignal, Receive

_SHUTTING_DOWN = (
    "The gateway is shutting down and its grace period ended before this request finished; "
    "retry it."
)


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], exchange: Exchange) -> None:
    """Cancel the request's task if the client leaves before its response is complete."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not exchange.context.response_complete:
                exchange.respond.client_left()
                task.cancel()
            return


def _attach(
    exchange: Exchange, task: asyncio.Task[Any]
) -> tuple[DisconnectSignal | None, asyncio.Task[None] | None]:
    """The server's signal pointed at `task`, or, without one, a watcher task."""
    signal: DisconnectSignal | None = exchange.scope.get(DISCONNECT_SIGNAL)
    if signal is None:
        return None, asyncio.create_task(_watch_disconnect(exchange.receive, task, exchange))
    if signal.disconnected:
        raise ClientDisconnectedError
    signal.task = task
    return signal, None


async def guarded(exchange: Exchange, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work()`, cancelling it (and so the upstream call) if the client disconnects.

    | cancelled by              | known from                     | becomes                    |
    |---------------------------|--------------------------------|----------------------------|
    | client, on our server     | the scope's `DisconnectSignal` | `ClientDisconnectedError`  |
    | client, on other servers  | the watcher on `receive()`     | `ClientDisconnectedError`  |
    | client, before work began | `signal.disconnected` at entry | the same; work never runs  |
    | server, grace period over | neither mark                   | `ShuttingDownError`        |

    A `ClientDisconnectedError` sends nothing (logged as 499); a `ShuttingDownError` is a 503
    the SDKs retry elsewhere, or a stream's error event once headers are out. The cancellation
    is always consumed (`uncancel`) so the task can still send; the signal or watcher is
    detached in every case.
    """
    task = asyncio.current_task()
    assert task is not None
    # `work` is called only once attached: a client gone before then leaves no coroutine
    # behind that was never awaited.
    signal, watcher = _attach(exchange, task)
    try:
        await work()
    except asyncio.CancelledError:
        if signal is not None and signal.disconnected:
            exchange.respond.client_left()
        task.uncancel()
        if exchange.context.client_disconnected:
            raise ClientDisconnectedError from None
        raise ShuttingDownError(_SHUTTING_DOWN) from None
    finally:
        if watcher is not None:
            watcher.cancel()
        if signal is not None:
            signal.task = None
