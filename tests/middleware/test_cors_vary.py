"""With CORS on, every answer says it varies by Origin, whatever the request's origin was.

A shared cache that stored an answer given without CORS headers (no Origin, or a foreign one)
must not hand it to an allowed origin, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

ALLOWED = "https://app.example.com"
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture(scope="module")
def cors_on(custom_upstream: OpenAICompatUpstream) -> Iterator[GatewayServer]:
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        cors_allow_origins=ALLOWED,
    )
    with GatewayServer(config) as server:
        yield server


def varies_by_origin(response: httpx.Response) -> bool:
    values = ",".join(response.headers.get_list("vary"))
    return "origin" in {v.strip().lower() for v in values.split(",")}


@pytest.mark.parametrize("origin", [None, "https://evil.example.com", ALLOWED])
@pytest.mark.parametrize("path", ["/custom/v1/models", "/healthz", "/nowhere"])
def test_vary_origin_on_every_answer(cors_on: GatewayServer, origin: str | None, path: str) -> None:
    headers = dict(AUTH)
    if origin is not None:
        headers["origin"] = origin
    response = httpx.get(cors_on.url + path, headers=headers, timeout=10)
    assert varies_by_origin(response), (path, origin, response.headers)
    if origin == ALLOWED:
        assert response.headers["access-control-allow-origin"] == ALLOWED
    else:
        assert "access-control-allow-origin" not in response.headers


def test_no_vary_when_cors_is_off(client: httpx.Client) -> None:
    response = client.get("/custom/v1/models", headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert not varies_by_origin(response)
