"""Responses API streams relayed to the client (SPEC §9): a native upstream's events through
the normaliser, or a chat stream through the translating state machine.

Both end the way OpenAI's streams end: a final `response.completed` / `response.incomplete`
(or the upstream's own failure event), never `data: [DONE]`. A failure after the first event
ends the stream with one `response.failed` whose `error.code` is one of OpenAI's codes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from oai_gateway.errors import GatewayError, UpstreamError
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers import relay
from oai_gateway.upstream.client import UpstreamResponse
from oai_gateway.wire.responses.events import ChatStreamTranslator
from oai_gateway.wire.responses.framing import frame
from oai_gateway.wire.responses.native import NativeEventNormalizer
from oai_gateway.wire.responses.objects import error_code
from oai_gateway.wire.sse import SSEParser, SSEProtocolError

Json = dict[str, Any]
_ENDINGS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


def _failure_code(exc: GatewayError) -> str:
    return error_code(429 if exc.http_status == 429 else exc.upstream_status)


async def native_frames(
    response: UpstreamResponse, normalizer: NativeEventNormalizer, label: str
) -> AsyncGenerator[bytes, None]:
    """The upstream's events, numbered and shaped, one piece per upstream read."""
    parser = SSEParser()
    ended = False
    pieces: list[bytes] = []
    try:
        async for part in response.chunks():
            for kind, data in parser.feed(part):
                pieces.append(normalizer.event(kind, data))
                ended = ended or normalizer.last_type in _ENDINGS
            if pieces:
                yield b"".join(pieces)
                pieces = []
            if ended:
                # The final event ends the stream for the client now: clients hang up as soon
                # as they have it, and the upstream may keep its connection open a while.
                return
        if not ended:
            raise UpstreamError(f"{label} ended the stream before it was complete.")
    except SSEProtocolError as exc:
        pieces.append(normalizer.failed("server_error", f"{label} sent an invalid stream: {exc}."))
        yield b"".join(pieces)
    except GatewayError as exc:
        if not ended:  # events numbered before the failure still go out before it
            pieces.append(normalizer.failed(_failure_code(exc), exc.message))
        if pieces:
            yield b"".join(pieces)
    finally:
        response.close()


async def translated_frames(
    response: UpstreamResponse,
    translator: ChatStreamTranslator,
    *,
    label: str,
    redactor: Redactor,
) -> AsyncGenerator[bytes, None]:
    """Responses events for the upstream's chat stream. `response.created` leaves with the first
    upstream chunk, so that an upstream that fails before answering can still be retried."""
    events: list[Json] = []
    batches = relay.events(response, label)
    try:
        async for batch in batches:
            events = translator.start() if translator.fresh else []
            for chunk in batch.events:
                _raise_stream_error(chunk, label, redactor)
                events.extend(translator.chunk(chunk))
            if batch.last:
                events.extend(translator.finish())
            if events:
                yield b"".join(frame(event) for event in events)
            events = []
    except GatewayError as exc:
        # Events numbered before the failure still go out, in order, before it.
        if translator.fresh:
            events = translator.start()
        events.extend(translator.fail(_failure_code(exc), exc.message))
        yield b"".join(frame(event) for event in events)
    finally:
        await batches.aclose()


def _raise_stream_error(chunk: Json, label: str, redactor: Redactor) -> None:
    """An error object inside the chat stream is the upstream failing mid-stream."""
    error = chunk.get("error")
    if not error:
        return
    fields = error if isinstance(error, dict) else {"message": error}
    message = redactor.redact(str(fields.get("message") or "the upstream reported an error"))
    failure = UpstreamError(f"{label} failed mid-stream: {message}")
    if fields.get("code") == "rate_limit_exceeded" or fields.get("type") == "rate_limit_error":
        failure.upstream_status = 429
    raise failure
