"""The one check of OpenAI's error envelope (SPEC §5), for httpx responses and raw answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from tests.support.fake_upstreams import openai_error_body

Json = dict[str, Any]
ERROR_FIELDS = frozenset({"message", "type", "param", "code"})


class _Any:
    """A field the caller does not pin down (its shape is still checked)."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def check_error(
    response: httpx.Response,
    status: int,
    code: str | None = ANY,
    *,
    type_: str = ANY,
    param: str | None = ANY,
    contains: tuple[str, ...] = (),
) -> Json:
    """A JSON error in OpenAI's envelope, never SSE (even for a streaming request): exactly
    `{"error": {message, type, param, code}}`, a non-empty message and type, param and code
    null or strings, and the request id the gateway puts on every answer. The fields given are
    pinned too; returns the inner error object."""
    assert response.headers.get("x-request-id"), response.headers
    return check_envelope(
        (response.status_code, response.headers, response.content),
        status,
        code,
        type_=type_,
        param=param,
        contains=contains,
    )


def check_raw_error(
    answer: bytes,
    status: int,
    code: str | None = ANY,
    *,
    type_: str = ANY,
    param: str | None = ANY,
    contains: tuple[str, ...] = (),
) -> Json:
    """`check_error` for a whole HTTP/1.1 answer read off a socket."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), answer[:300]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    seen = int(status_line.split()[1])
    return check_envelope(
        (seen, headers, body), status, code, type_=type_, param=param, contains=contains
    )


def check_envelope(
    answer: tuple[int, Mapping[str, str], bytes],
    status: int,
    code: str | None = ANY,
    *,
    type_: str = ANY,
    param: str | None = ANY,
    contains: tuple[str, ...] = (),
) -> Json:
    seen, headers, body = answer
    assert seen == status, (seen, body[:500])
    assert headers.get("content-type") == "application/json", dict(headers)
    payload = orjson.loads(body)
    assert isinstance(payload, dict), payload
    assert list(payload) == ["error"], payload
    error: Json = payload["error"]
    assert isinstance(error, dict), error
    assert set(error) == ERROR_FIELDS, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error["type"], str), error
    assert error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    for name, expected in (("code", code), ("type", type_), ("param", param)):
        if expected is not ANY:
            assert error[name] == expected, (name, error)
    for text in contains:
        assert text in error["message"], (text, error["message"])
    return error


def provider_error_body(
    provider: str, message: str, type_: str, *, param: str | None, code: str | None
) -> bytes:
    """The error body each upstream really sends: Cerebras flat, the others wrapped."""
    if provider == "cerebras":
        fields = {"message": message, "type": type_, "param": param, "code": code}
        return orjson.dumps(fields)
    return openai_error_body(message, type_, param=param, code=code)
