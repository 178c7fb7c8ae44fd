"""Running a handler's work so that a client who leaves cancels it (and the upstream call)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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


async def guarded(exchange: Exchange, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it (and so the upstream call) if the client disconnects.

    | who cancels                | known by                      | outcome                    |
    |----------------------------|-------------------------------|----------------------------|
    | client, via our server     | the scope's `DisconnectSignal` | `ClientDisconnectedError`: |
    |                            |                               | nothing sent, logged 499   |
    | client, other ASGI servers | a watcher task on `receive()` | the same                   |
    | client, gone before start  | `signal.disconnected` at entry | the same; work never runs  |
    | server, SHUTDOWN_GRACE_S   | a cancel with neither mark    | `ShuttingDownError`: 503,  |
    |   ran out                  |                               | or a stream's error event  |

    The cancellation is always consumed (`uncancel`) and turned into one of those errors, so
    the task can still send its answer; the signal or watcher is detached in every case.
    """
    task = asyncio.current_task()
    assert task is not None
    signal: DisconnectSignal | None = exchange.scope.get(DISCONNECT_SIGNAL)
    watcher = None
    if signal is None:
        watcher = asyncio.create_task(_watch_disconnect(exchange.receive, task, exchange))
    elif signal.disconnected:
        raise ClientDisconnectedError
    else:
        signal.task = task
    try:
        await work
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
