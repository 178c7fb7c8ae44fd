"""Gateway keys (SPEC §4.1): who gets in, what they learn when refused, what goes upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import CEREBRAS_KEY, CHAT_MODEL, CUSTOM_KEY, GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import CerebrasUpstream, OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

CHAT_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
SECOND_KEY = "gw-second-key-abcdef"


def assert_401(response: httpx.Response) -> str:
    error = check_error(response, 401, "invalid_api_key", type_="invalid_request_error", param=None)
    assert response.headers["www-authenticate"] == "Bearer"
    message: str = error["message"]
    return message


@pytest.fixture
def anon(gateway: GatewayServer) -> Iterator[httpx.Client]:
    """A client of the shared gateway that sends no Authorization header of its own."""
    with gateway.client(None) as http:
        yield http


@pytest.fixture(scope="module")
def open_gateway(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
) -> Iterator[GatewayServer]:
    """No ALLOWED_API_KEYS, bound to loopback: serves without authentication."""
    config = make_config(
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama_upstream.base_url,
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def two_key_gateway(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
) -> Iterator[GatewayServer]:
    config = make_config(
        allowed_api_keys=f'["{GATEWAY_KEY}", "{SECOND_KEY}"]',
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama_upstream.base_url,
    )
    with GatewayServer(config) as server:
        yield server


REFUSED_AUTHORIZATIONS = {
    "missing": None,
    "empty": "",
    "scheme-only": "Bearer",
    "bare-key": GATEWAY_KEY,
    "basic-scheme": f"Basic {GATEWAY_KEY}",
    "token-scheme": f"Token {GATEWAY_KEY}",
    "wrong-key": "Bearer gw-wrong-key",
    "key-prefix": f"Bearer {GATEWAY_KEY[:-1]}",
    "key-with-suffix": f"Bearer {GATEWAY_KEY}x",
    "two-keys": f"Bearer {GATEWAY_KEY} {GATEWAY_KEY}",
}


def _headers(authorization: str | None) -> dict[str, str]:
    return {} if authorization is None else {"authorization": authorization}


@pytest.mark.parametrize(
    "authorization", list(REFUSED_AUTHORIZATIONS.values()), ids=list(REFUSED_AUTHORIZATIONS)
)
def test_refused_keys_get_401_before_any_upstream_call(
    anon: httpx.Client, custom_upstream: OpenAICompatUpstream, authorization: str | None
) -> None:
    headers = _headers(authorization)
    chat = anon.post("/custom/v1/chat/completions", json=CHAT_BODY, headers=headers)
    models = anon.get("/custom/v1/models", headers=headers)
    assert_401(chat)
    assert_401(models)
    assert custom_upstream.requests == []


def test_every_refusal_says_the_same_thing(anon: httpx.Client) -> None:
    # A caller must not be able to tell "no key" from "almost the right key".
    messages = {
        assert_401(anon.get("/custom/v1/models", headers=_headers(value)))
        for value in REFUSED_AUTHORIZATIONS.values()
    }
    assert len(messages) == 1
    assert GATEWAY_KEY not in messages.pop()


def test_right_key_is_accepted_and_scheme_is_case_insensitive(anon: httpx.Client) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = anon.get(
            "/custom/v1/models", headers={"authorization": f"{scheme} {GATEWAY_KEY}"}
        )
        assert response.status_code == 200, (scheme, response.text)
        assert response.json()["object"] == "list"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/no-such-provider/v1/models"),
        ("POST", "/no-such-provider/v1/chat/completions"),
        ("GET", "/no-such-provider/v1/models/some-model"),
        ("POST", "/no-such-provider/v1/models"),
        ("GET", "/no-such-provider/v1/not-a-route"),
        ("GET", "/custom/v1/not-a-route"),
    ],
)
def test_auth_comes_before_provider_and_route_resolution(
    anon: httpx.Client, method: str, path: str
) -> None:
    # The 401 must not depend on whether the provider or route exists.
    assert_401(anon.request(method, path, json=CHAT_BODY))
    assert_401(anon.request(method, path, json=CHAT_BODY, headers={"authorization": "Bearer x"}))


def test_unknown_provider_with_key_is_404_provider_not_found(client: httpx.Client) -> None:
    response = client.get("/no-such-provider/v1/models")
    error = check_error(
        response, 404, "provider_not_found", type_="invalid_request_error", param=None
    )
    assert "no-such-provider" in error["message"]


def test_healthz_needs_no_key(anon: httpx.Client) -> None:
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_needs_the_key(anon: httpx.Client) -> None:
    assert_401(anon.get("/readyz"))
    assert_401(anon.get("/readyz", headers={"authorization": "Bearer gw-wrong-key"}))
    response = anon.get("/readyz", headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert response.status_code == 200, response.text


def _chat(client: httpx.Client, provider: str) -> None:
    body = {"model": CHAT_MODEL[provider], "messages": [{"role": "user", "content": "hi"}]}
    response = client.post(f"/{provider}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


def test_gateway_key_never_reaches_the_upstream(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    _chat(client, provider)
    client.get(f"/{provider}/v1/models").raise_for_status()
    assert upstream.requests
    expected = {"custom": f"Bearer {CUSTOM_KEY}", "cerebras": f"Bearer {CEREBRAS_KEY}"}
    for recorded in upstream.requests:
        assert recorded.headers.get("authorization") == expected.get(provider), recorded.path
        assert all(GATEWAY_KEY not in value for value in recorded.headers.values())
        assert GATEWAY_KEY.encode() not in recorded.body


def test_upstream_gets_the_providers_own_key(
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    _chat(client, "custom")
    assert custom_upstream.requests[-1].headers["authorization"] == f"Bearer {CUSTOM_KEY}"
    _chat(client, "cerebras")
    assert cerebras_upstream.requests[-1].headers["authorization"] == f"Bearer {CEREBRAS_KEY}"


def test_every_listed_key_is_accepted(two_key_gateway: GatewayServer) -> None:
    with two_key_gateway.client(None) as http:
        for key in (GATEWAY_KEY, SECOND_KEY):
            response = http.get("/custom/v1/models", headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200, (key, response.text)
        assert_401(http.get("/custom/v1/models", headers={"authorization": "Bearer other"}))
        assert_401(http.get("/custom/v1/models"))


def test_gateway_without_keys_serves_without_auth(
    open_gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    with open_gateway.client(None) as http:
        assert http.get("/custom/v1/models").status_code == 200
        assert http.get("/readyz").status_code == 200
        response = http.post("/custom/v1/chat/completions", json=CHAT_BODY)
        assert response.status_code == 200, response.text
        # Whatever the client sends as Authorization is not a gateway key here, and still
        # must not be relayed: the upstream only ever sees the provider's key.
        client_auth = "Bearer client-supplied-token"
        response = http.post(
            "/custom/v1/chat/completions", json=CHAT_BODY, headers={"authorization": client_auth}
        )
        assert response.status_code == 200, response.text
    assert custom_upstream.requests[-1].headers["authorization"] == f"Bearer {CUSTOM_KEY}"
    relayed = [v for r in custom_upstream.requests for v in r.headers.values()]
    assert all("client-supplied-token" not in value for value in relayed)
