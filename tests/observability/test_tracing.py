"""Optional OpenTelemetry tracing: spans, W3C propagation upstream, GenAI attributes, off = free."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from oai_gateway.observability import tracing
from oai_gateway.observability.tracing import TracingMiddleware, enabled, instrument
from oai_gateway.upstream import client as upstream_client
from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
CHAT_ROUTE = "/{provider}/v1/chat/completions"
WAIT_S = 3.0

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracing_undone_after_the_module() -> Iterator[None]:
    """The global tracer provider and the upstream hook are process-wide: later modules must
    not trace their requests through what this one installed. OpenTelemetry lets a provider be
    set once per process, so undoing it touches its private globals."""
    hooks = list(upstream_client.REQUEST_HOOKS)
    yield
    upstream_client.REQUEST_HOOKS[:] = hooks
    tracing._hook_installed = False
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    _exporter.clear()


def _global_provider() -> None:
    """The embedding program's provider: the gateway must use it instead of building one."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)


@pytest.fixture
def traced_gateway(
    custom_upstream: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayServer]:
    _global_provider()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        request_timeout_s=3,
    )
    with GatewayServer(config) as server:
        _exporter.clear()
        yield server


def finished(count: int) -> list[ReadableSpan]:
    """The spans ended so far, once `count` have (the server span ends after the last byte)."""
    deadline = time.monotonic() + WAIT_S
    while len(_exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    spans = list(_exporter.get_finished_spans())
    assert len(spans) == count, [s.name for s in spans]
    return spans


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_chat_makes_server_and_client_spans_and_propagates_traceparent(
    traced_gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there you"}]}
    response = httpx.post(
        f"{traced_gateway.url}/custom/v1/chat/completions",
        json=body,
        headers={**AUTH, "traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    spans = finished(2)
    [server] = by_kind(spans, SpanKind.SERVER)
    [client] = by_kind(spans, SpanKind.CLIENT)

    # The gateway joins the caller's trace, and the upstream call is a child of the request.
    assert server.context is not None
    assert client.context is not None
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE_ID
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN_ID
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id

    [received] = custom_upstream.requests
    expected = f"00-{CLIENT_TRACE_ID}-{client.context.span_id:016x}-01"
    assert received.headers["traceparent"] == expected

    assert server.name == f"POST {CHAT_ROUTE}"
    server_attrs = attrs(server)
    assert server_attrs["http.request.method"] == "POST"
    assert server_attrs["http.route"] == CHAT_ROUTE
    assert server_attrs["http.response.status_code"] == 200
    assert server_attrs["oai_gateway.request_id"] == response.headers["x-request-id"]
    assert server_attrs["gen_ai.provider.name"] == "custom"
    assert server_attrs["gen_ai.system"] == "custom"
    assert server_attrs["gen_ai.operation.name"] == "chat"
    assert server_attrs["gen_ai.request.model"] == "gpt-test"
    assert server_attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert server_attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert server.status.status_code == StatusCode.UNSET

    client_attrs = attrs(client)
    assert client.name == "POST"
    assert client_attrs["http.request.method"] == "POST"
    assert client_attrs["url.full"] == custom_upstream.base_url + "/v1/chat/completions"
    assert client_attrs["server.address"] == "127.0.0.1"
    assert client_attrs["http.response.status_code"] == 200
    assert client_attrs["gen_ai.provider.name"] == "custom"
    assert client_attrs["gen_ai.request.model"] == "gpt-test"


def test_new_trace_without_traceparent_and_stream_usage(
    traced_gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    body = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "count to three"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", f"{traced_gateway.url}/custom/v1/chat/completions", json=body, headers=AUTH
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if '"usage":{' in line]
    usage = json.loads(lines[0].removeprefix("data: "))["usage"]
    [server] = by_kind(finished(2), SpanKind.SERVER)
    assert server.parent is None
    assert server.context is not None
    [received] = custom_upstream.requests
    assert received.headers["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}"
    server_attrs = attrs(server)
    assert server_attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert server_attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]


def test_embeddings_report_input_tokens_only(traced_gateway: GatewayServer) -> None:
    response = httpx.post(
        f"{traced_gateway.url}/custom/v1/embeddings",
        json={"model": "org/model-a", "input": "one two three"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    [server] = by_kind(finished(2), SpanKind.SERVER)
    server_attrs = attrs(server)
    assert server_attrs["gen_ai.operation.name"] == "embeddings"
    assert server_attrs["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert "gen_ai.usage.output_tokens" not in server_attrs


def test_upstream_failure_marks_both_spans(
    traced_gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="status", status=500, body=b"boom")
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(
        f"{traced_gateway.url}/custom/v1/chat/completions", json=body, headers=AUTH
    )
    assert response.status_code == 502
    spans = finished(2)
    [server] = by_kind(spans, SpanKind.SERVER)
    [client] = by_kind(spans, SpanKind.CLIENT)
    assert server.status.status_code == StatusCode.ERROR
    assert attrs(server)["http.response.status_code"] == 502
    assert attrs(server)["error.type"] == "upstream_error"
    assert client.status.status_code == StatusCode.ERROR
    assert attrs(client)["http.response.status_code"] == 500


def test_requests_without_a_provider_have_no_client_span(traced_gateway: GatewayServer) -> None:
    response = httpx.get(f"{traced_gateway.url}/custom/v1/models")  # no key
    assert response.status_code == 401
    [server] = finished(1)
    assert server.kind == SpanKind.SERVER
    assert server.name == "GET"  # auth comes before routing: no route template to name
    assert attrs(server)["http.response.status_code"] == 401
    assert not any(key.startswith("gen_ai.") for key in attrs(server))


# --- switched off -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_SERVICE_NAME": "gw"}, False),
    ],
)
def test_enabled_only_by_otel_variables(environ: dict[str, str], expected: bool) -> None:
    assert enabled(environ) is expected


def test_instrument_returns_the_app_itself_when_off() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        del scope, receive, send

    assert instrument(app, {}) is app
    assert isinstance(instrument(app, {"OTEL_TRACES_EXPORTER": "console"}), TracingMiddleware)


def test_off_imports_no_opentelemetry(tmp_path: Path) -> None:
    """A gateway built and serving without OTEL_* never loads the OpenTelemetry packages."""
    script = (
        "import sys\n"
        "from oai_gateway.app import create_app\n"
        "from oai_gateway.config.loader import load_config\n"
        "app = create_app(load_config({}))\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "from oai_gateway.upstream import client as upstream\n"
        "assert upstream.REQUEST_HOOKS == []\n"
        "print('ok')\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- configured from OTEL_* alone ---------------------------------------------------------------


def test_serve_exports_spans_over_otlp_http(
    tmp_path: Path, custom_upstream: OpenAICompatUpstream
) -> None:
    """`oai-gateway serve` with only OTEL_* set sends its spans to the OTLP/HTTP endpoint."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tests.support.processes import GatewayProcess, base_env
    from tests.support.sockets import free_port

    port = free_port()
    with OpenAICompatUpstream() as collector:  # records whatever is posted to it
        env = base_env(
            tmp_path,
            ALLOWED_API_KEYS=GATEWAY_KEY,
            CUSTOM_BASE_URL=custom_upstream.base_url + "/v1",
            CUSTOM_API_KEY=CUSTOM_KEY,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.base_url,
            OTEL_SERVICE_NAME="gw-under-test",
            OTEL_BSP_SCHEDULE_DELAY="60000",  # so only the flush at shutdown exports
        )
        args = ["--port", str(port)]
        with GatewayProcess("module", args, env, tmp_path, port) as gateway:
            gateway.wait_healthy()
            response = httpx.get(f"{gateway.url}/custom/v1/models", headers=AUTH, timeout=10)
            assert response.status_code == 200
            assert collector.requests == []  # still batched
            assert gateway.terminate() in (0, -signal.SIGTERM)
        names: dict[str, dict[str, Any]] = {}
        service = ""
        assert collector.requests, "nothing exported at shutdown"
        for recorded in collector.requests:
            assert recorded.path == "/v1/traces"
            assert recorded.headers["content-type"] == "application/x-protobuf"
            export = ExportTraceServiceRequest.FromString(recorded.body)
            for resource_spans in export.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        service = attribute.value.string_value
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        names[span.name] = {
                            a.key: a.value.string_value or a.value.int_value
                            for a in span.attributes
                        }
    assert service == "gw-under-test"
    assert names["GET /{provider}/v1/models"]["gen_ai.provider.name"] == "custom"
    assert names["GET"]["url.full"] == custom_upstream.base_url + "/v1/models"
    assert names["GET /healthz"]["http.response.status_code"] == 200
