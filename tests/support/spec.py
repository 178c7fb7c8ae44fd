"""Every response the integration tests receive, checked against OpenAI's own OpenAPI document.

`SpecCheckingApp` wraps the gateway's ASGI app in the test server: it sees each response as the
client does (status, body, SSE events), picks the component schema for the route and records
every violation; an autouse fixture fails the test that produced one.

The check runs before the response's last message is handed to the server, so once a client has
read a whole response its violations are already recorded: a test's last response cannot slip
past the fixture's final look. A response still unfinished when its test ends belongs to no test
(its client never saw all of it), so what it would record later is dropped instead of being
blamed on whichever test runs next.
"""

from __future__ import annotations

import base64
import struct
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from oai_gateway.server.asgi import ASGIApp, Message, Receive, Scope, Send

SPEC_PATH = Path(__file__).parents[1] / "data" / "openai-openapi.yaml"
_BASE = "urn:openai-openapi"


class _Ledger:
    """The violations seen during the running test; responses remember which test they began in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.test = 0
        self.violations: list[str] = []


_ledger = _Ledger()


def _nullable(keyword: str) -> Any:
    """Wrap a 2020-12 keyword so that `nullable: true` (OpenAPI 3.0 style) admits null."""
    original = Draft202012Validator.VALIDATORS[keyword]

    def check(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        if instance is None and schema.get("nullable") is True:
            return
        yield from original(validator, value, instance, schema)

    return check


# `nullable` may sit beside `$ref` or a combinator: every keyword that could reject null honours it.
OpenAPIValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {k: _nullable(k) for k in ("type", "enum", "$ref", "allOf", "anyOf", "oneOf")},
)


def load_spec() -> None:
    """Parse the spec now (about a second), so no later check pays for it."""
    _registry()


@cache
def _registry() -> Registry[Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)
    resource: Resource[Any] = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_BASE, resource)
    return registry


@cache
def validator(schema_name: str) -> Validator:
    schema = {"$ref": f"{_BASE}#/components/schemas/{schema_name}"}
    checker: Validator = OpenAPIValidator(schema, registry=_registry())
    return checker


def problems(schema_name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the named component schema."""
    return [
        f"{schema_name} at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in validator(schema_name).iter_errors(instance)
    ]


def _decoded_embeddings(body: Any) -> Any:
    """The spec models embeddings as floats; base64 ones are checked as the floats they carry."""
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        for item in body["data"]:
            vector = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(vector, str):
                raw = base64.b64decode(vector, validate=True)
                if len(raw) % 4:
                    raise ValueError("base64 embedding is not a whole number of float32 values")
                item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return body


def schemas_for(path: str) -> tuple[str, str] | None:
    """(response schema, stream chunk schema) for a gateway path, None if not an OpenAI route."""
    _, _, rest = path[1:].partition("/")
    if not rest.startswith("v1/"):
        return None
    rest = rest[3:]
    if rest == "models":
        return "ListModelsResponse", ""
    if rest.startswith("models/"):
        return "Model", ""
    if rest == "embeddings":
        return "CreateEmbeddingResponse", ""
    if rest == "completions":
        return "CreateCompletionResponse", "CreateCompletionResponse"
    if rest == "chat/completions":
        return "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"
    if rest == "responses" or (rest.startswith("responses/") and rest.endswith("/cancel")):
        return "Response", RESPONSE_EVENTS
    if rest.startswith("responses/") and rest.endswith("/input_items"):
        return "ResponseItemList", ""
    return "", ""


def check_response(path: str, status: int, content_type: str, body: bytes) -> list[str]:
    """The violations in one whole response as a client received it."""
    try:
        return _check_response(path, status, content_type, body)
    except ValueError as exc:  # orjson.JSONDecodeError and bad base64 included
        return [f"{path}: response body is not what the spec allows: {exc}"]


def _check_response(path: str, status: int, content_type: str, body: bytes) -> list[str]:
    schemas = schemas_for(path)
    if schemas is None or status in (204, 304) or (status == 405 and not body):
        return []
    if status >= 400 or not schemas[0]:
        return problems("ErrorResponse", orjson.loads(body)) if status >= 400 else []
    if content_type.startswith("text/event-stream") and schemas[1] == RESPONSE_EVENTS:
        return check_responses_stream(body)
    if content_type.startswith("text/event-stream"):
        return check_stream(schemas[1], body)
    parsed = orjson.loads(body)
    if schemas[0] == "CreateEmbeddingResponse":
        parsed = _decoded_embeddings(parsed)
    return problems(schemas[0], parsed)


