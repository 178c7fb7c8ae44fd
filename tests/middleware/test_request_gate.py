"""The request gate (issue: CSRF and DNS rebinding in the default setup, no keys on loopback).

A cross-site page can make a browser POST `text/plain` (or a form) without a preflight, and a
DNS-rebinding page reaches the gateway under the attacker's host name. Neither may reach the
upstream; SDK requests (always JSON, always a loopback or IP host here) are untouched.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

CHAT = "/custom/v1/chat/completions"
BODY = orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})


def gateway_for(upstream: OpenAICompatUpstream, **settings: Any) -> GatewayServer:
    config = make_config(
        custom_base_url=upstream.base_url + "/v1", custom_api_key=CUSTOM_KEY, **settings
    )
    return GatewayServer(config)


@pytest.fixture(scope="module")
def keyless(custom_upstream: OpenAICompatUpstream) -> Iterator[GatewayServer]:
    with gateway_for(custom_upstream) as server:
        yield server


@pytest.fixture(scope="module")
def keyless_with_hosts(custom_upstream: OpenAICompatUpstream) -> Iterator[GatewayServer]:
    with gateway_for(custom_upstream, allowed_hosts="gateway.internal, Proxy.Example") as server:
        yield server


def raw_post(port: int, host: bytes, content_type: bytes | None, body: bytes = BODY) -> bytes:
    """One POST exactly as written (httpx would fix the Host), the status line and body back."""
    head = b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head + body)
        received = b""
        for _ in range(1000):
            part = conn.recv(65536)
            if not part:
                break
            received += part
    return received


def status_and_error(answer: bytes) -> tuple[int, dict[str, object] | None]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if not body.startswith(b"{"):
        return status, None
    error = orjson.loads(body).get("error")
    return status, error if isinstance(error, dict) else None


@pytest.mark.parametrize(
    "content_type",
    [
        b"text/plain",
        b"text/plain;charset=UTF-8",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/jsonp",
        b"json",
        None,
    ],
)
def test_a_post_body_that_is_not_declared_json_is_415_and_never_reaches_the_upstream(
    keyless: GatewayServer, custom_upstream: OpenAICompatUpstream, content_type: bytes | None
) -> None:
    status, error = status_and_error(raw_post(keyless.port, b"127.0.0.1", content_type))
    assert status == 415
    assert error is not None
    assert error["type"] == "invalid_request_error", error
    assert set(error) == {"message", "type", "param", "code"}
    assert custom_upstream.requests == []


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"Application/JSON; charset=utf-8", b"application/vnd.api+json"],
)
def test_json_bodies_pass(
    keyless: GatewayServer, custom_upstream: OpenAICompatUpstream, content_type: bytes
) -> None:
    status, _ = status_and_error(raw_post(keyless.port, b"127.0.0.1", content_type))
    assert status == 200
    assert len(custom_upstream.requests) == 1


def test_the_content_type_rule_holds_with_keys_too(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = client.post(CHAT, content=BODY, headers={"content-type": "text/plain"})
    assert response.status_code == 415, response.text
    assert custom_upstream.requests == []


@pytest.mark.parametrize(
    "host", [b"attacker.example", b"attacker.example:8000", b"localhost.attacker.example"]
)
def test_without_keys_a_foreign_host_name_is_403(
    keyless: GatewayServer, custom_upstream: OpenAICompatUpstream, host: bytes
) -> None:
    status, error = status_and_error(raw_post(keyless.port, host, b"application/json"))
    assert status == 403
    assert error is not None
    assert error["code"] == "host_not_allowed", error
    assert custom_upstream.requests == []


@pytest.mark.parametrize(
    "host",
    [b"localhost", b"LOCALHOST:8000", b"127.0.0.1", b"127.0.0.1:1", b"[::1]:8000", b"10.1.2.3"],
)
def test_without_keys_loopback_names_and_ip_literals_are_served(
    keyless: GatewayServer, host: bytes
) -> None:
    status, _ = status_and_error(raw_post(keyless.port, host, b"application/json"))
    assert status == 200


@pytest.mark.parametrize("host", [b"gateway.internal:8000", b"proxy.example"])
def test_allowed_hosts_extend_the_loopback_names(
    keyless_with_hosts: GatewayServer, host: bytes
) -> None:
    status, _ = status_and_error(raw_post(keyless_with_hosts.port, host, b"application/json"))
    assert status == 200
    status, _ = status_and_error(
        raw_post(keyless_with_hosts.port, b"other.example", b"application/json")
    )
    assert status == 403


def test_with_keys_the_host_is_not_checked(gateway: GatewayServer) -> None:
    answer = raw_post(gateway.port, b"gateway.example.com", b"application/json")
    assert status_and_error(answer)[0] == 401  # the key check, not the host check, answers
    models = httpx.get(
        gateway.url + "/custom/v1/models",
        headers={"host": "gateway.example.com", "authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=10,
    )
    assert models.status_code == 200


def test_bodyless_requests_need_no_content_type(keyless: GatewayServer) -> None:
    assert httpx.get(keyless.url + "/custom/v1/models", timeout=10).status_code == 200
    empty = raw_post(keyless.port, b"127.0.0.1", None, body=b"")
    assert status_and_error(empty)[0] == 400  # the router's "empty body", not the gate
