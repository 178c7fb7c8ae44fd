"""Models list and retrieve through every provider (SPEC §6.1), over HTTP and via the SDK."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

# Where each provider's model list comes from upstream: Ollama's native tags, else /v1/models.
LIST_PATH = {"custom": "/v1/models", "ollama": "/api/tags", "cerebras": "/v1/models"}
# Ids each fake upstream serves by default, in its order.
UPSTREAM_MODELS = {
    "custom": ["org/model-a", "llama3.2:1b", "gpt-test"],
    "ollama": ["llama3.2:1b", "myorg/custom:latest", "nomic-embed-text:latest"],
    "cerebras": ["llama3.1-8b", "gpt-oss-120b", "zai-glm-4.7"],
}
# Ids holding `/` and `:` that the gateway must treat as one path segment's worth of id.
ODD_IDS = ("org/model-a", "llama3.2:1b", "deep/er/name:tag-1")


def assert_model(model: Any) -> None:
    assert isinstance(model, dict)
    assert set(model) == {"id", "object", "created", "owned_by"}
    assert model["object"] == "model"
    assert isinstance(model["id"], str)
    assert model["id"]
    assert isinstance(model["created"], int)
    assert not isinstance(model["created"], bool)
    assert isinstance(model["owned_by"], str)
    assert model["owned_by"]


def only_list_requests(provider: str, upstream: OpenAICompatUpstream) -> None:
    """The upstream saw nothing but model-list calls, at exactly the list path."""
    assert upstream.requests, "the gateway never asked the upstream"
    for seen in upstream.requests:
        assert (seen.method, seen.path) == ("GET", LIST_PATH[provider])


@pytest.fixture
def odd_ids(upstream: OpenAICompatUpstream) -> Iterator[None]:
    """Serve ids with `/` and `:` from the upstream for one test, then restore its list."""
    saved = list(upstream.models)
    upstream.models.extend(m for m in ODD_IDS if m not in upstream.models)
    try:
        yield
    finally:
        upstream.models[:] = saved


# -- list ----------------------------------------------------------------------------------------


def test_list_shape_and_ids(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    response = client.get(f"/{provider}/v1/models")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"object", "data"}
    assert body["object"] == "list"
    for model in body["data"]:
        assert_model(model)
    assert [m["id"] for m in body["data"]] == UPSTREAM_MODELS[provider]
    only_list_requests(provider, upstream)


def _tag_time(day_offset: int) -> int:
    """The fake Ollama's modified_at for its Nth tag: alternately -08:00 and Z, a day apart."""
    tz = timezone(timedelta(hours=-8)) if day_offset % 2 == 0 else UTC
    when = datetime(2024, 12, 7, 11, 41, 24, tzinfo=tz) - timedelta(days=day_offset)
    return int(when.timestamp())


def test_ollama_list_comes_from_tags(client: httpx.Client, ollama_upstream: OllamaUpstream) -> None:
    tags = httpx.get(f"{ollama_upstream.base_url}/api/tags", timeout=5).json()["models"]
    ollama_upstream.clear()
    response = client.get("/ollama/v1/models")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [m["id"] for m in data] == [t["model"] for t in tags]
    # modified_at carries nanoseconds and a zone offset; created must be the same instant.
    assert tags[0]["modified_at"].endswith(".539218186-08:00")
    assert tags[1]["modified_at"].endswith(".539218186Z")
    assert [m["created"] for m in data] == [_tag_time(i) for i in range(len(tags))]
    assert data[0]["created"] == 1733600484  # 2024-12-07T19:41:24Z
    assert [m["owned_by"] for m in data] == ["library", "myorg", "library"]
    assert [(r.method, r.path) for r in ollama_upstream.requests] == [("GET", "/api/tags")]


def test_ollama_empty_tags_is_empty_list() -> None:
    with (
        OllamaUpstream(models=[]) as ollama,
        GatewayServer(make_config(ollama_base_url=ollama.base_url)) as gateway,
    ):
        response = httpx.get(f"{gateway.url}/ollama/v1/models", timeout=5)
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "list", "data": []}


