"""Named providers from a providers file (SPEC §3.2) serving every endpoint, with allow-lists,
extra headers, their own keys and timeouts, and overriding a built-in name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CEREBRAS_KEY, CUSTOM_KEY, GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.gateway import GatewayServer, make_config
from tests.support.sse import stream_chunks

SLOW_TIMEOUT_S = 0.3
DELAY_S = 0.8  # longer than slow's timeout, well inside the gateway-wide one
ALLOWED = "gpt-test"
NOT_ALLOWED = "org/model-a"  # served by the upstream, but not on mini's allow-list


@pytest.fixture(scope="module")
def named(
    tmp_path_factory: pytest.TempPathFactory,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    custom = custom_upstream.base_url + "/v1"
    text = f"""
[providers.mini]
kind = "openai"
base_url = "{custom}"
api_key_env = "MINI_KEY"
models = ["{ALLOWED}"]
headers = {{ "X-Title" = "my-app", "X-Team" = "blue" }}

[providers.slow]
kind = "openai"
base_url = "{custom}"
api_key_env = "MINI_KEY"
timeout_s = {SLOW_TIMEOUT_S}

[providers.ollama]
kind = "openai"
base_url = "{custom}"
api_key_env = "MINI_KEY"

[providers.local]
kind = "ollama"
base_url = "{ollama_upstream.base_url}/v1"
models = ["llama3.2:1b", "nomic-embed-text:latest"]

