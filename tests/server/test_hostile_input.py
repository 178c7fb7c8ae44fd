"""Hostile client input over raw sockets: the gateway answers in the envelope, never 5xx or hangs.

Covered elsewhere and not repeated: bad UTF-8 inside JSON strings, declared and chunked bodies
over MAX_REQUEST_BYTES (tests/api/test_http_edges.py); crafted model ids with `../`, `%2F`, `?`
(tests/api/test_models.py::test_retrieve_crafted_path_never_reaches_other_upstream_path).
"""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest

from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.errors import check_raw_error
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.gateway import GatewayServer

CHAT = b"/custom/v1/chat/completions"
WAIT_S = 3.0
# What the gateway itself sends upstream; anything else would have come from the client.
GATEWAY_HEADERS = frozenset(
    {
        "host",
        "accept",
        "accept-encoding",
        "user-agent",
        "authorization",
        "x-request-id",
        "content-type",
        "content-length",
        "traceparent",
        "tracestate",
    }
)


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes; everything the gateway answers until it closes (bounded)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    received = b""
    deadline = time.monotonic() + WAIT_S
    try:
        conn.sendall(data)
        while time.monotonic() < deadline:
            part = conn.recv(65536)
            if not part:
                break
            received += part
    except ConnectionResetError:
        pass  # a reset after the answer is fine: the answer is what is checked
    finally:
        conn.close()
    assert time.monotonic() < deadline, f"the gateway kept the connection open: {received[:300]!r}"
    return received


def post(body: bytes, *, length: int | None = None, extra: bytes = b"") -> bytes:
    size = len(body) if length is None else length
    return (
        b"POST " + CHAT + b" HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(size).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\x00{not utf-8 at all\x80\x81",
        b"[" * 100_000,
        b'{"model":"gpt-test","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"temperature":1e400}',
        b'{"model":"gpt-test","messages":[],"max_tokens":' + b"9" * 5000 + b"}",
    ],
    ids=["invalid-utf8", "deep-array", "deep-messages", "float-overflow", "huge-int"],
)
def test_malformed_body_is_400(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream, body: bytes
) -> None:
    error = check_raw_error(exchange(gateway.port, post(body)), 400, type_="invalid_request_error")
    assert error["code"] is None
    assert custom_upstream.requests == []


def test_lying_content_length_is_rejected_without_hanging(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    # Declared 10 bytes, sent 2 MB: the rest is not a request, so the connection is refused
    # promptly instead of being read to the end or left waiting.
    answer = exchange(gateway.port, post(b"x" * 2_000_000, length=10))
    check_raw_error(answer, 400, type_="invalid_request_error")
    assert answer.count(b"HTTP/1.1 ") <= 2, answer[:600]
    assert custom_upstream.requests == []


@pytest.mark.parametrize("separator", [b"\r", b"\n"], ids=["bare-cr", "bare-lf"])
def test_line_break_inside_request_id_cannot_inject_headers(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream, separator: bytes
) -> None:
    request = (
        b"GET /custom/v1/models HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
        b"X-Request-ID: abc" + separator + b"X-Injected: yes\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(gateway.port, request)
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert b"x-injected" not in head
    assert b"x-request-id: abc\r" not in head
    check_raw_error(answer, 400, type_="invalid_request_error")
    assert all("x-injected" not in r.headers for r in custom_upstream.requests)


def test_encoded_line_break_in_request_id_is_replaced(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = client.get("/custom/v1/models", headers={"x-request-id": "abc%0d%0aX-Injected:1"})
    assert response.status_code == 200, response.text
    rid = response.headers["x-request-id"]
    assert rid.startswith("req_"), rid
    assert custom_upstream.requests[-1].headers["x-request-id"] == rid


def test_oversized_header_never_breaks_the_gateway(
    gateway: GatewayServer, client: httpx.Client
) -> None:
    request = (
        b"GET /custom/v1/models HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
        b"X-Padding: " + b"a" * 1_000_000 + b"\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(gateway.port, request)
    status = int(answer[9:12])
    assert status == 431, answer[:300]
    assert b'"type":"invalid_request_error"' in answer
    assert client.get("/custom/v1/models").status_code == 200


def test_client_hop_by_hop_and_cookie_headers_stay_at_the_gateway(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    hostile = {
        "cookie": "session=stolen",
        "proxy-authorization": "Basic c2VjcmV0",
        "te": "trailers",
        "x-forwarded-for": "10.0.0.1",
        "x-custom-client": "yes",
        "openai-organization": "org-client",
        "keep-alive": "timeout=999",
    }
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/custom/v1/chat/completions", json=body, headers=hostile)
    assert response.status_code == 200, response.text
    sent = custom_upstream.requests[-1].headers
    assert set(sent) <= GATEWAY_HEADERS, set(sent) - GATEWAY_HEADERS
    assert sent["authorization"] == f"Bearer {CUSTOM_KEY}"


@pytest.mark.parametrize("status", [200, 400, 429, 503])
def test_upstream_set_cookie_is_not_returned(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, status: int
) -> None:
    payload = (
        b'{"object":"list","data":[]}'
        if status == 200
        else b'{"error":{"message":"no","type":"invalid_request_error","param":null,"code":null}}'
    )
    custom_upstream.fault = Fault(
        kind="status",
        status=status,
        body=payload,
        headers={"Set-Cookie": "upstream=secret; Path=/", "Retry-After": "1"},
    )
    response = client.get("/custom/v1/models")
    assert response.status_code == (502 if status == 503 else status), response.text
    assert "set-cookie" not in response.headers
    assert "upstream=secret" not in str(response.headers)


def test_a_large_body_sent_with_its_head_is_not_mistaken_for_a_large_head(
    gateway: GatewayServer,
) -> None:
    content = "x" * 1_000_000  # far over the head limit, far under MAX_REQUEST_BYTES
    body = orjson.dumps(
        {"model": "gpt-test", "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    )
    request = (
        b"POST /custom/v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    answer = exchange(gateway.port, request)
    assert int(answer[9:12]) == 200, answer[:300]
