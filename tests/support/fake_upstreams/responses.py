"""`/v1/responses` for the OpenAI-compatible fake: the same fake model as its chat endpoint,
answered as a Responses model streams (exact OpenAI events), or as llama.cpp's server does
(`deviant`: no `sequence_number`, `output_index` or `content_index`, bare lifecycle objects).

Written independently of the gateway's own translator, so the two can disagree.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .base import JSON, ReplyError, json_response

if TYPE_CHECKING:
    from .openai_compat import OpenAICompatUpstream

_DEVIANT_DROPS = ("sequence_number", "output_index", "content_index", "logprobs")


def chat_messages(body: JSON) -> list[JSON]:
    """The conversation of a CreateResponse body, as the fake model reads chat messages."""
    items = body.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[JSON] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            out.append({"role": "tool", "content": str(item.get("output"))})
        elif "role" in item:
            content = item.get("content")
            if isinstance(content, list):
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            out.append({"role": item["role"], "content": content})
    return out


def chat_tools(body: JSON) -> JSON:
    """The fields of a chat request the fake model needs to decide on a tool call."""
    tools = [
        {"type": "function", "function": {"name": t["name"]}}
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    ]
    out: JSON = {"tools": tools}  # the Responses tools must not reach the fake chat model
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    if isinstance(body.get("max_output_tokens"), int):
        out["max_tokens"] = body["max_output_tokens"]
    return out


def _echo_tool(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"description": None, "parameters": None, "strict": True, **tool}
    return tool


class ResponsesEndpoint:
    """The Responses API of one fake server; stored answers can be fetched back by id."""

    def __init__(self, server: OpenAICompatUpstream) -> None:
        self.server = server  # the OpenAI-compatible fake: its model, auth, faults and SSE
        self.deviant = False
        self.stored: dict[str, JSON] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._create)
        app.router.add_get("/v1/responses/{id}", self._get)
        app.router.add_delete("/v1/responses/{id}", self._delete)
        app.router.add_post("/v1/responses/{id}/cancel", self._cancel)
        app.router.add_get("/v1/responses/{id}/input_items", self._input_items)

    def _response(self, body: JSON, model: str) -> JSON:
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": False,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": [],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [_echo_tool(t) for t in body.get("tools") or []],
            "top_p": 1.0,
            "truncation": "disabled",
            "metadata": body.get("metadata") or {},
        }

    def _items(self, out: Any) -> list[JSON]:
        items: list[JSON] = []
        if out.reasoning is not None:
            items.append(
                {
                    "id": f"rs_{uuid.uuid4().hex}",
                    "type": "reasoning",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": out.reasoning}],
                }
            )
        if out.tool_call is not None:
            fn = out.tool_call["function"]
            items.append(
                {
                    "id": f"fc_{uuid.uuid4().hex}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": out.tool_call["id"],
                    "name": fn["name"],
                    "arguments": fn["arguments"],
                }
            )
        else:
            part: JSON = {
                "type": "output_text",
                "text": out.content or "",
                "annotations": [],
                "logprobs": [],
            }
            status = "incomplete" if out.finish_reason == "length" else "completed"
            items.append(
                {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [part],
                }
            )
        return items

    async def _create(self, request: web.Request) -> web.StreamResponse:
        server = self.server
        body = await server.read_json(request)
        model = server.require_model(request, body)
        if not isinstance(body.get("input"), str | list):
            return server.error(request, 400, "'input' is required", param="input")
        out = server.generate({**body, **chat_tools(body)}, chat_messages(body))
        response = self._response(body, model)
        items = self._items(out)
        prompt = max(1, sum(len(str(m.get("content")).split()) for m in chat_messages(body)))
        final = {
            **response,
            "output": items,
            "status": "completed",
            "completed_at": int(time.time()),
            "usage": {
                "input_tokens": prompt,
                "output_tokens": out.completion_tokens,
                "total_tokens": prompt + out.completion_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        if out.finish_reason == "length":
            final.update(
                status="incomplete",
                completed_at=None,
                incomplete_details={"reason": "max_output_tokens"},
            )
        self.stored[final["id"]] = {**final, "_input": body.get("input")}
        if body.get("stream") is not True:
            return json_response(200, self._deviant_response(final) if self.deviant else final)
        events = stream_events(response, final, server.stream_chunks)
        if self.deviant:
            events = [self._deviant_event(e) for e in events]
        return await server.sse(request, events, done=False, named=True)

    def _deviant_response(self, response: JSON) -> JSON:
        kept = ("id", "object", "created_at", "status", "model", "output", "usage")
        out = {k: response[k] for k in kept if k in response}
        if "usage" in out:
            out["usage"] = {k: v for k, v in out["usage"].items() if k != "output_tokens_details"}
            del out["usage"]["input_tokens_details"]["cache_write_tokens"]
        return out

    def _deviant_event(self, event: JSON) -> JSON:
        out = {k: v for k, v in event.items() if k not in _DEVIANT_DROPS}
        if event["type"] in ("response.created", "response.in_progress"):
            out["response"] = {k: event["response"][k] for k in ("id", "object", "status")}
        elif "response" in event:
            out["response"] = self._deviant_response(event["response"])
            out["timings"] = {"prompt_n": 1, "predicted_n": 1}
        if event["type"] == "response.function_call_arguments.done":
            del out["name"]
        return out

    def _stored(self, request: web.Request) -> JSON:
        found = self.stored.get(request.match_info["id"])
        if found is None:
            message = f"No response found with id '{request.match_info['id']}'."
            raise ReplyError(self.server.error(request, 404, message, param="response_id"))
        return found

    def _public(self, found: JSON) -> JSON:
        return {k: v for k, v in found.items() if not k.startswith("_")}

    async def _get(self, request: web.Request) -> web.Response:
        return json_response(200, self._public(self._stored(request)))

    async def _delete(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        del self.stored[found["id"]]
        return json_response(200, {"id": found["id"], "object": "response", "deleted": True})

    async def _cancel(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        return json_response(200, {**self._public(found), "status": "cancelled"})

    async def _input_items(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        raw = found["_input"]
        items = (
            [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
            if isinstance(raw, str)
            else raw
        )
        data = [{"id": f"msg_{i}", **item} for i, item in enumerate(items)]
        return json_response(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": "msg_0",
                "last_id": f"msg_{len(data) - 1}",
                "has_more": False,
            },
        )


def stream_events(response: JSON, final: JSON, pieces: int) -> list[JSON]:
    """OpenAI's event sequence for a finished response, text split into `pieces` deltas."""
    events: list[JSON] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
    ]
    for index, item in enumerate(final["output"]):
        events.extend(_item_events(index, item, pieces))
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": kind, "response": final})
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def _item_events(index: int, item: JSON, pieces: int) -> list[JSON]:
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "function_call":
        opened = {**item, "status": "in_progress", "arguments": ""}
        args = item["arguments"]
        cut = len(args) // 2
        return [
            {"type": "response.output_item.added", "output_index": index, "item": opened},
            *(
                {"type": "response.function_call_arguments.delta", **where, "delta": d}
                for d in (args[:cut], args[cut:])
                if d
            ),
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": args,
            },
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
    part = item["content"][0]
    text = part.get("text", "")
    kind = "reasoning_text" if item["type"] == "reasoning" else "output_text"
    empty = {**part, "text": ""}
    opened = {**item, "content": [], **({"status": "in_progress"} if "status" in item else {})}
    size = max(1, -(-len(text) // max(1, pieces)))
    deltas = [text[i : i + size] for i in range(0, len(text), size)]
    extra: JSON = {"logprobs": []} if kind == "output_text" else {}
    return [
        {"type": "response.output_item.added", "output_index": index, "item": opened},
        {"type": "response.content_part.added", **where, "content_index": 0, "part": empty},
        *(
            {"type": f"response.{kind}.delta", **where, "content_index": 0, "delta": d, **extra}
            for d in deltas
        ),
        {"type": f"response.{kind}.done", **where, "content_index": 0, "text": text, **extra},
        {"type": "response.content_part.done", **where, "content_index": 0, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
