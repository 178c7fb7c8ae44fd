"""The official `openai` Python SDK, sync and async, as the gateway's client.

Whatever the gateway answers must be what the SDK expects from OpenAI: parsed into its types,
streams iterated to the end, every error of SPEC §5 raised as the exception class OpenAI's own
status would give, with `.code`/`.type` filled, and the SDK's own retry policy working (the
gateway never retries once the upstream has seen the request).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, AsyncStream, OpenAI, Stream
from pydantic import BaseModel

from tests.conftest import CHAT_MODEL, GATEWAY_KEY
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
    openai_error_body,
)
from tests.support.gateway import GatewayServer, make_config

Json = dict[str, Any]
FLAVOURS = ("sync", "async")
EMBED_MODEL = {"custom": "org/model-a", "ollama": "nomic-embed-text:latest"}
PROMPT = "hello brave new world"
USER = [{"role": "user", "content": PROMPT}]
WEATHER_TOOL: Json = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def run(
    flavour: str,
    base_url: str,
    action: Callable[[Any], Any],
    *,
    max_retries: int = 0,
    api_key: str = GATEWAY_KEY,
    **kw: Any,
) -> Any:
    """`action(client)` with a sync or async SDK client; streams and pages read to the end."""
    if flavour == "sync":
        with OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, **kw) as c:
            result = action(c)
            return list(result) if isinstance(result, Stream) else result

    async def go() -> Any:
        async with AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=max_retries, **kw
        ) as c:
            result = action(c)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, AsyncStream):
                return [chunk async for chunk in result]
            return result

    return asyncio.run(go())


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def url(gateway: GatewayServer) -> Callable[[str], str]:
    return lambda provider: f"{gateway.url}/{provider}/v1"


# -- models ------------------------------------------------------------------------------------


def test_models_list_and_retrieve(
    flavour: str, provider: str, upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    page = run(flavour, url(provider), lambda c: c.models.list())
    ids = [m.id for m in page.data]
    assert ids == upstream.models
    assert all(m.object == "model" and isinstance(m.created, int) for m in page.data)
    model = run(flavour, url(provider), lambda c: c.models.retrieve(CHAT_MODEL[provider]))
    assert isinstance(model, openai.types.Model)
    assert model.id == CHAT_MODEL[provider]


# -- embeddings --------------------------------------------------------------------------------


@pytest.mark.parametrize("embedder", sorted(EMBED_MODEL))
def test_embeddings_float_and_base64_agree(
    flavour: str,
    embedder: str,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    url: Callable[[str], str],
) -> None:
    model, inputs = EMBED_MODEL[embedder], ["first text", "second text"]
    floats = run(
        flavour,
        url(embedder),
        lambda c: c.embeddings.create(model=model, input=inputs, encoding_format="float"),
    )
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = run(flavour, url(embedder), lambda c: c.embeddings.create(model=model, input=inputs))
    assert [d.index for d in floats.data] == [0, 1]
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    assert all(isinstance(x, float) for x in floats.data[0].embedding)
    assert floats.usage.prompt_tokens > 0
    upstream = custom_upstream if embedder == "custom" else ollama_upstream
    assert len(upstream.requests) == 2
    if embedder == "custom":  # Ollama always gets floats and the gateway encodes (SPEC §6.2)
        assert upstream.requests[1].json["encoding_format"] == "base64"


# -- legacy completions ------------------------------------------------------------------------


def test_completions_plain_and_stream(
    flavour: str, provider: str, upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    model = CHAT_MODEL[provider]
    done = run(flavour, url(provider), lambda c: c.completions.create(model=model, prompt=PROMPT))
    assert done.object == "text_completion"
    assert done.choices[0].text == PROMPT
    assert done.choices[0].finish_reason == "stop"
    chunks = run(
        flavour,
        url(provider),
        lambda c: c.completions.create(
            model=model, prompt=PROMPT, stream=True, stream_options={"include_usage": True}
        ),
    )
    assert all(ch.object == "text_completion" for ch in chunks)
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == PROMPT
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len(upstream.requests) == 2


# -- chat --------------------------------------------------------------------------------------


def test_chat_plain(
    flavour: str, provider: str, upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    model = CHAT_MODEL[provider]
    done = run(
        flavour, url(provider), lambda c: c.chat.completions.create(model=model, messages=USER)
    )
    assert done.object == "chat.completion"
    assert done.model == model
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content == PROMPT
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.total_tokens > 0
    assert done._request_id  # x-request-id reaches the SDK
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "include-usage"])
def test_chat_stream(
    flavour: str, provider: str, url: Callable[[str], str], include_usage: bool
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = run(
        flavour,
        url(provider),
        lambda c: c.chat.completions.create(
            model=CHAT_MODEL[provider], messages=USER, stream=True, **options
        ),
    )
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1
    choice_chunks = [ch for ch in chunks if ch.choices]
    assert choice_chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in choice_chunks) == PROMPT
    assert [ch.choices[0].finish_reason for ch in choice_chunks][-1] == "stop"
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens > 0
    else:
        assert all(ch.usage is None for ch in chunks)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_chat_tool_call_round_trip(
    flavour: str,
    provider: str,
    upstream: OpenAICompatUpstream,
    url: Callable[[str], str],
    stream: bool,
) -> None:
    model = CHAT_MODEL[provider]
    ask: list[Json] = [{"role": "user", "content": "weather in Oslo?"}]
    if stream:
        chunks = run(
            flavour,
            url(provider),
            lambda c: c.chat.completions.create(
                model=model, messages=ask, tools=[WEATHER_TOOL], stream=True
            ),
        )
        calls = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
        assert calls
        assert all(tc.index == 0 for tc in calls)
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(tc.function.arguments or "" for tc in calls)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
    else:
        done = run(
            flavour,
            url(provider),
            lambda c: c.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL]),
        )
        [call] = done.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        finish = done.choices[0].finish_reason
    assert finish == "tool_calls"
    assert name == "get_weather"
    assert json.loads(arguments) == {"input": "weather in Oslo?"}
    follow: list[Json] = [
        *ask,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"},
    ]
    answer = run(
        flavour,
        url(provider),
        lambda c: c.chat.completions.create(model=model, messages=follow, tools=[WEATHER_TOOL]),
    )
    assert answer.choices[0].message.content == "sunny, 21 C"
    assert answer.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].json["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}
    assert sent[-2]["tool_calls"][0]["id"] == call_id


def test_chat_stream_helper_accumulates_tool_calls(
    flavour: str, custom_upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    # The SDK's `.stream()` helper merges deltas by `index`: fragments must be shaped exactly.
    ask: list[Json] = [{"role": "user", "content": "weather in Oslo?"}]

    def action(c: Any) -> Any:
        kwargs: Json = {"model": "gpt-test", "messages": ask, "tools": [WEATHER_TOOL]}
        if isinstance(c, OpenAI):
            with c.chat.completions.stream(**kwargs) as s:
                return s.get_final_completion()

        async def final() -> Any:
            async with c.chat.completions.stream(**kwargs) as s:
                return await s.get_final_completion()

        return final()

    done = run(flavour, url("custom"), action)
    [call] = done.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": "weather in Oslo?"}
    assert done.choices[0].message.role == "assistant"


def test_chat_n_choices(
    flavour: str, custom_upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    done = run(
        flavour,
        url("custom"),
        lambda c: c.chat.completions.create(model="gpt-test", messages=USER, n=3),
    )
    assert [c.index for c in done.choices] == [0, 1, 2]
    assert all(c.message.content == PROMPT for c in done.choices)
    chunks = run(
        flavour,
        url("custom"),
        lambda c: c.chat.completions.create(model="gpt-test", messages=USER, n=2, stream=True),
    )
    for index in (0, 1):
        text = "".join(
            ch.choices[0].delta.content or ""
            for ch in chunks
            if ch.choices and ch.choices[0].index == index
        )
        assert text == PROMPT
    assert custom_upstream.requests[0].json["n"] == 3


def test_chat_n_on_ollama_is_refused_not_silently_ignored(
    flavour: str, ollama_upstream: OllamaUpstream, url: Callable[[str], str]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        run(
            flavour,
            url("ollama"),
            lambda c: c.chat.completions.create(model=CHAT_MODEL["ollama"], messages=USER, n=2),
        )
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "n"
    assert ollama_upstream.requests == []


class City(BaseModel):
    city: str
    days: int


def test_chat_response_format(
    flavour: str, provider: str, upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    # The fakes echo the prompt, so a JSON prompt yields JSON content.
    content = '{"city": "Oslo", "days": 3}'
    ask = [{"role": "user", "content": content}]
    model = CHAT_MODEL[provider]
    done = run(
        flavour,
        url(provider),
        lambda c: c.chat.completions.create(
            model=model, messages=ask, response_format={"type": "json_object"}
        ),
    )
    assert json.loads(done.choices[0].message.content) == {"city": "Oslo", "days": 3}
    assert upstream.requests[0].json["response_format"] == {"type": "json_object"}
    parsed = run(
        flavour,
        url(provider),
        lambda c: c.chat.completions.parse(model=model, messages=ask, response_format=City),
    )
    assert parsed.choices[0].message.parsed == City(city="Oslo", days=3)
    sent = upstream.requests[1].json["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "City"


def test_chat_developer_role_and_max_completion_tokens(
    flavour: str, provider: str, upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    messages = [{"role": "developer", "content": "Be terse."}, *USER]
    done = run(
        flavour,
        url(provider),
        lambda c: c.chat.completions.create(
            model=CHAT_MODEL[provider], messages=messages, max_completion_tokens=2
        ),
    )
    assert done.choices[0].message.content == "hello brave"
    assert done.choices[0].finish_reason == "length"
    roles = [m["role"] for m in upstream.requests[0].json["messages"]]
    assert roles == (["developer", "user"] if provider == "custom" else ["system", "user"])


# -- every row of SPEC §5 as the SDK sees it ---------------------------------------------------


def _raises(
    flavour: str, base_url: str, action: Callable[[Any], Any], **kw: Any
) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        run(flavour, base_url, action, **kw)
    return caught.value


def _check(
    exc: openai.APIStatusError,
    cls: type[openai.APIStatusError],
    status: int,
    type_: str,
    code: str | None,
) -> None:
    assert type(exc) is cls, f"{type(exc).__name__} is not {cls.__name__}: {exc}"
    assert exc.status_code == status
    assert exc.type == type_
    assert exc.code == code
    assert isinstance(exc.body, dict)
    assert isinstance(exc.body.get("message"), str)
    assert exc.request_id  # x-request-id on errors too


def _chat(model: str = "gpt-test", **extra: Any) -> Callable[[Any], Any]:
    return lambda c: c.chat.completions.create(model=model, messages=USER, **extra)


def test_error_body_not_an_object(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(
        flavour, url("custom"), lambda c: c.post("/chat/completions", body=[1], cast_to=object)
    )
    _check(exc, openai.BadRequestError, 400, "invalid_request_error", None)


def test_error_field_with_wrong_value(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(flavour, url("custom"), _chat(stream_options={"include_usage": "yes"}))
    _check(exc, openai.BadRequestError, 400, "invalid_request_error", None)
    assert exc.param == "stream_options"


def test_error_missing_field(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(
        flavour, url("custom"), lambda c: c.chat.completions.create(model="gpt-test", messages=[])
    )
    _check(exc, openai.BadRequestError, 400, "invalid_request_error", None)
    assert exc.param == "messages"


def test_error_bad_gateway_key(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(flavour, url("custom"), lambda c: c.models.list(), api_key="wrong-key")
    _check(exc, openai.AuthenticationError, 401, "invalid_request_error", "invalid_api_key")
    assert exc.response.headers["www-authenticate"] == "Bearer"


def test_error_unknown_provider(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(flavour, url("nope"), lambda c: c.models.list())
    _check(exc, openai.NotFoundError, 404, "invalid_request_error", "provider_not_found")


def test_error_unconfigured_builtin_provider(flavour: str, tight: GatewayServer) -> None:
    # The `tight` gateway has no CEREBRAS_API_KEY: the message says which variable to set.
    exc = _raises(flavour, f"{tight.url}/cerebras/v1", lambda c: c.models.list())
    _check(exc, openai.NotFoundError, 404, "invalid_request_error", "provider_not_found")
    assert "CEREBRAS_API_KEY" in exc.message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_error_model_not_found(
    flavour: str, provider: str, url: Callable[[str], str], stream: bool
) -> None:
    exc = _raises(flavour, url(provider), _chat("no-such-model", stream=stream))
    _check(exc, openai.NotFoundError, 404, "invalid_request_error", "model_not_found")
    retrieve = _raises(flavour, url(provider), lambda c: c.models.retrieve("no-such-model"))
    _check(retrieve, openai.NotFoundError, 404, "invalid_request_error", "model_not_found")


def test_error_unsupported_operation(
    flavour: str, cerebras_upstream: CerebrasUpstream, url: Callable[[str], str]
) -> None:
    exc = _raises(
        flavour,
        url("cerebras"),
        lambda c: c.embeddings.create(model="llama3.1-8b", input="hi"),
    )
    _check(exc, openai.BadRequestError, 400, "invalid_request_error", "unsupported_operation")
    assert cerebras_upstream.requests == []


def test_error_unknown_path(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(flavour, url("custom"), lambda c: c.get("/no/such/path", cast_to=object))
    _check(exc, openai.NotFoundError, 404, "invalid_request_error", None)


def test_error_wrong_method(flavour: str, url: Callable[[str], str]) -> None:
    exc = _raises(flavour, url("custom"), lambda c: c.delete("/chat/completions", cast_to=object))
    _check(exc, openai.APIStatusError, 405, "invalid_request_error", None)


@pytest.fixture(scope="module")
def tight(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    """A gateway with a tiny body limit and a short upstream timeout."""
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        max_request_bytes=2048,
        request_timeout_s=0.3,
    )
    with GatewayServer(config) as server:
        yield server


def test_error_body_too_large(
    flavour: str, tight: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    big = [{"role": "user", "content": "x" * 4096}]
    exc = _raises(
        flavour,
        f"{tight.url}/custom/v1",
        lambda c: c.chat.completions.create(model="gpt-test", messages=big),
    )
    _check(exc, openai.APIStatusError, 413, "invalid_request_error", None)
    assert custom_upstream.requests == []


def test_error_upstream_timeout(
    flavour: str, tight: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="delay_headers", delay_s=1.0)
    exc = _raises(flavour, f"{tight.url}/custom/v1", _chat())
    _check(exc, openai.InternalServerError, 504, "api_error", "upstream_timeout")


def test_error_unexpected(
    flavour: str, tight: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr(tight.app.registry.providers["custom"], "list_models", broken)
    exc = _raises(flavour, f"{tight.url}/custom/v1", lambda c: c.models.list())
    _check(exc, openai.InternalServerError, 500, "api_error", None)
    assert "internal detail" not in exc.response.text


# Upstream status -> (SDK class, gateway status, type, code) per SPEC §5.
UPSTREAM_ERRORS: list[tuple[int, bytes, type[openai.APIStatusError], int, str, str | None]] = [
    (
        400,
        openai_error_body("bad stop", param="stop", code="invalid_value"),
        openai.BadRequestError,
        400,
        "invalid_request_error",
        "invalid_value",
    ),
    (
        404,
        openai_error_body("no such thing", code="not_here"),
        openai.NotFoundError,
        404,
        "invalid_request_error",
        "not_here",
    ),
    (
        409,
        openai_error_body("conflict", code="conflict"),
        openai.ConflictError,
        409,
        "invalid_request_error",
        "conflict",
    ),
    (413, openai_error_body("too big"), openai.APIStatusError, 413, "invalid_request_error", None),
    (
        422,
        openai_error_body("unprocessable", code="bad_schema"),
        openai.BadRequestError,
        400,
        "invalid_request_error",
        "bad_schema",
    ),
    (401, b"nope", openai.InternalServerError, 502, "api_error", "upstream_auth_failed"),
    (403, b"nope", openai.InternalServerError, 502, "api_error", "upstream_auth_failed"),
    (
        429,
        openai_error_body("slow down", "requests", code="rate_limit_exceeded"),
        openai.RateLimitError,
        429,
        "requests",
        "rate_limit_exceeded",
    ),
    (
        429,
        openai_error_body("no credit", "insufficient_quota", code="insufficient_quota"),
        openai.RateLimitError,
        429,
        "insufficient_quota",
        "insufficient_quota",
    ),
    (500, b"boom", openai.InternalServerError, 502, "api_error", "upstream_error"),
    (503, b"busy", openai.InternalServerError, 502, "api_error", "upstream_error"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    "case", UPSTREAM_ERRORS, ids=lambda case: f"upstream-{case[0]}-{case[5] or case[4]}"
)
def test_error_from_upstream_status(
    flavour: str,
    custom_upstream: OpenAICompatUpstream,
    url: Callable[[str], str],
    case: tuple[int, bytes, type[openai.APIStatusError], int, str, str | None],
    stream: bool,
) -> None:
    status, body, cls, gateway_status, type_, code = case
    custom_upstream.fault = Fault(kind="status", status=status, body=body)
    exc = _raises(flavour, url("custom"), _chat(stream=stream))
    _check(exc, cls, gateway_status, type_, code)
    assert len(custom_upstream.requests) == 1


def test_error_upstream_unreachable(
    flavour: str, custom_upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    custom_upstream.fault = Fault(kind="reset_before_headers")
    exc = _raises(flavour, url("custom"), _chat())
    _check(exc, openai.InternalServerError, 502, "api_error", "upstream_error")


def test_error_invalid_upstream_response(
    flavour: str, custom_upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    custom_upstream.fault = Fault(kind="invalid_json")
    exc = _raises(flavour, url("custom"), _chat())
    _check(exc, openai.InternalServerError, 502, "api_error", "upstream_error")


def test_error_mid_stream_is_an_api_error(
    flavour: str, custom_upstream: OpenAICompatUpstream, url: Callable[[str], str]
) -> None:
    custom_upstream.fault = Fault(kind="stream_break", after_chunks=1)
    with pytest.raises(openai.APIError) as caught:
        run(flavour, url("custom"), _chat(stream=True))
    assert not isinstance(caught.value, openai.APIStatusError)  # headers were already sent
    assert caught.value.type == "api_error"
    assert caught.value.code == "upstream_error"


# -- the SDK's retries: the gateway passes the signal, the SDK retries, the upstream counts ------


@pytest.mark.parametrize(
    ("status", "headers", "body", "attempts"),
    [
        (429, {"retry-after": "0"}, openai_error_body("slow", code="rate_limit_exceeded"), 3),
        (429, {"retry-after-ms": "10"}, openai_error_body("slow", code="rate_limit_exceeded"), 3),
        (500, {"retry-after-ms": "10"}, b"boom", 3),
        (400, {}, openai_error_body("bad request"), 1),
    ],
    ids=["429-retry-after-0", "429-retry-after-ms", "500", "400"],
)
def test_sdk_retries_and_the_gateway_does_not(
    flavour: str,
    custom_upstream: OpenAICompatUpstream,
    *,
    url: Callable[[str], str],
    status: int,
    headers: dict[str, str],
    body: bytes,
    attempts: int,
) -> None:
    custom_upstream.fault = Fault(kind="status", status=status, body=body, headers=headers)
    with pytest.raises(openai.APIStatusError):
        run(flavour, url("custom"), _chat(), max_retries=2, timeout=5.0)
    assert len(custom_upstream.requests) == attempts
