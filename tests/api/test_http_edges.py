"""Errors the gateway raises itself, before any upstream is involved (SPEC §5 routing rows).

Unknown paths, wrong methods, oversized and malformed bodies, missing or mistyped fields: each
gets the OpenAI envelope with the §5 status, never a 422 or a 500, and nothing goes upstream.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.errors import check_envelope, check_error
from tests.support.fake_upstreams import OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

SMALL_LIMIT = 512
CHAT = "/custom/v1/chat/completions"
COMPLETIONS = "/custom/v1/completions"
EMBEDDINGS = "/custom/v1/embeddings"
POST_PATHS = (CHAT, COMPLETIONS, EMBEDDINGS)
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture(scope="module")
def small_gateway(
    custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> Iterator[GatewayServer]:
    """A gateway whose MAX_REQUEST_BYTES is small enough to cross with a handful of bytes."""
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama_upstream.base_url,
        max_request_bytes=SMALL_LIMIT,
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def small(small_gateway: GatewayServer) -> Iterator[httpx.Client]:
    headers = {**AUTH, "content-type": "application/json"}  # the bodies are sent as bytes
    with httpx.Client(base_url=small_gateway.url, headers=headers, timeout=10) as http:
        yield http


def chat_body_of_size(size: int) -> bytes:
    """A valid chat request body of exactly `size` bytes."""
    empty = orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": ""}]})
    assert size >= len(empty)
    return orjson.dumps(
        {"model": "gpt-test", "messages": [{"role": "user", "content": "x" * (size - len(empty))}]}
    )


def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


# -- unknown paths and wrong methods ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/v1/models",
        "/custom",
        "/custom/v1",
        "/custom/v1/",
        "/custom/v2/models",
        "/custom/v1/chat",
        "/custom/v1/chat/completions/extra",
        "/custom/v1/models/",
        "/custom/v1/embedding",
        "/healthz/",
    ],
)
def test_unknown_path_is_404_with_null_code(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, path: str
) -> None:
    check_error(client.get(path), 404, None, type_="invalid_request_error", param=None)
    check_error(
        client.post(path, json={"model": "gpt-test"}),
        404,
        None,
        type_="invalid_request_error",
        param=None,
    )
    assert custom_upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", CHAT, "POST"),
        ("PUT", COMPLETIONS, "POST"),
        ("DELETE", EMBEDDINGS, "POST"),
        ("POST", "/custom/v1/models", "GET"),
        ("PATCH", "/custom/v1/models/gpt-test", "GET"),
        ("OPTIONS", CHAT, "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/readyz", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow_header(
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    method: str,
    path: str,
    allow: str,
) -> None:
    response = client.request(method, path)
    check_error(response, 405, None, type_="invalid_request_error", param=None)
    assert response.headers["allow"] == allow
    assert custom_upstream.requests == []


# -- body size ----------------------------------------------------------------------------------


def test_declared_body_over_limit_is_413(
    small: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = small.post(CHAT, content=chat_body_of_size(SMALL_LIMIT + 1))
    error = check_error(response, 413, None, type_="invalid_request_error", param=None)
    assert str(SMALL_LIMIT) in error["message"]
    assert custom_upstream.requests == []


def test_body_exactly_at_limit_is_served(
    small: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = small.post(CHAT, content=chat_body_of_size(SMALL_LIMIT))
    assert response.status_code == 200, response.text
    assert len(custom_upstream.requests) == 1


def test_chunked_body_over_limit_is_413(
    small: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    body = chat_body_of_size(SMALL_LIMIT * 3)
    request = small.build_request("POST", CHAT, content=_chunks(body, 100))
    # Streamed content has no length to declare: the limit has to be enforced while reading.
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    check_error(small.send(request), 413, None, type_="invalid_request_error", param=None)
    assert custom_upstream.requests == []


def test_chunked_body_under_limit_is_served(
    small: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    body = chat_body_of_size(SMALL_LIMIT - 10)
    request = small.build_request("POST", CHAT, content=_chunks(body, 64))
    assert "content-length" not in request.headers
    response = small.send(request)
    assert response.status_code == 200, response.text
    assert custom_upstream.requests[-1].json == orjson.loads(body)


def _raw_post(
    port: int, path: str, content_length: str, body: bytes
) -> tuple[http.client.HTTPResponse, bytes]:
    """A POST with a hand-written Content-Length, which httpx would never send."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    connection.putrequest("POST", path, skip_accept_encoding=True)
    connection.putheader("Authorization", f"Bearer {GATEWAY_KEY}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", content_length)
    connection.endheaders(body)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    return response, answer


def _assert_raw_envelope(response: http.client.HTTPResponse, answer: bytes, status: int) -> None:
    assert response.getheader("x-request-id")
    headers = {name.lower(): value for name, value in response.getheaders()}
    check_envelope((response.status, headers, answer), status, None, type_="invalid_request_error")