# -- retrieve ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("odd_ids")
@pytest.mark.parametrize("model_id", ODD_IDS)
def test_retrieve_ids_with_slash_and_colon(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream, model_id: str
) -> None:
    response = client.get(f"/{provider}/v1/models/{model_id}")
    assert response.status_code == 200, response.text
    model = response.json()
    assert_model(model)
    assert model["id"] == model_id
    only_list_requests(provider, upstream)


def test_retrieve_matches_list_entry(client: httpx.Client, provider: str) -> None:
    listed = client.get(f"/{provider}/v1/models").json()["data"]
    for entry in listed:
        response = client.get(f"/{provider}/v1/models/{entry['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == entry


def test_retrieve_unknown_model_404(client: httpx.Client, provider: str) -> None:
    response = client.get(f"/{provider}/v1/models/no-such-model")
    error = check_error(response, 404, "model_not_found")
    assert error["type"] == "invalid_request_error"
    assert "no-such-model" in error["message"]


def test_ollama_bare_name_resolves_to_latest(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    saved = list(ollama_upstream.models)
    ollama_upstream.models.append("llama3.2:latest")
    try:
        bare = client.get("/ollama/v1/models/llama3.2")
        full = client.get("/ollama/v1/models/llama3.2:latest")
        missing = client.get("/ollama/v1/models/nomic-embed")
    finally:
        ollama_upstream.models[:] = saved
    assert bare.status_code == 200, bare.text
    assert bare.json()["id"] == "llama3.2:latest"
    assert bare.json() == full.json()
    check_error(missing, 404, "model_not_found")


def test_ollama_bare_name_without_latest_is_404(client: httpx.Client) -> None:
    # Only llama3.2:1b exists: a bare name must not match some other tag.
    check_error(client.get("/ollama/v1/models/llama3.2"), 404, "model_not_found")


def _raw_get(gateway: GatewayServer, raw_path: str) -> tuple[int, dict[str, Any]]:
    """GET a path byte for byte: httpx would normalise `..` and re-quote escapes."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {GATEWAY_KEY}")
        conn.endheaders()
        response = conn.getresponse()
        status = response.status
        body: dict[str, Any] = httpx.Response(status, content=response.read()).json()
    finally:
        conn.close()
    return status, body


@pytest.mark.parametrize(
    "tail",
    [
        "../chat/completions",
        "../../../v1/chat/completions",
        "..%2F..%2Fapi%2Fdelete",
        "a%2F..%2F..%2Fembeddings",
        "%2E%2E%2F%2E%2E%2Fapi%2Ftags",
        "gpt-test%3Fx=1",
        "x/../../../admin",
    ],
)
def test_retrieve_crafted_path_never_reaches_other_upstream_path(
    gateway: GatewayServer, provider: str, upstream: OpenAICompatUpstream, tail: str
) -> None:
    status, body = _raw_get(gateway, f"/{provider}/v1/models/{tail}")
    assert status == 404, body
    assert body["error"]["code"] == "model_not_found"
    only_list_requests(provider, upstream)


def test_retrieve_query_string_is_not_forwarded(
    gateway: GatewayServer, provider: str, upstream: OpenAICompatUpstream
) -> None:
    model_id = UPSTREAM_MODELS[provider][0]
    status, body = _raw_get(gateway, f"/{provider}/v1/models/{model_id}?x=../../chat/completions")
    assert status == 200, body
    assert body["id"] == model_id
    only_list_requests(provider, upstream)


# -- official SDK --------------------------------------------------------------------------------


def sdk(gateway: GatewayServer, provider: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10
    )


def test_sdk_models_list_and_retrieve(gateway: GatewayServer, provider: str) -> None:
    with sdk(gateway, provider) as api:
        listed = list(api.models.list())
        assert [m.id for m in listed] == UPSTREAM_MODELS[provider]
        assert all(m.object == "model" and isinstance(m.created, int) for m in listed)
        one = api.models.retrieve(listed[1].id)
    assert one.id == listed[1].id
    assert one.owned_by == listed[1].owned_by
    assert one.created == listed[1].created


def test_sdk_unknown_model_raises_not_found(gateway: GatewayServer, provider: str) -> None:
    with sdk(gateway, provider) as api, pytest.raises(openai.NotFoundError) as caught:
        api.models.retrieve("no-such-model")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"
