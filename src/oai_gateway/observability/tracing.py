"""Optional OpenTelemetry tracing: a server span per request, a client span per upstream call.

Off unless the standard `OTEL_*` variables ask for traces (`OTEL_TRACES_EXPORTER`, or an OTLP
endpoint) and the `tracing` extra is installed. When off, `instrument` returns the app unchanged
and nothing from `opentelemetry` is imported, so the request path pays nothing.

The upstream side is a `RequestHook` registered in `oai_gateway.upstream.client.REQUEST_HOOKS`; it
opens a client span per upstream attempt and injects its W3C `traceparent` into the request.
Attributes follow OpenTelemetry's HTTP and GenAI semantic conventions (`gen_ai.provider.name`,
and the older `gen_ai.system` that many backends still read).
"""

# Lazy imports are the point of this module: opentelemetry loads only when tracing is on.
# ruff: noqa: PLC0415

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from oai_gateway.observability.context import SCOPE_KEY, RequestContext
from oai_gateway.server.asgi import ASGIApp, Receive, Scope, Send
from oai_gateway.upstream import client as upstream

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

_log = logging.getLogger("oai_gateway")

TRACER_NAME = "oai_gateway"
DEFAULT_SERVICE_NAME = "oai-gateway"
CLIENT_CLOSED = 499
# The GenAI operation each route performs (gen_ai.operation.name); model listing is not one.
OPERATIONS = {
    "/{provider}/v1/chat/completions": "chat",
    "/{provider}/v1/completions": "text_completion",
    "/{provider}/v1/embeddings": "embeddings",
}
_TRUE = frozenset({"true", "1", "yes", "on"})

# The request being served, for the upstream client spans opened while it runs.
_current_request: ContextVar[RequestContext | None] = ContextVar(
    "oai_gateway_traced_request", default=None
)


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces (the SDK's own switches decide)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def instrument(app: ASGIApp, environ: Mapping[str, str] | None = None) -> ASGIApp:
    """`app` wrapped in a tracing layer when tracing is configured, else `app` itself."""
    environ = os.environ if environ is None else environ
    if not enabled(environ):
        return app
    try:
        from opentelemetry import trace
    except ImportError:
        _log.warning(
            "OTEL_* variables ask for traces but OpenTelemetry is not installed: "
            "install oai-gateway[tracing]; serving without traces"
        )
        return app
    _ensure_tracer_provider(environ)
    tracer = trace.get_tracer(TRACER_NAME)
    _install_upstream_hook(tracer)
    return TracingMiddleware(app, tracer)


def _ensure_tracer_provider(environ: Mapping[str, str]) -> None:
    """Configure the global provider from OTEL_*, unless the embedding program already did."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    # Explicit attributes win over OTEL_SERVICE_NAME in Resource.create, so only a default.
    defaults = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(defaults))
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
    for name in (n.strip() for n in names):
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name in ("otlp", ""):
            # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT, ... itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            _log.warning("OTEL_TRACES_EXPORTER=%s is not supported; use otlp or console", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _owned_providers.append(provider)


# Providers this module built; uvicorn re-raises SIGTERM after its shutdown, which ends the
# process without running atexit, so their batches are flushed at lifespan shutdown instead.
_owned_providers: list[Any] = []


def flush() -> None:
    """Export the spans still batched (called at shutdown); nothing to do when tracing is off."""
    for provider in _owned_providers:
        provider.force_flush()


class TracingMiddleware:
    """Sits inside the lifecycle layer, so the request's context is there to read at the end."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.app = app
        self._tracer = tracer
        self._extract = extract
        self._server = SpanKind.SERVER
        self._error = StatusCode.ERROR
        self._status = Status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context: RequestContext = scope[SCOPE_KEY]
        method: str = scope["method"]
        parent = self._extract(_header_carrier(scope["headers"]))
        attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "oai_gateway.request_id": context.request_id,
        }
        with self._tracer.start_as_current_span(
            method, context=parent, kind=self._server, attributes=attributes
        ) as span:
            token = _current_request.set(context)
            try:
                await self.app(scope, receive, send)
            finally:
                _current_request.reset(token)
                status = CLIENT_CLOSED if context.client_disconnected else context.status
                route = context.route
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status:
                    span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(self._status(self._error, str(status)))
                    span.set_attribute("error.type", context.upstream_error or str(status))
                span.set_attributes(genai_attributes(context))


def genai_attributes(context: RequestContext) -> dict[str, Any]:
    """GenAI semantic-convention attributes known once the request is over."""
    attributes: dict[str, Any] = {}
    if context.provider is None:
        return attributes
    attributes["gen_ai.provider.name"] = context.provider
    attributes["gen_ai.system"] = context.provider
    operation = OPERATIONS.get(context.route)
    if operation is not None:
        attributes["gen_ai.operation.name"] = operation
    if context.model:
        attributes["gen_ai.request.model"] = context.model
    usage = context.usage or {}
    for field, name in (("prompt_tokens", "input"), ("completion_tokens", "output")):
        count = usage.get(field)
        if isinstance(count, int):
            attributes[f"gen_ai.usage.{name}_tokens"] = count
    return attributes


def _header_carrier(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI's raw header pairs as the str mapping the propagators read."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}


_hook_installed = False


def _install_upstream_hook(tracer: Tracer) -> None:
    """Register the hook that opens the client spans (once per process)."""
    global _hook_installed  # noqa: PLW0603 - one hook per process, whatever the app count
    if _hook_installed:
        return
    upstream.REQUEST_HOOKS.append(_UpstreamSpans(tracer))
    _hook_installed = True


class _UpstreamSpans:
    """A client span per upstream attempt, child of the request's server span."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def started(
        self, client: upstream.UpstreamClient, method: str, path: str, headers: dict[str, str]
    ) -> object:
        from opentelemetry import trace
        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind

        request = _current_request.get()
        if request is None or not trace.get_current_span().is_recording():
            return None  # not inside a traced request (readiness probes, other apps in the process)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": client.base_url.rstrip("/") + path,
            "server.address": client.host,
            "server.port": client.port,
        }
        if request.provider is not None:
            attributes["gen_ai.provider.name"] = request.provider
            attributes["gen_ai.system"] = request.provider
        if request.model:
            attributes["gen_ai.request.model"] = request.model
        span = self._tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        inject(headers, context=trace.set_span_in_context(span))
        return span

    def finished(self, token: object, status: int | None, error: BaseException | None) -> None:
        from opentelemetry.trace import Span, Status, StatusCode

        if not isinstance(token, Span):
            return
        if error is not None:
            token.record_exception(error)
            token.set_status(Status(StatusCode.ERROR, type(error).__name__))
            token.set_attribute("error.type", type(error).__qualname__)
        elif status is not None:
            token.set_attribute("http.response.status_code", status)
            if status >= 400:
                token.set_status(Status(StatusCode.ERROR, str(status)))
                token.set_attribute("error.type", str(status))
        token.end()
