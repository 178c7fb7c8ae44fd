"""The official OpenAI SDK through the gateway to a real llama-server (SPEC §6, §7).

Each test runs through both ways of configuring the same server: the built-in `custom` provider
and the named `local` provider from a providers file. Generations are a few tokens long and use
llama-server's `ignore_eos` (an unknown field the gateway must pass through, §5) so that token
counts and finish reasons are exact even though the model is a tiny base model.
"""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import MODEL, sdk_for
from tests.support.gateway import GatewayServer

pytestmark = pytest.mark.e2e

EXACT = {"ignore_eos": True}
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


def test_models_list_and_retrieve(sdk: openai.OpenAI) -> None:
    page = sdk.models.list()
    assert [m.id for m in page.data] == [MODEL]
    listed = page.data[0]
    assert (listed.object, listed.owned_by) == ("model", "llamacpp")
    # llama-server adds `aliases`, `tags`, `architecture`, `meta`: not OpenAI fields.
    assert not listed.model_extra
    # Not `created`: llama-server reports the current time there, so it changes between calls.
    retrieved = sdk.models.retrieve(MODEL)
    assert (retrieved.id, retrieved.object, retrieved.owned_by) == (MODEL, "model", "llamacpp")
    assert not retrieved.model_extra


def test_retrieve_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("no-such-model")
    assert caught.value.status_code == 404
    assert (caught.value.code, caught.value.type, caught.value.param) == (
        "model_not_found",
        "invalid_request_error",
        "model",
    )


def test_chat_completion(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, extra_body=EXACT)
    assert answer.object == "chat.completion"
    assert answer.model == MODEL
    assert answer.id.startswith("chatcmpl-")
    assert len(answer.choices) == 1
    choice = answer.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "length", None)
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.content
    assert choice.message.refusal is None  # llama-server omits it; OpenAI always sends it
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 6
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 6
    assert "timings" not in (answer.model_extra or {})


def test_chat_completion_n_choices(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=2, n=2, extra_body=EXACT
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in answer.choices)


def test_chat_completion_logprobs(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=2, logprobs=True, top_logprobs=2, extra_body=EXACT
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert len(logprobs.content) == 2
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in logprobs.content)


def test_chat_stream_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {MODEL}
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5
    assert all(c.usage is None for c in body)
    assert [len(c.choices) for c in body] == [1] * len(body)
    roles = [c.choices[0].delta.role for c in body]
    assert roles[0] == "assistant"
    assert roles[1:] == [None] * (len(body) - 1)
    reasons = [c.choices[0].finish_reason for c in body]
    assert reasons == [None] * (len(body) - 1) + ["length"]
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text
    assert all("timings" not in (c.model_extra or {}) for c in chunks)


def test_chat_stream_without_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=3, stream=True, extra_body=EXACT
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert all(len(c.choices) == 1 for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_chunks_agree_on_model(llm_gateway: GatewayServer) -> None:
    """Every chunk of one stream names the same model, also when the request used another name:
    llama-server (as `custom`, without an allow-list) answers with its alias whatever the
    request said, so the final usage chunk must not fall back to the requested name."""
    with sdk_for(llm_gateway, "custom") as sdk:
        stream = sdk.chat.completions.create(
            model="my-favourite-model",
            messages=CHAT,
            max_tokens=2,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=EXACT,
        )
        chunks = list(stream)
    assert chunks[-1].usage is not None
    assert [c.model for c in chunks] == [MODEL] * len(chunks)


def test_chat_stream_logprobs(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=2,
        stream=True,
        logprobs=True,
        top_logprobs=2,
        extra_body=EXACT,
    )
    tokens = [
        token
        for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None
        for token in choice.logprobs.content or []
    ]
    assert len(tokens) == 2
    assert all(len(t.top_logprobs) == 2 for t in tokens)


def test_completion_logprobs(sdk: openai.OpenAI) -> None:
    answer = sdk.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=2, logprobs=2, extra_body=EXACT
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert len(logprobs.tokens) == 2
    assert logprobs.token_logprobs is not None
    assert len(logprobs.token_logprobs) == 2


def test_completion(sdk: openai.OpenAI) -> None:
    answer = sdk.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=4, extra_body=EXACT
    )
    assert answer.object == "text_completion"
    assert answer.model == MODEL
    assert len(answer.choices) == 1
    choice = answer.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "length", None)
    assert choice.text
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 4
    assert "timings" not in (answer.model_extra or {})


def test_completion_prompt_array(sdk: openai.OpenAI) -> None:
    answer = sdk.completions.create(
        model=MODEL, prompt=["Once upon a time", "The sky is"], max_tokens=2, extra_body=EXACT
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.text and c.finish_reason == "length" for c in answer.choices)


def test_completion_stream_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"text_completion"}
    assert len({c.id for c in chunks}) == 1
    *body, last = chunks
    # llama-server puts usage on its last text chunk; OpenAI sends it alone, after the text.
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    assert all(c.usage is None and len(c.choices) == 1 for c in body)
    reasons = [c.choices[0].finish_reason for c in body]
    assert reasons == [None] * (len(body) - 1) + ["length"]
    assert "".join(c.choices[0].text for c in body)


def test_completion_stream_without_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=3, stream=True, extra_body=EXACT
    )
    chunks = list(stream)
    # llama-server sends usage on the last chunk even unasked; OpenAI sends none.
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embeddings_float_batch(sdk: openai.OpenAI) -> None:
    inputs = ["a red apple", "the stock market", "a green pear"]
    answer = sdk.embeddings.create(model=MODEL, input=inputs, encoding_format="float")
    assert answer.object == "list"
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert all(d.object == "embedding" and len(d.embedding) == 640 for d in answer.data)
    assert all(abs(_norm(d.embedding) - 1) < 1e-3 for d in answer.data)
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens
    # Distinct inputs really are embedded separately, in input order.
    vectors = [d.embedding for d in answer.data]
    assert len({tuple(v) for v in vectors}) == 3


def test_embeddings_base64_matches_float(sdk: openai.OpenAI) -> None:
    text = "a red apple"
    floats = sdk.embeddings.create(model=MODEL, input=text, encoding_format="float")
    raw = sdk.embeddings.create(model=MODEL, input=[text], encoding_format="base64")
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)  # the SDK hands explicit base64 back undecoded
    decoded = struct.unpack("<640f", base64.b64decode(encoded))
    # The SDK's default asks for base64 too and decodes it itself.
    default = sdk.embeddings.create(model=MODEL, input=text)
    for other in (list(decoded), default.data[0].embedding):
        assert len(other) == 640
        assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, other, strict=True)) < 1e-6
