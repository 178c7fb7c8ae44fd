"""A native upstream's `/v1/responses` answers, in OpenAI's exact shape (SPEC §9 native mode).

llama.cpp's server, for one, omits `sequence_number`, `output_index` and `content_index` from its
events, and `output`, `created_at` and `model` from its `response.created`; the official SDKs'
`responses.stream()` cannot follow such a stream. The normaliser numbers the events, finds each
event's output item by its `item_id`, and fills what the schema requires. An event or answer
that needed nothing goes out as the upstream's bytes.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.responses import objects, shape
from oai_gateway.wire.responses.framing import frame, frame_raw

Json = dict[str, Any]

_LIFECYCLE = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_EVENT_KEYS = frozenset(
    {
        "type", "sequence_number", "response", "item", "item_id", "output_index",
        "content_index", "summary_index", "part", "delta", "text", "logprobs", "arguments",
        "name", "refusal", "annotation", "annotation_index", "code", "message", "param",
        "obfuscation", "input", "output", "status", "background", "command", "command_index",
        "output_format", "partial_image_b64", "partial_image_index", "quality", "size",
    }
)  # fmt: skip
_PART_EVENTS = frozenset({"response.content_part.added", "response.content_part.done"})


def _parse(data: bytes) -> Json:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("The upstream sent an event that is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise UpstreamError("The upstream sent an event without a type.")
    return event


def answer(raw: bytes, *, model: str, echoed: Json) -> Json | Answer:
    """A non-streamed `Response`: the upstream's bytes when exact, else filled in."""
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("The upstream's answer is not JSON.") from None
    if not isinstance(found, dict) or not isinstance(found.get("id"), str):
        raise UpstreamError("The upstream's answer is not a Response object.")
    if shape.response(found, model=model, echoed=echoed):
        return found
    usage = found.get("usage")
    return Answer(raw, usage if isinstance(usage, dict) else None)


