"""Request ids, security headers, CORS, Server-Timing and health (SPEC §4.2-§4.4, §4.6)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_MODEL, CUSTOM_KEY, GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import CerebrasUpstream, OllamaUpstream, OpenAICompatUpstream
from tests.support.fake_upstreams.base import Fault, openai_error_body
from tests.support.gateway import GatewayServer, make_config

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
CHAT_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SERVER_TIMING = re.compile(r"upstream;dur=(\d+(?:\.\d+)?), gateway;dur=(\d+(?:\.\d+)?)")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ALLOWED_ORIGIN = "http://localhost:3000"


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def csv_set(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _gateway(custom: OpenAICompatUpstream, ollama: OllamaUpstream, **values: Any) -> GatewayServer:
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama.base_url,
        **values,
    )
    return GatewayServer(config)


@pytest.fixture(scope="module")
def plain_gateway(
    custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> Iterator[GatewayServer]:
    with _gateway(
        custom_upstream, ollama_upstream, enable_security_headers=False, max_request_bytes=128
    ) as server:
        yield server


@pytest.fixture(scope="module")
def cors_gateway(
    custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> Iterator[GatewayServer]:
    origins = f"{ALLOWED_ORIGIN}, {OTHER_ALLOWED_ORIGIN}"
    with _gateway(custom_upstream, ollama_upstream, cors_allow_origins=origins) as server:
        yield server


@pytest.fixture(scope="module")
def star_gateway(
    custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> Iterator[GatewayServer]:
    with _gateway(custom_upstream, ollama_upstream, cors_allow_origins='["*"]') as server:
        yield server


@pytest.fixture(scope="module")
def dead_gateway() -> Iterator[GatewayServer]:
    """Only Ollama is configured, and nothing listens where it is supposed to be."""
    config = make_config(
        allowed_api_keys=GATEWAY_KEY, ollama_base_url=f"http://127.0.0.1:{_closed_port()}"
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def anon(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with gateway.client(None) as http:
        yield http


def _client(server: GatewayServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


# -- request ids (§4.2) -------------------------------------------------------------------------


def test_valid_request_id_is_returned_and_forwarded(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    request_id = f"Client_{provider}.42:abc-x"
    body = {"model": CHAT_MODEL[provider], "messages": [{"role": "user", "content": "hi"}]}
    response = client.post(
        f"/{provider}/v1/chat/completions", json=body, headers={"x-request-id": request_id}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    assert upstream.requests
    assert [r.headers.get("x-request-id") for r in upstream.requests] == [request_id] * len(
        upstream.requests
    )


def test_longest_valid_request_id_is_kept(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    request_id = "a1._:-" * 21 + "xy"
    assert len(request_id) == 128
    response = client.get("/custom/v1/models", headers={"x-request-id": request_id})
    assert response.headers["x-request-id"] == request_id
    assert custom_upstream.requests[-1].headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "supplied",
    [
        b"a" * 129,
        b"has space",
        b"inner\ttab",
        b"slash/x",
        b"semi;colon",
        b'quote"d',
        b"",
        b"caf\xe9",
    ],
    ids=["too-long", "space", "tab", "slash", "semicolon", "quote", "empty", "latin1"],
)
def test_invalid_request_id_is_replaced(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, supplied: bytes
) -> None:
    response = client.get("/custom/v1/models", headers=[(b"x-request-id", supplied)])
    assert response.status_code == 200, response.text
    returned = response.headers["x-request-id"]
    assert returned.encode("latin-1") != supplied
    assert REQUEST_ID.fullmatch(returned)
    # The replacement is the request's id everywhere, upstream included.
    assert custom_upstream.requests[-1].headers["x-request-id"] == returned


def test_generated_request_ids_are_unique(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    returned = [client.get("/custom/v1/models").headers["x-request-id"] for _ in range(3)]
    assert len(set(returned)) == 3
    assert all(REQUEST_ID.fullmatch(r) for r in returned)
    assert [r.headers["x-request-id"] for r in custom_upstream.requests] == returned


def test_request_id_on_error_responses(
    anon: httpx.Client,
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    plain_gateway: GatewayServer,
) -> None:
    rid = {"x-request-id": "err-id-1"}
    big = {**CHAT_BODY, "padding": "x" * 200}
    with _client(plain_gateway, **AUTH) as small:
        oversized = small.post("/custom/v1/chat/completions", json=big, headers=rid)
    custom_upstream.fault = Fault(kind="status", status=500, body=openai_error_body("boom"))
    responses = {
        401: anon.get("/custom/v1/models", headers=rid),
        404: client.get("/nope/v1/models", headers=rid),
        405: client.get("/custom/v1/chat/completions", headers=rid),
        400: client.post("/custom/v1/chat/completions", json={"model": "x"}, headers=rid),
        413: oversized,
        502: client.post("/custom/v1/chat/completions", json=CHAT_BODY, headers=rid),
    }
    for status, response in responses.items():
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == "err-id-1", status
    # Without a client id, errors still get a generated one.
    generated = anon.get("/custom/v1/models").headers["x-request-id"]
    assert REQUEST_ID.fullmatch(generated)


# -- security headers (§4.3) --------------------------------------------------------------------


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name)


def test_security_headers_on_success(client: httpx.Client) -> None:
    _assert_security_headers(client.get("/healthz"))
    _assert_security_headers(client.get("/readyz"))
    _assert_security_headers(client.get("/custom/v1/models"))
    _assert_security_headers(client.post("/custom/v1/chat/completions", json=CHAT_BODY))
    body = {**CHAT_BODY, "stream": True}
    with client.stream("POST", "/custom/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        response.read()
        _assert_security_headers(response)


def test_security_headers_on_errors(
    anon: httpx.Client, client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    _assert_security_headers(anon.get("/custom/v1/models"))
    _assert_security_headers(client.get("/nope"))
    _assert_security_headers(client.delete("/custom/v1/models"))
    _assert_security_headers(client.post("/custom/v1/chat/completions", content=b"{"))
    custom_upstream.fault = Fault(kind="status", status=500, body=openai_error_body("boom"))
    response = client.post("/custom/v1/chat/completions", json=CHAT_BODY)
    assert response.status_code == 502
    _assert_security_headers(response)


def test_security_headers_absent_when_disabled(plain_gateway: GatewayServer) -> None:
    with _client(plain_gateway, **AUTH) as http, _client(plain_gateway) as anonymous:
        responses = [
            http.get("/healthz"),
            http.get("/custom/v1/models"),
            http.post("/custom/v1/chat/completions", json=CHAT_BODY),
            anonymous.get("/custom/v1/models"),
            http.get("/nope"),
            http.post("/custom/v1/chat/completions", json={**CHAT_BODY, "pad": "x" * 200}),
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 404, 413]
    for response in responses:
        assert not set(SECURITY_HEADERS) & set(response.headers), response.request.url
        # Disabling security headers must not take the request id with it.
        assert response.headers["x-request-id"]


# -- CORS (§4.4) --------------------------------------------------------------------------------


def _preflight(http: httpx.Client, origin: str, path: str = "/custom/v1/chat/completions") -> Any:
    return http.options(
        path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-request-id",
        },
    )


def test_cors_off_by_default(anon: httpx.Client, client: httpx.Client) -> None:
    origin = {"origin": ALLOWED_ORIGIN}
    for response in (
        client.get("/custom/v1/models", headers=origin),
        client.post("/custom/v1/chat/completions", json=CHAT_BODY, headers=origin),
        anon.get("/custom/v1/models", headers=origin),
        client.get("/healthz", headers=origin),
    ):
        assert cors_headers(response) == {}, response.request.url


def test_preflight_not_honoured_by_default(anon: httpx.Client, client: httpx.Client) -> None:
    # A browser's preflight carries no credentials: it meets the key check first.
    keyless = _preflight(anon, ALLOWED_ORIGIN)
    check_error(keyless, 401, "invalid_api_key")
    assert cors_headers(keyless) == {}
    with_key = _preflight(client, ALLOWED_ORIGIN)
    check_error(with_key, 405, None)
    assert with_key.headers["allow"] == "POST"
    assert cors_headers(with_key) == {}
    health = _preflight(anon, ALLOWED_ORIGIN, "/healthz")
    check_error(health, 405, None)
    assert cors_headers(health) == {}


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, OTHER_ALLOWED_ORIGIN])
def test_cors_allowed_origin(cors_gateway: GatewayServer, origin: str) -> None:
    with _client(cors_gateway, **AUTH) as http, _client(cors_gateway) as anonymous:
        success = http.get("/custom/v1/models", headers={"origin": origin})
        refused = anonymous.get("/custom/v1/models", headers={"origin": origin})
    assert success.status_code == 200
    # Errors carry CORS headers too, or the browser hides the envelope from the page.
    assert refused.status_code == 401
    for response in (success, refused):
        assert response.headers["access-control-allow-origin"] == origin
        assert "x-request-id" in csv_set(response.headers["access-control-expose-headers"])
        assert "origin" in csv_set(response.headers["vary"])


def test_cors_preflight_for_allowed_origin(
    cors_gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    with _client(cors_gateway) as anonymous:
        response = _preflight(anonymous, ALLOWED_ORIGIN)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    allowed = csv_set(response.headers["access-control-allow-headers"])
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    assert {"get", "post"} <= csv_set(response.headers["access-control-allow-methods"])
    assert custom_upstream.requests == []


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", "http://app.example.com", "https://app.example.com:8443", "null"],
)
def test_cors_disallowed_origin_gets_nothing(cors_gateway: GatewayServer, origin: str) -> None:
    with _client(cors_gateway, **AUTH) as http, _client(cors_gateway) as anonymous:
        success = http.get("/custom/v1/models", headers={"origin": origin})
        preflight = _preflight(anonymous, origin)
    assert success.status_code == 200
    assert cors_headers(success) == {}
    check_error(preflight, 401, "invalid_api_key")
    assert cors_headers(preflight) == {}


def test_cors_wildcard_only_when_configured(
    cors_gateway: GatewayServer, star_gateway: GatewayServer
) -> None:
    origin = {"origin": ALLOWED_ORIGIN}
    with _client(cors_gateway, **AUTH) as listed:
        assert listed.get("/custom/v1/models", headers=origin).headers[
            "access-control-allow-origin"
        ] == (ALLOWED_ORIGIN)
    with _client(star_gateway, **AUTH) as star:
        for anywhere in (ALLOWED_ORIGIN, "https://anything.example.org"):
            response = star.get("/custom/v1/models", headers={"origin": anywhere})
            assert response.headers["access-control-allow-origin"] == "*"
        preflight = _preflight(star, "https://anything.example.org")
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"


# -- Server-Timing (§4.2a) ----------------------------------------------------------------------


def _timing(response: httpx.Response) -> tuple[float, float]:
    match = SERVER_TIMING.fullmatch(response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    return float(match.group(1)), float(match.group(2))


def test_server_timing_on_proxied_successes(client: httpx.Client) -> None:
    responses = [
        client.get("/custom/v1/models"),
        client.get("/ollama/v1/models/llama3.2:1b"),
        client.post("/custom/v1/chat/completions", json=CHAT_BODY),
        client.post("/custom/v1/completions", json={"model": "gpt-test", "prompt": "hi"}),
        client.post("/custom/v1/embeddings", json={"model": "gpt-test", "input": "hi"}),
    ]
    with client.stream(
        "POST", "/custom/v1/chat/completions", json={**CHAT_BODY, "stream": True}
    ) as streamed:
        streamed.read()
    for response in [*responses, streamed]:
        assert response.status_code == 200, response.text
        upstream_ms, gateway_ms = _timing(response)
        # The upstream was called, so some time was spent waiting on it.
        assert upstream_ms > 0, response.request.url
        assert gateway_ms >= 0


def test_server_timing_on_errors(
    anon: httpx.Client, client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    local = [
        anon.get("/custom/v1/models"),
        client.get("/nope/v1/models"),
        client.post("/custom/v1/chat/completions", json={"model": "gpt-test"}),
        client.get("/custom/v1/chat/completions"),
    ]
    for response in local:
        upstream_ms, _ = _timing(response)
        assert upstream_ms == 0, response.request.url
    custom_upstream.fault = Fault(kind="status", status=500, body=openai_error_body("boom"))
    failed = client.post("/custom/v1/chat/completions", json=CHAT_BODY)
    assert failed.status_code == 502
    upstream_ms, _ = _timing(failed)
    assert upstream_ms > 0


# -- health (§4.6) ------------------------------------------------------------------------------


def test_healthz(anon: httpx.Client, custom_upstream: OpenAICompatUpstream) -> None:
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    # Liveness says nothing about upstreams and must not call them.
    assert custom_upstream.requests == []


def test_readyz_all_providers_up(
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ready"
    assert body["providers"] == {
        name: {"ready": True, "detail": None} for name in ("custom", "ollama", "cerebras")
    }
    # Readiness is measured, not assumed: every upstream was asked.
    for upstream in (custom_upstream, ollama_upstream, cerebras_upstream):
        assert upstream.requests


def test_readyz_reports_the_provider_that_is_down(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="status", status=503, body=openai_error_body("down"))
    response = client.get("/readyz")
    assert response.status_code == 200
    providers = response.json()["providers"]
    assert providers["custom"]["ready"] is False
    assert isinstance(providers["custom"]["detail"], str)
    assert providers["custom"]["detail"]
    assert providers["ollama"] == {"ready": True, "detail": None}
    assert providers["cerebras"] == {"ready": True, "detail": None}


def test_readyz_503_when_no_provider_answers(dead_gateway: GatewayServer) -> None:
    with _client(dead_gateway) as anonymous:
        check_error(anonymous.get("/readyz"), 401, "invalid_api_key")
        assert anonymous.get("/healthz").status_code == 200
    with _client(dead_gateway, **AUTH) as http:
        response = http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "unavailable"
    providers = body["providers"]
    assert set(providers) == {"ollama", "custom", "cerebras"}
    assert providers["ollama"]["ready"] is False
    assert "OLLAMA_BASE_URL" in providers["ollama"]["detail"]
    assert providers["cerebras"]["ready"] is False
    assert "CEREBRAS_API_KEY" in providers["cerebras"]["detail"]
    assert providers["custom"]["ready"] is False
    assert "CUSTOM_BASE_URL" in providers["custom"]["detail"]


def test_the_allocator_is_tuned_on_glibc() -> None:
    """On this (glibc) Linux the thresholds are accepted; the call is safe to repeat."""
    from oai_gateway.server.allocator import keep_large_buffers_in_heap

    assert keep_large_buffers_in_heap() is True
    assert keep_large_buffers_in_heap() is True
