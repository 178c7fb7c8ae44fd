"""Chat completion chunks → Responses stream events (SPEC §9 translate mode).

A pure state machine: it is fed the upstream's chat chunks (parsed JSON objects) one by one and
returns the events to send, in exactly the order OpenAI sends them, numbered from 0. One output
item is open at a time; a delta of another kind (reasoning, text, a new tool call) closes it
with its `.done` events first, as a Responses model streams them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oai_gateway.wire.responses import objects
from oai_gateway.wire.responses.answer import reasoning_text

Json = dict[str, Any]


@dataclass(slots=True)
class _Item:
    """The output item being streamed."""

    kind: str  # "message" | "reasoning" | "function_call"
    ident: str
    index: int
    parts: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    tool_index: int = -1

    def text(self) -> str:
        return "".join(self.parts)

    def item(self, status: str) -> Json:
        if self.kind == "message":
            parts = [objects.text_part(self.text())] if status != "in_progress" else []
            return objects.message_item(self.ident, parts, status)
        if self.kind == "reasoning":
            text = self.text() if status != "in_progress" else None
            return objects.reasoning_item(self.ident, text, status)
        arguments = self.text() if status != "in_progress" else ""
        return objects.function_call_item(self.ident, self.call_id, self.name, arguments, status)


def _content_part(item: _Item, text: str) -> Json:
    if item.kind == "message":
        return objects.text_part(text)
    return {"type": "reasoning_text", "text": text}


class ChatStreamTranslator:
    """One translated stream: `start()`, then `chunk()` per upstream chunk, then `finish()` —
    or `fail()` when the upstream fails after the first event."""

    __slots__ = ("_calls", "_finish_reason", "_open", "_output", "_response", "_sequence", "usage")

    def __init__(self, *, model: str, echoed: Json) -> None:
        self._response = objects.envelope(objects.new_id("resp"), model, echoed)
        self._sequence = 0
        self._output: list[Json] = []
        self._open: _Item | None = None
        self._calls: dict[int, Json] = {}  # tool index → its finished function_call item
        self._finish_reason: Any = None
        self.usage: Json | None = None  # the chat usage the upstream reported, for accounting

    def _event(self, kind: str, **fields: Any) -> Json:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    @property
    def fresh(self) -> bool:
        """Nothing sent yet: `start()` comes next."""
        return self._sequence == 0

    def start(self) -> list[Json]:
        return [
            self._event("response.created", response=self._response),
            self._event("response.in_progress", response=self._response),
        ]

    def chunk(self, chunk: Json) -> list[Json]:
        """The events one upstream chat chunk gives rise to (often exactly one)."""
        found = chunk.get("usage")
        if isinstance(found, dict):
            self.usage = found
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return []
        events: list[Json] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, events)
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice["finish_reason"]
        return events

    def _delta(self, delta: Json, events: list[Json]) -> None:
        reasoning = reasoning_text(delta)
        if reasoning is not None:
            self._text("reasoning", reasoning, events)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._text("message", content, events)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for fragment in calls:
                if isinstance(fragment, dict):
                    self._tool_fragment(fragment, events)

    def _text(self, kind: str, text: str, events: list[Json]) -> None:
        item = self._open
        if item is None or item.kind != kind:
            item = self._begin(kind, events)
        item.parts.append(text)
        name = (
            "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        )
        extra: Json = {"logprobs": []} if kind == "message" else {}
        events.append(
            self._event(
                name,
                item_id=item.ident,
                output_index=item.index,
                content_index=0,
                delta=text,
                **extra,
            )
        )

    def _begin(self, kind: str, events: list[Json], **call: Any) -> _Item:
        self._close("completed", events)
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind]
        item = _Item(kind, objects.new_id(prefix), len(self._output), **call)
        self._open = item
        events.append(
            self._event(
                "response.output_item.added", output_index=item.index, item=item.item("in_progress")
            )
        )
        if kind != "function_call":
            events.append(self._part_event("response.content_part.added", item, ""))
        return item

    def _part_event(self, kind: str, item: _Item, text: str) -> Json:
        part = _content_part(item, text)
        return self._event(
            kind, item_id=item.ident, output_index=item.index, content_index=0, part=part
        )

    def _tool_fragment(self, fragment: Json, events: list[Json]) -> None:
        position = fragment.get("index")
        position = position if isinstance(position, int) else 0
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        item = self._open
        if item is None or item.kind != "function_call" or item.tool_index != position:
            if position in self._calls:  # a late fragment of a finished call: keep its text
                self._calls[position]["arguments"] += arguments
                return
            item = self._begin_call(position, fragment, function, events)
        if arguments:
            item.parts.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.ident,
                    output_index=item.index,
                    delta=arguments,
                )
            )

    def _begin_call(
        self, position: int, fragment: Json, function: Json, events: list[Json]
    ) -> _Item:
        call_id = fragment.get("id")
        name = function.get("name")
        return self._begin(
            "function_call",
            events,
            call_id=call_id if isinstance(call_id, str) and call_id else objects.new_id("call"),
            name=name if isinstance(name, str) else "",
            tool_index=position,
        )

    def _close(self, status: str, events: list[Json]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        text = item.text()
        where = {"item_id": item.ident, "output_index": item.index}
        if item.kind == "message":
            events.append(
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                )
            )
        elif item.kind == "reasoning":
            events.append(
                self._event("response.reasoning_text.done", **where, content_index=0, text=text)
            )
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done", **where, name=item.name, arguments=text
                )
            )
        if item.kind != "function_call":
            events.append(self._part_event("response.content_part.done", item, text))
        done = item.item(status)
        if item.kind == "function_call":
            self._calls[item.tool_index] = done
        self._output.append(done)
        events.append(self._event("response.output_item.done", output_index=item.index, item=done))

    def finish(self) -> list[Json]:
        """The closing events once the upstream's stream has ended cleanly."""
        reason = objects.incomplete_reason(self._finish_reason)
        events: list[Json] = []
        self._close("completed" if reason is None else "incomplete", events)
        final = objects.finished(
            self._response,
            output=self._output,
            usage=objects.usage(self.usage),
            status="completed" if reason is None else "incomplete",
        )
        if reason is not None:
            final["incomplete_details"] = {"reason": reason}
            events.append(self._event("response.incomplete", response=final))
        else:
            events.append(self._event("response.completed", response=final))
        return events

    def fail(self, code: str, message: str) -> list[Json]:
        """The one `response.failed` event for an upstream failure after the stream began."""
        output = list(self._output)
        if self._open is not None:
            output.append(self._open.item("incomplete"))
            self._open = None
        final = objects.finished(
            self._response, output=output, usage=objects.usage(self.usage), status="failed"
        )
        final["error"] = {"code": code, "message": message}
        return [self._event("response.failed", response=final)]
