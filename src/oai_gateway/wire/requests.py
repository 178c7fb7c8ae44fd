"""Client request bodies: parsed, checked against OpenAI's schema (SPEC §5), and the facts the
gateway itself relies on taken out of them.

The type and range checks live in `request_schema`; unknown fields pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from oai_gateway.errors import InvalidRequestError
from oai_gateway.wire.request_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    check,
)

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
    """`stream` and `stream_options.include_usage`, types already checked."""
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    include = bool(options.get("include_usage")) if isinstance(options, dict) else False
    return stream, stream and include


def chat_request(body: Json) -> RequestFacts:
    model = _model(body)
    if body.get("messages") is None:
        raise _invalid("messages", "Missing required parameter: 'messages'.")
    check(body, ChatCompletionRequest)
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
    check(body, CompletionRequest)
    stream, include_usage = _stream(body)
    return RequestFacts(model, stream, include_usage, count)


def embeddings_request(body: Json) -> RequestFacts:
    model = _model(body)
    if "input" not in body:
        raise _invalid("input", "Missing required parameter: 'input'.")
    count = input_count(body["input"], "input")
    check(body, EmbeddingRequest)
    encoding = body.get("encoding_format") or "float"
    return RequestFacts(model, input_count=count, encoding=encoding)
