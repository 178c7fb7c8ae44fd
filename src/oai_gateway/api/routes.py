"""Transport-only handlers for /{provider}/v1/* and the health endpoints.

Each handler parses, authenticates, resolves the provider, calls it and renders the answer;
what an answer means is the provider's business, how it is shaped is the wire package's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from oai_gateway.api.auth import Authenticator
from oai_gateway.api.body import read_body
from oai_gateway.errors import (
    INTERNAL_ERROR,
    ClientDisconnectedError,
    GatewayError,
    MethodNotAllowedError,
    RouteNotFoundError,
    ShuttingDownError,
    UnsupportedOperationError,
    UpstreamError,
)
from oai_gateway.observability.context import RequestContext, request_context
from oai_gateway.observability.metrics import CONTENT_TYPE, GatewayMetrics
from oai_gateway.providers.base import CallContext, ChunkStream, Json, Operation, Provider
from oai_gateway.providers.registry import ProviderRegistry, ensure_model_allowed
from oai_gateway.server.asgi import (
    DISCONNECT_SIGNAL,
    JSON_CONTENT_TYPE,
    DisconnectSignal,
    Headers,
    Receive,
    Scope,
    Send,
    send_bytes,
)
from oai_gateway.wire import requests
from oai_gateway.wire.normalize import EncodedJson
from oai_gateway.wire.sse import frame

_log = logging.getLogger("oai_gateway")

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-accel-buffering", b"no"),
]
HEALTHY = orjson.dumps({"status": "ok"})
_SHUTTING_DOWN = (
    "The gateway is shutting down and its grace period ended before this request finished; "
    "retry it."
)
OPENAPI_DOCUMENT = resources.files("oai_gateway").joinpath("openapi.json").read_bytes()


@dataclass(frozen=True, slots=True)
class Call:
    """One request's parsed pieces, handed from dispatch to a handler."""

    scope: Scope
    receive: Receive
    send: Send
    context: RequestContext
    provider: Provider