def test_declared_size_over_limit_is_refused_without_waiting_for_the_body(
    small_gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    # Only the headers are sent: an answer (within the socket timeout) proves the gateway
    # judged the declared size instead of waiting to read 100 kB that never come.
    response, answer = _raw_post(small_gateway.port, CHAT, "100000", b"")
    _assert_raw_envelope(response, answer, 413)
    assert custom_upstream.requests == []


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "0x10", "5, 5"])
def test_non_numeric_content_length_is_a_client_error_not_500(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream, value: str
) -> None:
    body = b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}'
    response, answer = _raw_post(gateway.port, CHAT, value, body)
    # The HTTP parser rejects these before the app runs; SPEC §5 still wants the envelope.
    _assert_raw_envelope(response, answer, 400)
    assert custom_upstream.requests == []


# -- malformed bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"{", b"not json", b'{"model": }', b'{"model":"\xff"}', b"{'model': 'x'}"],
    ids=["empty", "blank", "truncated", "text", "bad-value", "bad-utf8", "single-quotes"],
)
@pytest.mark.parametrize("path", POST_PATHS)
def test_invalid_json_is_400_with_null_code(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, path: str, raw: bytes
) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    check_error(response, 400, None, type_="invalid_request_error", param=None)
    assert custom_upstream.requests == []


@pytest.mark.parametrize("raw", [b"[]", b'[{"model": "gpt-test"}]', b'"text"', b"1", b"null"])
@pytest.mark.parametrize("path", POST_PATHS)
def test_non_object_json_is_400_with_null_code(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, path: str, raw: bytes
) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    check_error(response, 400, None, type_="invalid_request_error", param=None)
    assert custom_upstream.requests == []


# -- missing and mistyped fields ----------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]
FIELD_CASES: list[tuple[str, dict[str, Any], str]] = [
    (CHAT, {"messages": MESSAGES}, "model"),
    (CHAT, {"model": 5, "messages": MESSAGES}, "model"),
    (CHAT, {"model": "", "messages": MESSAGES}, "model"),
    (CHAT, {"model": None, "messages": MESSAGES}, "model"),
    (CHAT, {"model": "gpt-test"}, "messages"),
    (CHAT, {"model": "gpt-test", "messages": "hi"}, "messages"),
    (CHAT, {"model": "gpt-test", "messages": []}, "messages"),
    (CHAT, {"model": "gpt-test", "messages": ["hi"]}, "messages"),
    (CHAT, {"model": "gpt-test", "messages": [{"content": "hi"}]}, "messages"),
    (CHAT, {"model": "gpt-test", "messages": MESSAGES, "stream": "yes"}, "stream"),
    (CHAT, {"model": "gpt-test", "messages": MESSAGES, "stream": 1}, "stream"),
    (COMPLETIONS, {"prompt": "hi"}, "model"),
    (COMPLETIONS, {"model": ["gpt-test"], "prompt": "hi"}, "model"),
    (COMPLETIONS, {"model": "gpt-test"}, "prompt"),
    (COMPLETIONS, {"model": "gpt-test", "prompt": 5}, "prompt"),
    (COMPLETIONS, {"model": "gpt-test", "prompt": []}, "prompt"),
    (COMPLETIONS, {"model": "gpt-test", "prompt": [1, "a"]}, "prompt"),
    (COMPLETIONS, {"model": "gpt-test", "prompt": {"text": "hi"}}, "prompt"),
    (COMPLETIONS, {"model": "gpt-test", "prompt": "hi", "stream": "true"}, "stream"),
    (EMBEDDINGS, {"input": "hi"}, "model"),
    (EMBEDDINGS, {"model": "gpt-test"}, "input"),
    (EMBEDDINGS, {"model": "gpt-test", "input": {}}, "input"),
    (EMBEDDINGS, {"model": "gpt-test", "input": [[]]}, "input"),
    (EMBEDDINGS, {"model": "gpt-test", "input": None}, "input"),
    (EMBEDDINGS, {"model": "gpt-test", "input": "hi", "encoding_format": "hex"}, "encoding_format"),
    (EMBEDDINGS, {"model": "gpt-test", "input": "hi", "encoding_format": 1}, "encoding_format"),
    (EMBEDDINGS, {"model": "gpt-test", "input": "hi", "dimensions": "8"}, "dimensions"),
    (EMBEDDINGS, {"model": "gpt-test", "input": "hi", "dimensions": 0}, "dimensions"),
    (EMBEDDINGS, {"model": "gpt-test", "input": "hi", "dimensions": True}, "dimensions"),
    (EMBEDDINGS, {"model": "gpt-test", "input": "hi", "dimensions": 1.5}, "dimensions"),
]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    FIELD_CASES,
    ids=[f"{p.split('/')[3]}-{param}-{i}" for i, (p, _, param) in enumerate(FIELD_CASES)],
)
def test_bad_field_is_400_naming_the_param(
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    path: str,
    body: dict[str, Any],
    param: str,
) -> None:
    response = client.post(path, json=body)
    assert response.status_code != 422
    check_error(response, 400, None, type_="invalid_request_error", param=param)
    assert custom_upstream.requests == []


def test_unknown_fields_are_not_errors_and_pass_through(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    body = {"model": "gpt-test", "messages": MESSAGES, "some_future_option": {"x": [1, 2]}}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert custom_upstream.requests[-1].json["some_future_option"] == {"x": [1, 2]}
