"""CreateResponse → chat completion request, for providers in `translate` mode (SPEC §9).

Every field OpenAI's CreateResponse defines is either mapped to its chat equivalent, accepted
and ignored (it changes nothing for a stateless gateway), or refused with 400
`unsupported_parameter` naming it, before anything is sent upstream. Fields the gateway does not
know pass through to the chat request unchanged, as on every other route (SPEC §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from oai_gateway.errors import InvalidRequestError, UnsupportedParameterError
from oai_gateway.wire import request_schema
from oai_gateway.wire.request_schema import Metadata, Object, Temperature, TopP
from oai_gateway.wire.requests import RequestFacts
from oai_gateway.wire.responses.input_items import messages

Json = dict[str, Any]

_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier")
_IGNORED = frozenset(
    {
        "store",
        "include",
        "prompt_cache_key",
        "prompt_cache_retention",
        "client_metadata",
        "metadata",
        "service_tier",
        "max_tool_calls",
        "stream_options",
        "background",
        "truncation",
        "context_management",
    }
)
_HANDLED = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "stream"}
    | {"max_output_tokens", "top_logprobs", *_PASSED}
)
_STATEFUL = ("previous_response_id", "conversation", "prompt")


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    """The chat completion body to send, and whether the client asked for a stream."""

    chat: Json
    stream: bool


def translate(body: Json, *, drop_unsupported: bool = False) -> TranslatedRequest:
    """The chat completion request that answers this CreateResponse body."""
    _refuse_stateful(body)
    chat: Json = {k: v for k, v in body.items() if k not in _HANDLED and k not in _IGNORED}
    chat["model"] = body["model"]
    chat["messages"] = messages(body.get("instructions"), body.get("input"))
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    tools = _tools(body.get("tools"), drop_unsupported)
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), drop_unsupported)
        if choice is not None:
            chat["tool_choice"] = choice
    chat.update(_generation(body))
    stream = body.get("stream") is True
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return TranslatedRequest(chat, stream)


def _refuse_stateful(body: Json) -> None:
    for name in _STATEFUL:
        if body.get(name) is not None:
            raise UnsupportedParameterError(
                f"'{name}' needs responses stored by the server; this provider translates the "
                "Responses API to chat completions and the gateway stores nothing. Send the whole "
                "conversation in 'input' instead.",
                param=name,
            )
    if body.get("background") is True:
        raise UnsupportedParameterError(
            "'background' responses need a response store; this provider cannot serve them.",
            param="background",
        )
    if body.get("truncation") == "auto":
        raise UnsupportedParameterError(
            "'truncation': 'auto' cannot be translated to chat completions; leave it out.",
            param="truncation",
        )


def _generation(body: Json) -> Json:
    out: Json = {}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    top_logprobs = body.get("top_logprobs")
    if isinstance(top_logprobs, int) and top_logprobs > 0:
        out["logprobs"] = True
        out["top_logprobs"] = top_logprobs
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, dict):
        form = _response_format(text.get("format"))
        if form is not None:
            out["response_format"] = form
        if text.get("verbosity") is not None:
            out["verbosity"] = text["verbosity"]
    return out


def _response_format(form: Any) -> Json | None:
    if not isinstance(form, dict) or form.get("type") in (None, "text"):
        return None
    if form.get("type") == "json_object":
        return {"type": "json_object"}
    if form.get("type") != "json_schema":
        raise InvalidRequestError(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.", param="text"
        )
    schema = {k: form[k] for k in ("name", "description", "schema", "strict") if k in form}
    return {"type": "json_schema", "json_schema": schema}


def _tools(tools: Any, drop_unsupported: bool) -> list[Json]:
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise InvalidRequestError("'tools' must be an array of tool objects.", param="tools")
    out: list[Json] = []
    for tool in tools:
        if tool.get("type") == "function":
            out.append(_function_tool(tool))
        elif not drop_unsupported:
            raise UnsupportedParameterError(
                f"The built-in tool '{tool.get('type')}' cannot be translated to chat "
                "completions: send only function tools, or set drop_unsupported_params = true "
                "for this provider to drop the others.",
                param="tools",
            )
    return out


def _function_tool(tool: Json) -> Json:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("Each function tool needs a string 'name'.", param="tools")
    function: Json = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, drop_unsupported: bool) -> Any:
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError("'tool_choice.name' must be a string.", param="tool_choice")
        return {"type": "function", "function": {"name": name}}
    if drop_unsupported:
        return None
    raise UnsupportedParameterError(
        "This 'tool_choice' cannot be translated to chat completions: use 'none', 'auto', "
        "'required' or a function.",
        param="tool_choice",
    )


def facts(body: Json) -> RequestFacts:
    """The body check of `POST /responses`, in every mode."""
    stream = check(body)
    return RequestFacts(body["model"], stream=stream)


class CreateResponseRequest(Struct):
    """The top-level fields of `CreateResponse` and their types and ranges, checked with the same
    machinery as the chat request (`wire/request_schema.py`). Items, tools and formats inside are
    only required to be objects here: translation checks the fields it reads, and a native
    upstream judges the rest."""

    model: str
    input: str | list[Object] | None = None
    instructions: str | None = None
    stream: bool | None = None
    metadata: Metadata | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Meta(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_tool_calls: Annotated[int, Meta(ge=0)] | None = None
    text: Object | None = None
    tools: list[Object] | None = None
    tool_choice: str | Object | None = None
    prompt: Object | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: Object | None = None
    include: list[str] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    stream_options: Object | None = None
    conversation: str | Object | None = None
    context_management: list[Object] | None = None


def check(body: Json) -> bool:
    """Check the body's top-level fields against OpenAI's schema; returns whether a stream is
    asked for. Run in every mode, before anything is sent upstream (SPEC §5)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        missing = model is None
        message = (
            "Missing required parameter: 'model'."
            if missing
            else "'model' must be a non-empty string."
        )
        raise InvalidRequestError(message, param="model")
    request_schema.check(body, CreateResponseRequest)
    if body.get("input") is None and body.get("prompt") is None:
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input")
    return body.get("stream") is True
