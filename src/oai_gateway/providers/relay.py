"""An upstream stream relayed to the client: `frames` (SSE bytes to normalised SSE frames) for
chat and legacy completion streams, `events` (SSE bytes to event objects) for a translator.

Both work one upstream read at a time: events that arrived together leave together (one write
instead of one per event), and nothing waits for more input. Each is one generator over the
upstream's reads: per read, plain functions parse and shape the events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import NamedTuple

import orjson

from oai_gateway.errors import UpstreamError
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers.base import Json
from oai_gateway.upstream.client import UpstreamResponse
from oai_gateway.wire.normalize.stream import ChunkNormalizer, UpstreamStreamError
from oai_gateway.wire.sse import DONE, DONE_EVENT, SSEParser, SSEProtocolError, frame


class EventBatch(NamedTuple):
    """The events of one upstream read; `last` when `data: [DONE]` ended the stream in it."""

    events: list[Json]
    last: bool


async def events(response: UpstreamResponse, label: str) -> AsyncGenerator[EventBatch, None]:
    """The upstream's events, one batch per read, ending after `[DONE]`.

    Events before a malformed one are still yielded, then the error is raised; a stream that
    ends without `[DONE]` is an error too. The upstream response is closed in every case.
    """
    parser = SSEParser()
    try:
        async for part in response.chunks():
            batch, failure = _batch(parser, part, label)
            if batch.events or batch.last:
                yield batch
            if failure is not None:
                raise failure
            if batch.last:
                return
    finally:
        response.close()
    raise UpstreamError(f"{label} ended the stream before it was complete.")


def _batch(parser: SSEParser, part: bytes, label: str) -> tuple[EventBatch, UpstreamError | None]:
    """The events of one upstream read, and the failure that ended them early, if any."""
    found: list[Json] = []
    try:
        for event, data in parser.feed(part):
            if data == DONE:
                return EventBatch(found, last=True), None
            found.append(_event_object(event, data, label))
    except SSEProtocolError as exc:
        return EventBatch(found, last=False), UpstreamError(
            f"{label} sent an invalid event stream: {exc}."
        )
    except UpstreamError as exc:
        return EventBatch(found, last=False), exc
    return EventBatch(found, last=False), None


def _event_object(event: bytes, data: bytes, label: str) -> Json:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{label} sent a stream event that is not JSON.") from None
    if not isinstance(chunk, dict):
        raise UpstreamError(f"{label} sent a stream event that is not an object.")
    if event == b"error" and "error" not in chunk:
        chunk = {"error": chunk}
    return chunk


async def frames(
    response: UpstreamResponse,
    normalizer: ChunkNormalizer,
    *,
    label: str,
    redactor: Redactor,
    finish: bool = True,
) -> AsyncGenerator[bytes, None]:
    """The upstream's events normalised and framed, one piece per upstream read, ending after
    `[DONE]`; with `finish`, the usage chunk and `data: [DONE]` end the last piece. A malformed
    event or an error event ends the stream with an error, after the chunks before it; so does
    a stream that ends without `[DONE]`. The upstream response is closed in every case."""
    parser = SSEParser()
    try:
        async for part in response.chunks():
            batch, failure = _batch(parser, part, label)
            shaped, failure = _shaped(batch.events, normalizer, label, redactor, failure)
            if batch.last and finish and failure is None:
                final = normalizer.usage_chunk()
                if final is not None:
                    shaped.append(frame(final))
                shaped.append(DONE_EVENT)
            if shaped:
                yield b"".join(shaped)
            if failure is not None:
                raise failure
            if batch.last:
                return
    finally:
        response.close()
    raise UpstreamError(f"{label} ended the stream before it was complete.")


def _shaped(
    found: list[Json],
    normalizer: ChunkNormalizer,
    label: str,
    redactor: Redactor,
    failure: UpstreamError | None,
) -> tuple[list[bytes], UpstreamError | None]:
    """The frames of one read's events, and the failure that ends the stream after them: an
    error event inside it comes first, then whatever stopped reading the events."""
    shaped: list[bytes] = []
    try:
        for event in found:
            chunk = normalizer.chunk(event)
            if chunk is not None:
                shaped.append(frame(chunk))
    except UpstreamStreamError as exc:
        message = redactor.redact(str(exc))
        return shaped, UpstreamError(f"{label} failed mid-stream: {message}")
    return shaped, failure