[providers.cb]
kind = "cerebras"
base_url = "{cerebras_upstream.base_url}/v1"
api_key_env = "CB_KEY"
models = ["gpt-oss-120b"]
"""
    path: Path = tmp_path_factory.mktemp("named") / "providers.toml"
    path.write_text(text, encoding="utf-8")
    config = make_config(
        providers_file=str(path),
        env={"MINI_KEY": CUSTOM_KEY, "CB_KEY": CEREBRAS_KEY},
        allowed_api_keys=GATEWAY_KEY,
        # The built-in ollama points at the real fake Ollama: the file's entry must win.
        ollama_base_url=ollama_upstream.base_url,
        request_timeout_s=10,
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def api(named: GatewayServer) -> Iterator[httpx.Client]:
    with named.client() as http:
        yield http


CHAT = {"messages": [{"role": "user", "content": "hi there"}]}


# -- allow-list ----------------------------------------------------------------------------------


def test_list_filtered_to_allow_list(
    api: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = api.get("/mini/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [ALLOWED]
    # The upstream has more: the filtering is the gateway's.
    assert len(custom_upstream.models) > 1


def test_retrieve_allowed_and_not_allowed(
    api: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    ok = api.get(f"/mini/v1/models/{ALLOWED}")
    assert ok.status_code == 200, ok.text
    assert ok.json()["id"] == ALLOWED
    custom_upstream.clear()
    error = check_error(api.get(f"/mini/v1/models/{NOT_ALLOWED}"), 404, "model_not_found")
    assert error["type"] == "invalid_request_error"
    assert NOT_ALLOWED in error["message"]
    assert custom_upstream.requests == []


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("chat/completions", CHAT),
        ("chat/completions", {**CHAT, "stream": True}),
        ("completions", {"prompt": "hi"}),
        ("completions", {"prompt": "hi", "stream": True}),
        ("embeddings", {"input": "hi"}),
    ],
)
def test_not_allowed_model_404_without_upstream_call(
    api: httpx.Client, custom_upstream: OpenAICompatUpstream, path: str, fields: dict[str, Any]
) -> None:
    response = api.post(f"/mini/v1/{path}", json={"model": NOT_ALLOWED, **fields})
    error = check_error(response, 404, "model_not_found")
    assert error["type"] == "invalid_request_error"
    assert custom_upstream.requests == []


def test_allow_list_on_ollama_kind(api: httpx.Client, ollama_upstream: OllamaUpstream) -> None:
    listed = api.get("/local/v1/models").json()["data"]
    assert [m["id"] for m in listed] == ["llama3.2:1b", "nomic-embed-text:latest"]
    ollama_upstream.clear()
    response = api.post("/local/v1/chat/completions", json={"model": "myorg/custom:latest", **CHAT})
    check_error(response, 404, "model_not_found")
    assert ollama_upstream.requests == []


# -- headers, keys, timeouts ---------------------------------------------------------------------


def test_extra_headers_and_key_reach_upstream(
    api: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    calls = [
        api.get("/mini/v1/models"),
        api.post("/mini/v1/chat/completions", json={"model": ALLOWED, **CHAT}),
        api.post("/mini/v1/embeddings", json={"model": ALLOWED, "input": "x"}),
        api.post("/mini/v1/completions", json={"model": ALLOWED, "prompt": "x", "stream": True}),
    ]
    assert [c.status_code for c in calls] == [200, 200, 200, 200]
    assert len(custom_upstream.requests) == len(calls)
    for seen in custom_upstream.requests:
        assert seen.headers["x-title"] == "my-app"
        assert seen.headers["x-team"] == "blue"
        assert seen.headers["authorization"] == f"Bearer {CUSTOM_KEY}"
        assert GATEWAY_KEY not in str(seen.headers)


def test_key_from_api_key_env_for_cerebras_kind(
    api: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    response = api.post("/cb/v1/chat/completions", json={"model": "gpt-oss-120b", **CHAT})
    assert response.status_code == 200, response.text
    assert [r.headers["authorization"] for r in cerebras_upstream.requests] == [
        f"Bearer {CEREBRAS_KEY}"
    ]
    assert "x-title" not in cerebras_upstream.requests[0].headers


@pytest.mark.parametrize("stream", [False, True])
def test_per_provider_timeout(
    api: httpx.Client, custom_upstream: OpenAICompatUpstream, stream: bool
) -> None:
    custom_upstream.fault = Fault(kind="delay_headers", delay_s=DELAY_S)
    body = {"model": ALLOWED, **CHAT, "stream": stream}
    # The answer comes after DELAY_S, which the default timeout waits for (below): a 504 means
    # slow's own, shorter timeout ended the wait before the answer came.
    response = api.post("/slow/v1/chat/completions", json=body)
    error = check_error(response, 504, "upstream_timeout")
    assert error["type"] == "api_error"
    # Same upstream, same delay, default timeout: the short one was slow's alone.
    started = time.monotonic()
    ok = api.post("/mini/v1/chat/completions", json={"model": ALLOWED, **CHAT})
    assert ok.status_code == 200, ok.text
    assert time.monotonic() - started >= DELAY_S


# -- a file entry overriding a built-in ----------------------------------------------------------


def test_file_entry_replaces_builtin_ollama(
    api: httpx.Client, custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> None:
    listed = api.get("/ollama/v1/models")
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["data"]] == custom_upstream.models
    chat = api.post("/ollama/v1/chat/completions", json={"model": "org/model-a", **CHAT})
    assert chat.status_code == 200, chat.text
    assert ollama_upstream.requests == []
    assert [(r.method, r.path) for r in custom_upstream.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    assert all(
        r.headers["authorization"] == f"Bearer {CUSTOM_KEY}" for r in custom_upstream.requests
    )


# -- a provider declared only in the file serves everything --------------------------------------

# name -> (chat/completions model, embeddings model or None when the kind has none)
FILE_ONLY: dict[str, tuple[str, str | None]] = {
    "mini": (ALLOWED, ALLOWED),
    "local": ("llama3.2:1b", "nomic-embed-text:latest"),
    "cb": ("gpt-oss-120b", None),
}


@pytest.mark.parametrize("name", sorted(FILE_ONLY))
def test_file_only_provider_serves_every_endpoint(api: httpx.Client, name: str) -> None:
    model, embedder = FILE_ONLY[name]
    listed = api.get(f"/{name}/v1/models")
    assert listed.status_code == 200, listed.text
    assert model in [m["id"] for m in listed.json()["data"]]

    one = api.get(f"/{name}/v1/models/{model}")
    assert one.status_code == 200, one.text
    assert one.json()["id"] == model
    assert one.json()["object"] == "model"

    embeddings = api.post(
        f"/{name}/v1/embeddings", json={"model": embedder or model, "input": ["a", "b"]}
    )
    if embedder is None:
        check_error(embeddings, 400, "unsupported_operation")
    else:
        assert embeddings.status_code == 200, embeddings.text
        assert [d["index"] for d in embeddings.json()["data"]] == [0, 1]

    done = api.post(f"/{name}/v1/completions", json={"model": model, "prompt": "one two"})
    assert done.status_code == 200, done.text
    assert done.json()["object"] == "text_completion"
    assert done.json()["choices"][0]["text"] == "one two"

    streamed = stream_chunks(
        api.post(
            f"/{name}/v1/completions", json={"model": model, "prompt": "one two", "stream": True}
        )
    )
    assert all(c["object"] == "text_completion" for c in streamed)
    assert "".join(ch["text"] for c in streamed for ch in c["choices"]) == "one two"

    chat = api.post(f"/{name}/v1/chat/completions", json={"model": model, **CHAT})
    assert chat.status_code == 200, chat.text
    assert chat.json()["object"] == "chat.completion"
    assert chat.json()["choices"][0]["message"]["content"] == "hi there"

    chunks = stream_chunks(
        api.post(f"/{name}/v1/chat/completions", json={"model": model, **CHAT, "stream": True})
    )
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == "hi there"


def test_sdk_against_file_provider(named: GatewayServer) -> None:
    with openai.OpenAI(
        base_url=f"{named.url}/mini/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10
    ) as client:
        assert [m.id for m in client.models.list()] == [ALLOWED]
        vectors = client.embeddings.create(model=ALLOWED, input=["a", "b"])
        assert [d.index for d in vectors.data] == [0, 1]
        assert all(isinstance(x, float) for d in vectors.data for x in d.embedding)
        chat = client.chat.completions.create(
            model=ALLOWED, messages=[{"role": "user", "content": "yo"}]
        )
        assert chat.choices[0].message.content == "yo"
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve(NOT_ALLOWED)
        assert caught.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model=NOT_ALLOWED, prompt="x")