class NativeEventNormalizer:
    """One native stream: `event()` per upstream event, returning the bytes to send."""

    __slots__ = ("_contents", "_created_at", "_done", "_echoed", "_indices", "_model", "_names",
                 "_response", "_sequence", "last_type", "usage")  # fmt: skip

    def __init__(self, *, model: str, echoed: Json) -> None:
        self._model = model
        self._echoed = echoed
        self._sequence = 0
        self._indices: dict[str, int] = {}  # item id → output_index
        self._contents: dict[str, int] = {}  # item id → content parts added so far
        self._done: dict[int, Json] = {}  # output_index → finished item
        self._names: dict[int, str] = {}  # output_index → the function a call item names
        self._created_at: int | None = None
        self._response: Json | None = None  # the last lifecycle Response seen
        self.usage: Json | None = None  # from the final event, for accounting
        self.last_type = ""  # of the last event relayed

    def event(self, kind: bytes, data: bytes) -> bytes:
        event = _parse(data)
        self.last_type = event["type"]
        changed = self._number(event)
        changed = self._fix(event) or changed
        extras = [k for k in event if k not in _EVENT_KEYS]
        for key in extras:
            del event[key]
        if changed or extras or kind != event["type"].encode():
            return frame(event)
        return frame_raw(kind, data)

    def _number(self, event: Json) -> bool:
        expected, self._sequence = self._sequence, self._sequence + 1
        if event.get("sequence_number") == expected:
            return False
        event["sequence_number"] = expected
        return True

    def _fix(self, event: Json) -> bool:
        kind = event["type"]
        if kind in _LIFECYCLE:
            return self._lifecycle(event)
        if kind in {"response.output_item.added", "response.output_item.done"}:
            return self._item(event, done=kind.endswith("done"))
        if kind == "error":
            changed = shape.fill(event, "code", None)
            return shape.fill(event, "param", None) or changed
        ident = event.get("item_id")
        if not isinstance(ident, str):
            return False
        changed = self._located(event, ident)
        if kind in _PART_EVENTS:
            changed = shape.part(event.get("part")) or changed
        if kind.startswith("response.output_text."):
            changed = shape.fill(event, "logprobs", []) or changed
        if kind == "response.function_call_arguments.done" and "name" not in event:
            event["name"] = self._call_name(event["output_index"])
            changed = True
        return changed

    def _located(self, event: Json, ident: str) -> bool:
        """`output_index` (and `content_index` for content events) from the item's id."""
        changed = False
        if not isinstance(event.get("output_index"), int):
            event["output_index"] = self._indices.get(ident, max(self._indices.values(), default=0))
            changed = True
        kind = event["type"]
        if kind == "response.content_part.added":
            self._contents[ident] = self._contents.get(ident, 0) + 1
            position = self._contents[ident] - 1
        else:
            position = max(self._contents.get(ident, 1) - 1, 0)
        if "content_index" in _CONTENT_INDEXED.get(kind, ()) and "content_index" not in event:
            event["content_index"] = position
            changed = True
        if "summary_index" in _CONTENT_INDEXED.get(kind, ()) and "summary_index" not in event:
            event["summary_index"] = position
            changed = True
        return changed

    def _item(self, event: Json, *, done: bool) -> bool:
        item = event.get("item")
        ident = item.get("id") if isinstance(item, dict) else None
        changed = False
        if not isinstance(event.get("output_index"), int):
            known = self._indices.get(ident) if isinstance(ident, str) else None
            event["output_index"] = known if known is not None else len(self._indices)
            changed = True
        if isinstance(ident, str):
            self._indices.setdefault(ident, event["output_index"])
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            self._names[event["output_index"]] = item["name"]
        changed = shape.item(item, status="completed" if done else "in_progress") or changed
        if done and isinstance(item, dict):
            self._done[event["output_index"]] = item
        return changed

    def _call_name(self, index: int) -> str:
        return self._names.get(index, "")

    def _lifecycle(self, event: Json) -> bool:
        response = event.get("response")
        if not isinstance(response, dict):
            response = event["response"] = {}
        if self._response is None:
            shape.ensure_id(response)
        elif not isinstance(response.get("id"), str):
            response["id"] = self._response["id"]
        changed = False
        if "output" not in response:
            final = event["type"] in _FINAL
            response["output"] = [self._done[i] for i in sorted(self._done)] if final else []
            changed = True
        changed = self._response_fields(response) or changed
        self._response = response
        if event["type"] in _FINAL and isinstance(response.get("usage"), dict):
            self.usage = response["usage"]
        return changed

    def _response_fields(self, response: Json) -> bool:
        if self._created_at is None:
            created = response.get("created_at")
            self._created_at = created if isinstance(created, int) else int(time.time())
        model = response.get("model")
        if isinstance(model, str) and model:
            self._model = model
        return shape.response(
            response, model=self._model, echoed=self._echoed, created_at=self._created_at
        )

    def failed(self, code: str, message: str) -> bytes:
        """A `response.failed` event of the gateway's own, for an upstream that just stopped."""
        response = dict(self._response or {"id": objects.new_id("resp")})
        response["output"] = [self._done[i] for i in sorted(self._done)]
        response["status"] = "failed"
        response["error"] = {"code": code, "message": message}
        self._response_fields(response)
        event = {"type": "response.failed", "sequence_number": self._sequence, "response": response}
        self._sequence += 1
        return frame(event)


_CONTENT_INDEXED: dict[str, tuple[str, ...]] = {
    "response.content_part.added": ("content_index",),
    "response.content_part.done": ("content_index",),
    "response.output_text.delta": ("content_index",),
    "response.output_text.done": ("content_index",),
    "response.output_text.annotation.added": ("content_index",),
    "response.refusal.delta": ("content_index",),
    "response.refusal.done": ("content_index",),
    "response.reasoning_text.delta": ("content_index",),
    "response.reasoning_text.done": ("content_index",),
    "response.reasoning_summary_part.added": ("summary_index",),
    "response.reasoning_summary_part.done": ("summary_index",),
    "response.reasoning_summary_text.delta": ("summary_index",),
    "response.reasoning_summary_text.done": ("summary_index",),
}