Handler = Callable[["Router", Call], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    operation: Operation
    handler: Handler


async def _watch_disconnect(
    receive: Receive, task: asyncio.Task[Any], context: RequestContext
) -> None:
    """Cancel the request's task if the client leaves before its response is complete."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not context.response_complete:
                context.client_disconnected = True
                task.cancel()
            return


class Router:
    def __init__(
        self,
        registry: ProviderRegistry,
        auth: Authenticator,
        max_body: int,
        metrics: GatewayMetrics,
    ) -> None:
        self._registry = registry
        self._auth = auth
        self._max_body = max_body
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        context = request_context(scope)
        try:
            await self._dispatch(scope, receive, send, context)
        except GatewayError as exc:
            await self._error(send, context, exc)
        except ClientDisconnectedError:
            context.client_disconnected = True
        except Exception:
            _log.exception("unexpected error", extra={"request_id": context.request_id})
            await self._error(send, context, INTERNAL_ERROR)

    async def _error(self, send: Send, context: RequestContext, exc: GatewayError) -> None:
        if isinstance(exc, UpstreamError):
            context.upstream_error = exc.code
        elif exc.upstream_status is not None:
            context.upstream_error = f"http_{exc.upstream_status}"
        if context.response_started:
            # Headers are gone: all that is left is to say so in the stream and stop.
            if not context.response_complete:
                context.response_complete = True
                await send(
                    {
                        "type": "http.response.body",
                        "body": frame(exc.envelope()),
                        "more_body": False,
                    }
                )
            return
        headers = [JSON_CONTENT_TYPE, (b"server-timing", context.server_timing())]
        headers.extend((k.encode(), v.encode()) for k, v in exc.headers.items())
        context.response_complete = True
        await send_bytes(send, exc.http_status, exc.body(), headers)

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, context: RequestContext
    ) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path in ("/healthz", "/readyz"):
            await self._health(scope, send, context, path, method)
            return
        if path == "/metrics" and method == "GET":
            context.route = path
            self._auth.check(scope)
            body = self._metrics.exposition()
            headers = [(b"content-type", CONTENT_TYPE)]
            context.response_complete = True
            await send_bytes(send, 200, body, headers)
            return
        if path == "/openapi.json" and method == "GET":
            context.route = path
            await self._json(send, context, 200, OPENAPI_DOCUMENT)
            return
        name, _, rest = path[1:].partition("/")
        if not name or not rest.startswith("v1/"):
            raise RouteNotFoundError(f"Unknown path: {method} {path[:200]}.")
        self._auth.check(scope)
        route, model_id = _match(rest[3:])
        if route is None:
            raise RouteNotFoundError(f"Unknown path: {method} {path[:200]}.")
        context.route = route.template
        if method != route.method:
            raise MethodNotAllowedError(
                f"{route.template} accepts {route.method}, not {method}.",
                headers={"allow": route.method},
            )
        provider = self._registry.get(name)
        # Only configured names become metric labels: a URL must not mint new series.
        context.provider = name
        if route.operation in provider.unsupported:
            raise UnsupportedOperationError(
                f"Provider '{name}' does not support {route.operation}.",
            )
        call = Call(scope, receive, send, context, provider)
        if model_id is not None:
            await self._retrieve_model(call, model_id)
        else:
            await route.handler(self, call)

    async def _health(
        self, scope: Scope, send: Send, context: RequestContext, path: str, method: str
    ) -> None:
        context.route = path
        if method != "GET":
            raise MethodNotAllowedError(f"{path} accepts GET.", headers={"allow": "GET"})
        if path == "/healthz":
            await self._json(send, context, 200, HEALTHY)
            return
        self._auth.check(scope)
        problems = await self._registry.readiness()
        ready = any(problem is None for problem in problems.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "providers": {
                name: {"ready": problem is None, "detail": problem}
                for name, problem in problems.items()
            },
        }
        await self._json(send, context, 200 if ready else 503, orjson.dumps(body))

    # -- rendering ----------------------------------------------------------------------------

    async def _json(self, send: Send, context: RequestContext, status: int, body: bytes) -> None:
        headers = [JSON_CONTENT_TYPE, (b"server-timing", context.server_timing())]
        context.response_complete = True
        await send_bytes(send, status, body, headers)

    async def _guarded(self, call: Call, work: Awaitable[None]) -> None:
        """Run `work`, cancelling it (and so the upstream call) if the client disconnects."""
        task = asyncio.current_task()
        assert task is not None
        signal: DisconnectSignal | None = call.scope.get(DISCONNECT_SIGNAL)
        watcher = None
        if signal is None:
            watcher = asyncio.create_task(_watch_disconnect(call.receive, task, call.context))
        elif signal.disconnected:
            raise ClientDisconnectedError
        else:
            signal.task = task
        try:
            await work
        except asyncio.CancelledError:
            if signal is not None and signal.disconnected:
                call.context.client_disconnected = True
            task.uncancel()
            if call.context.client_disconnected:
                raise ClientDisconnectedError from None
            # The server cancels what is still running when SHUTDOWN_GRACE_S runs out: say so
            # (a 503 the SDKs retry elsewhere, or a stream's error event) instead of a cut.
            raise ShuttingDownError(_SHUTTING_DOWN) from None
        finally:
            if watcher is not None:
                watcher.cancel()
            if signal is not None:
                signal.task = None

    def _call_context(self, call: Call) -> CallContext:
        deadline = time.monotonic() + call.provider.spec.timeout_s
        return CallContext(call.context.request_id, deadline, call.context)

    async def _respond(self, call: Call, answer: Awaitable[Json]) -> None:
        result = await answer
        usage = result.get("usage")
        if isinstance(usage, dict):
            call.context.usage = usage
        body = result.encoded if isinstance(result, EncodedJson) else orjson.dumps(result)
        await self._json(call.send, call.context, 200, body)

    async def _relay(self, call: Call, opened: Awaitable[ChunkStream]) -> None:
        stream = await opened
        send = call.send
        context = call.context
        try:
            headers = [*SSE_HEADERS, (b"server-timing", context.server_timing())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for events in stream:
                if context.first_chunk_s is None:
                    context.first_chunk_s = context.elapsed_s()
                await send({"type": "http.response.body", "body": events, "more_body": True})
            context.response_complete = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            context.usage = stream.usage
            await stream.aclose()

    async def _body(self, call: Call) -> Json:
        return requests.parse_object(await read_body(call.scope, call.receive, self._max_body))

    def _admit(self, call: Call, facts: requests.RequestFacts) -> None:
        call.context.model = facts.model
        call.context.stream = facts.stream
        ensure_model_allowed(call.provider, facts.model)

    # -- handlers -----------------------------------------------------------------------------

    async def chat_completions(self, call: Call) -> None:
        body = await self._body(call)
        facts = requests.chat_request(body)
        self._admit(call, facts)
        provider, ctx = call.provider, self._call_context(call)
        if facts.stream:
            await self._guarded(
                call, self._relay(call, provider.stream_chat_completion(ctx, body, facts))
            )
        else:
            await self._guarded(
                call, self._respond(call, provider.create_chat_completion(ctx, body, facts))
            )

    async def completions(self, call: Call) -> None:
        body = await self._body(call)
        facts = requests.completion_request(body)
        self._admit(call, facts)
        provider, ctx = call.provider, self._call_context(call)
        if facts.stream:
            await self._guarded(
                call, self._relay(call, provider.stream_completion(ctx, body, facts))
            )
        else:
            await self._guarded(
                call, self._respond(call, provider.create_completion(ctx, body, facts))
            )

    async def embeddings(self, call: Call) -> None:
        body = await self._body(call)
        facts = requests.embeddings_request(body)
        self._admit(call, facts)
        ctx = self._call_context(call)
        await self._guarded(
            call, self._respond(call, call.provider.create_embeddings(ctx, body, facts))
        )

    async def list_models(self, call: Call) -> None:
        async def work() -> None:
            models = await call.provider.list_models(self._call_context(call))
            allowed = call.provider.spec.models
            if allowed is not None:
                models = [m for m in models if m["id"] in allowed]
            body = orjson.dumps({"object": "list", "data": models})
            await self._json(call.send, call.context, 200, body)

        await self._guarded(call, work())

    async def _retrieve_model(self, call: Call, model_id: str) -> None:
        call.context.model = model_id
        ensure_model_allowed(call.provider, model_id)

        async def work() -> None:
            model = await call.provider.retrieve_model(self._call_context(call), model_id)
            await self._json(call.send, call.context, 200, orjson.dumps(model))

        await self._guarded(call, work())


ROUTES: dict[str, Route] = {
    "chat/completions": Route(
        "POST", "/{provider}/v1/chat/completions", Operation.CHAT, Router.chat_completions
    ),
    "completions": Route(
        "POST", "/{provider}/v1/completions", Operation.COMPLETIONS, Router.completions
    ),
    "embeddings": Route(
        "POST", "/{provider}/v1/embeddings", Operation.EMBEDDINGS, Router.embeddings
    ),
    "models": Route("GET", "/{provider}/v1/models", Operation.MODELS, Router.list_models),
}
_RETRIEVE = Route("GET", "/{provider}/v1/models/{model}", Operation.MODELS, Router.list_models)


def _match(rest: str) -> tuple[Route | None, str | None]:
    """The route for the part after /v1/, and the model id for a retrieve."""
    route = ROUTES.get(rest)
    if route is not None:
        return route, None
    if rest.startswith("models/") and len(rest) > len("models/"):
        return _RETRIEVE, rest[len("models/") :]
    return None, None
