"""Checks on client request bodies: only what the gateway itself relies on (SPEC §5).

Everything else is the upstream's to judge, and unknown fields pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from oai_gateway.errors import InvalidRequestError

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the gateway needs to know about a request body to route and shape the answer."""

    model: str
    stream: bool = False
    include_usage: bool = False
    input_count: int = 1
    encoding: str = "float"


def parse_object(raw: bytes) -> Json:
    if not raw.strip():
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return body


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _model(body: Json) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        if model is None:
            raise _invalid("model", "Missing required parameter: 'model'.")
        raise _invalid("model", "'model' must be a non-empty string.")
    return model


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stream(body: Json) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "'stream' must be a boolean.")
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not isinstance(options, dict):
        raise _invalid("stream_options", "'stream_options' must be an object.")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise _invalid("stream_options", "'stream_options.include_usage' must be a boolean.")
    return bool(stream), bool(stream) and bool(include)


def chat_request(body: Json) -> RequestFacts:
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        raise _invalid("messages", "Missing required parameter: 'messages'.")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "'messages' must be a non-empty array of message objects.")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid("messages", "Each message must be an object with a string 'role'.")
    stream, include_usage = _stream(body)
    return RequestFacts(model, stream, include_usage)


def _token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(t) for t in value)


def input_count(value: Any, param: str) -> int:
    """How many inputs a prompt/input holds: a string, strings, token ids or token-id lists."""
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return len(value)
        if all(_is_int(v) for v in value):
            return 1
        if all(_token_list(v) for v in value):
            return len(value)
    raise _invalid(
        param,
        f"'{param}' must be a string, an array of strings, an array of token ids or an array of "
        "token-id arrays (none of them empty).",
    )


def completion_request(body: Json) -> RequestFacts:
    model = _model(body)
    if "prompt" not in body:
        raise _invalid("prompt", "Missing required parameter: 'prompt'.")
    count = input_count(body["prompt"], "prompt")
    stream, include_usage = _stream(body)
    return RequestFacts(model, stream, include_usage, count)


def embeddings_request(body: Json) -> RequestFacts:
    model = _model(body)
    if "input" not in body:
        raise _invalid("input", "Missing required parameter: 'input'.")
    count = input_count(body["input"], "input")
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise _invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'.")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise _invalid("dimensions", "'dimensions' must be a positive integer.")
    return RequestFacts(model, input_count=count, encoding=encoding)
