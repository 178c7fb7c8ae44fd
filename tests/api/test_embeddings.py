"""Embeddings through every provider (SPEC §6.2): input forms, encodings, errors, the SDK."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.gateway import GatewayServer

EMBED_MODEL = {"custom": "org/model-a", "ollama": "nomic-embed-text:latest"}
# Providers whose upstream takes embeddings at all; cerebras has none (tested separately).
EMBEDDERS = ("custom", "ollama")
TEXTS: dict[str, Any] = {
    "string": "the quick brown fox",
    "strings": ["first input", "second", "third one here"],
}
TOKENS: dict[str, Any] = {
    "token_ids": [101, 2023, 2003, 102],
    "token_id_lists": [[101, 7592], [101, 2088, 999, 102], [7]],
}


def count_of(value: Any) -> int:
    if isinstance(value, str) or all(isinstance(v, int) for v in value):
        return 1
    return len(value)


def decode(text: str) -> list[float]:
    raw = base64.b64decode(text, validate=True)
    assert len(raw) % 4 == 0
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embed(client: httpx.Client, provider: str, **fields: Any) -> httpx.Response:
    body = {"model": EMBED_MODEL.get(provider, "llama3.1-8b"), **fields}
    return client.post(f"/{provider}/v1/embeddings", json=body)


def assert_embeddings(body: Any, count: int, kind: type) -> list[Any]:
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list"
    assert isinstance(body["model"], str)
    assert body["model"]
    usage = body["usage"]
    assert set(usage) == {"prompt_tokens", "total_tokens"}
    assert all(isinstance(v, int) for v in usage.values())
    data = body["data"]
    assert [item["index"] for item in data] == list(range(count))
    for item in data:
        assert set(item) == {"object", "index", "embedding"}
        assert item["object"] == "embedding"
        assert isinstance(item["embedding"], kind)
    return [item["embedding"] for item in data]


@pytest.fixture(params=EMBEDDERS)
def embedder(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def embed_upstream(
    embedder: str, custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> OpenAICompatUpstream:
    return {"custom": custom_upstream, "ollama": ollama_upstream}[embedder]


# -- input forms and encodings -------------------------------------------------------------------


@pytest.mark.parametrize("form", sorted(TEXTS))
def test_text_inputs_float_and_base64_agree(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream, form: str
) -> None:
    value = TEXTS[form]
    count = count_of(value)
    floats = embed(client, embedder, input=value, encoding_format="float")
    assert floats.status_code == 200, floats.text
    vectors = assert_embeddings(floats.json(), count, list)
    assert all(isinstance(x, float) for vec in vectors for x in vec)
    b64 = embed(client, embedder, input=value, encoding_format="base64")
    assert b64.status_code == 200, b64.text
    strings = assert_embeddings(b64.json(), count, str)
    assert [decode(s) for s in strings] == vectors
    # Each input has its own vector (the fake hashes the input), so order is observable.
    assert len({tuple(v) for v in vectors}) == count
    assert len(embed_upstream.requests) == 2


def test_inputs_answered_in_input_order(client: httpx.Client, embedder: str) -> None:
    texts = ["alpha", "beta", "gamma", "delta"]
    singles = [embed(client, embedder, input=t).json()["data"][0]["embedding"] for t in texts]
    batch = embed(client, embedder, input=texts)
    assert batch.status_code == 200, batch.text
    assert assert_embeddings(batch.json(), 4, list) == singles


def test_default_encoding_is_float(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream
) -> None:
    response = embed(client, embedder, input=["one", "two"])
    assert response.status_code == 200, response.text
    vectors = assert_embeddings(response.json(), 2, list)
    explicit = embed(client, embedder, input=["one", "two"], encoding_format="float").json()
    assert vectors == [item["embedding"] for item in explicit["data"]]


def test_custom_base64_from_upstream_decoded_for_float(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    # An upstream that only speaks base64 must still give float clients lists of floats.
    vec = [0.5, -0.25, 1.0]
    packed = base64.b64encode(struct.pack("<3f", *vec)).decode()
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": packed}],
        "model": "org/model-a",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    custom_upstream.fault = Fault(kind="status", status=200, body=orjson.dumps(answer))
    response = embed(client, "custom", input="x", encoding_format="float")
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["embedding"] == vec


@pytest.mark.parametrize("form", sorted(TOKENS))
def test_custom_token_inputs(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, form: str
) -> None:
    value = TOKENS[form]
    count = count_of(value)
    floats = embed(client, "custom", input=value)
    assert floats.status_code == 200, floats.text
    vectors = assert_embeddings(floats.json(), count, list)
    b64 = embed(client, "custom", input=value, encoding_format="base64")
    assert [decode(s) for s in assert_embeddings(b64.json(), count, str)] == vectors
    assert custom_upstream.requests[0].json["input"] == value


def test_custom_forwards_encoding_and_dimensions(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = embed(client, "custom", input=["a", "b"], encoding_format="base64", dimensions=3)
    assert response.status_code == 200, response.text
    strings = assert_embeddings(response.json(), 2, str)
    assert [len(decode(s)) for s in strings] == [3, 3]
    sent = custom_upstream.requests[0].json
    assert sent["dimensions"] == 3
    assert sent["input"] == ["a", "b"]


def test_dimensions_passed_through(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream
) -> None:
    response = embed(client, embedder, input=["a", "b"], dimensions=5)
    assert response.status_code == 200, response.text
    vectors = assert_embeddings(response.json(), 2, list)
    assert [len(v) for v in vectors] == [5, 5]
    assert embed_upstream.requests[0].json["dimensions"] == 5


def test_unknown_fields_passed_through(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream
) -> None:
    response = embed(client, embedder, input="a", user="u-1", truncate=True)
    assert response.status_code == 200, response.text
    sent = embed_upstream.requests[0].json
    assert sent["user"] == "u-1"
    assert sent["truncate"] is True


def test_usage_present_when_upstream_omits_it(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream
) -> None:
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]}
    embed_upstream.fault = Fault(kind="status", status=200, body=orjson.dumps(answer))
    response = embed(client, embedder, input="a")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    assert body["model"] == EMBED_MODEL[embedder]


def test_upstream_usage_kept(client: httpx.Client, embedder: str) -> None:
    body = embed(client, embedder, input=["one two", "three"]).json()
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_upstream_indexes_reordered(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream
) -> None:
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.25]},
            {"object": "embedding", "index": 0, "embedding": [0.75]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    embed_upstream.fault = Fault(kind="status", status=200, body=orjson.dumps(answer))
    response = embed(client, embedder, input=["a", "b"])
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {"object": "embedding", "index": 0, "embedding": [0.75]},
        {"object": "embedding", "index": 1, "embedding": [0.25]},
    ]


def test_fewer_embeddings_than_inputs_is_502(
    client: httpx.Client, embedder: str, embed_upstream: OpenAICompatUpstream
) -> None:
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
        "model": "m",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    embed_upstream.fault = Fault(kind="status", status=200, body=orjson.dumps(answer))
    response = embed(client, embedder, input=["a", "b", "c"])
    error = check_error(response, 502, "upstream_error")
    assert error["type"] == "api_error"
    assert "1" in error["message"]
    assert "3" in error["message"]


# -- ollama specifics ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_ollama_batch_is_one_request_without_encoding_format(
    client: httpx.Client, ollama_upstream: OllamaUpstream, encoding: str | None
) -> None:
    texts = ["one", "two", "three"]
    fields: dict[str, Any] = {"input": texts}
    if encoding is not None:
        fields["encoding_format"] = encoding
    response = embed(client, "ollama", **fields)
    assert response.status_code == 200, response.text
    kind = str if encoding == "base64" else list
    assert len(assert_embeddings(response.json(), 3, kind)) == 3
    assert len(ollama_upstream.requests) == 1
    sent = ollama_upstream.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/embeddings")
    assert sent.json["input"] == texts
    assert "encoding_format" not in sent.json


@pytest.mark.parametrize("form", sorted(TOKENS))
def test_ollama_token_inputs_rejected(
    client: httpx.Client, ollama_upstream: OllamaUpstream, form: str
) -> None:
    response = embed(client, "ollama", input=TOKENS[form])
    error = check_error(response, 400, "unsupported_operation")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "input"
    assert "ollama" in error["message"]
    assert ollama_upstream.requests == []


# -- cerebras has no embeddings ------------------------------------------------------------------


@pytest.mark.parametrize("value", [TEXTS["string"], TEXTS["strings"], TOKENS["token_ids"]])
def test_cerebras_embeddings_unsupported(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream, value: Any
) -> None:
    response = client.post("/cerebras/v1/embeddings", json={"model": "llama3.1-8b", "input": value})
    error = check_error(response, 400, "unsupported_operation")
    assert error["type"] == "invalid_request_error"
    assert "cerebras" in error["message"]
    assert "embedding" in error["message"]
    assert cerebras_upstream.requests == []


# -- request validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "a", "encoding_format": "binary"}, "encoding_format"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "dimensions": "3"}, "dimensions"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": 5}, "input"),
        ({}, "input"),
    ],
)
def test_invalid_request_400_without_upstream_call(
    client: httpx.Client,
    embedder: str,
    embed_upstream: OpenAICompatUpstream,
    fields: dict[str, Any],
    param: str,
) -> None:
    error = check_error(embed(client, embedder, **fields), 400, None)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert embed_upstream.requests == []


# -- official SDK --------------------------------------------------------------------------------


def sdk(gateway: GatewayServer, provider: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10
    )


def test_sdk_embeddings_default_base64_and_float(
    gateway: GatewayServer, client: httpx.Client, embedder: str
) -> None:
    texts = ["hello world", "bye"]
    expected = [d["embedding"] for d in embed(client, embedder, input=texts).json()["data"]]
    model = EMBED_MODEL[embedder]
    with sdk(gateway, embedder) as api:
        raw_default = api.embeddings.with_raw_response.create(model=model, input=texts)
        raw_floats = api.embeddings.with_raw_response.create(
            model=model, input=texts, encoding_format="float"
        )
    # The SDK asks for base64 by default and decodes it; the gateway must answer in kind.
    assert orjson.loads(raw_default.http_request.content)["encoding_format"] == "base64"
    assert all(isinstance(d["embedding"], str) for d in raw_default.http_response.json()["data"])
    assert orjson.loads(raw_floats.http_request.content)["encoding_format"] == "float"
    assert all(isinstance(d["embedding"], list) for d in raw_floats.http_response.json()["data"])
    default, floats = raw_default.parse(), raw_floats.parse()
    assert [d.embedding for d in default.data] == expected
    assert [d.embedding for d in floats.data] == expected
    assert [d.index for d in default.data] == [0, 1]
    assert default.usage.prompt_tokens == 3


def test_sdk_cerebras_embeddings_bad_request(
    gateway: GatewayServer, cerebras_upstream: CerebrasUpstream
) -> None:
    with sdk(gateway, "cerebras") as api, pytest.raises(openai.BadRequestError) as caught:
        api.embeddings.create(model="llama3.1-8b", input="hi")
    assert caught.value.status_code == 400
    assert caught.value.code == "unsupported_operation"
    assert cerebras_upstream.requests == []


def test_sdk_unknown_model_not_found(gateway: GatewayServer, embedder: str) -> None:
    with sdk(gateway, embedder) as api, pytest.raises(openai.NotFoundError) as caught:
        api.embeddings.create(model="no-such-embedder", input="hi")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