def check_stream(chunk_schema: str, body: bytes) -> list[str]:
    found: list[str] = []
    events = body.split(b"\n\n")
    complete, tail = events[:-1], events[-1]
    if tail.strip():
        found.append(f"stream ended mid-event: {tail[:100]!r}")
    for event in complete:
        lines = [line for line in event.split(b"\n") if not line.startswith(b":")]
        if not lines:
            continue
        if len(lines) != 1 or not lines[0].startswith(b"data: "):
            found.append(f"not a single data-only event: {event[:100]!r}")
            continue
        data = lines[0][len(b"data: ") :]
        if data == b"[DONE]":
            continue
        chunk = orjson.loads(data)
        schema = "ErrorResponse" if "error" in chunk else chunk_schema
        if schema == "CreateCompletionResponse":
            chunk = _unfinished_as_finished(chunk)
        found.extend(problems(schema, chunk))
    return found


RESPONSE_EVENTS = "ResponseStreamEvent"


@cache
def event_schemas() -> dict[str, str]:
    """Responses stream event `type` → the name of its component schema.

    `ResponseStreamEvent` is an `anyOf` of some fifty event schemas; an event is checked against
    the one its `type` names, so a violation reads as that schema's, not "matches none of 50".
    """
    schemas = _registry().contents(_BASE)["components"]["schemas"]
    found: dict[str, str] = {}
    for option in schemas[RESPONSE_EVENTS]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[-1]
        found[schemas[name]["properties"]["type"]["enum"][0]] = name
    return found


def event_problems(event: Any) -> list[str]:
    """Every way one Responses stream event breaks OpenAI's schema for its type."""
    kind = event.get("type") if isinstance(event, dict) else None
    name = event_schemas().get(kind) if isinstance(kind, str) else None
    if name is None:
        return [f"not a ResponseStreamEvent type: {kind!r}"]
    return problems(name, event)


def check_responses_stream(body: bytes) -> list[str]:
    """A Responses stream as OpenAI frames it: `event: <type>` and `data: <json>` per event,
    numbered from 0, no `[DONE]`."""
    found: list[str] = []
    events = body.split(b"\n\n")
    if events[-1].strip():
        found.append(f"stream ended mid-event: {events[-1][:100]!r}")
    numbers = []
    for event in events[:-1]:
        lines = [line for line in event.split(b"\n") if not line.startswith(b":")]
        if not lines:
            continue
        if (
            len(lines) != 2
            or not lines[0].startswith(b"event: ")
            or not lines[1].startswith(b"data: ")
        ):
            found.append(f"not an `event:` + `data:` pair: {event[:100]!r}")
            continue
        parsed = orjson.loads(lines[1][len(b"data: ") :])
        if not isinstance(parsed, dict) or parsed.get("type") != lines[0][7:].decode():
            found.append(f"event name and type differ: {event[:100]!r}")
            continue
        numbers.append(parsed.get("sequence_number"))
        found.extend(event_problems(parsed))
    if numbers != list(range(len(numbers))):
        found.append(f"sequence numbers are not 0, 1, 2, …: {numbers[:20]}")
    return found


def _unfinished_as_finished(chunk: Any) -> Any:
    """The one deliberate allowance: the spec reuses the whole-response schema for legacy
    completion stream chunks, whose `finish_reason` OpenAI itself sends as null until the
    choice ends. Such a chunk is checked as if finished; everything else is checked as is."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list):
        return chunk
    fixed = [
        {**c, "finish_reason": "stop"}
        if isinstance(c, dict) and "finish_reason" in c and c["finish_reason"] is None
        else c
        for c in choices
    ]
    return {**chunk, "choices": fixed}


def current_test() -> int:
    with _ledger.lock:
        return _ledger.test


def record(found: list[str], test: int) -> None:
    """Keep the violations of a response that began during `test`, if that test still runs."""
    with _ledger.lock:
        if test == _ledger.test:
            _ledger.violations.extend(found)


def begin_test() -> None:
    """Forget earlier violations; responses that began before now no longer record any."""
    with _ledger.lock:
        _ledger.test += 1
        _ledger.violations.clear()


def take_violations() -> list[str]:
    with _ledger.lock:
        found = list(_ledger.violations)
        _ledger.violations.clear()
    return found


class SpecCheckingApp:
    """Pass-through ASGI wrapper that checks each response against the spec as it completes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        test = current_test()
        status = 0
        content_type = ""
        parts: list[bytes] = []

        async def observe(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"content-type":
                        content_type = value.decode()
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):  # checked before the last byte leaves
                    body = b"".join(parts)
                    record(check_response(scope["path"], status, content_type, body), test)
            await send(message)

        await self.app(scope, receive, observe)
