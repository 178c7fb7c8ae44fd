"""Upstream errors name the provider, never its address: messages reach clients and spans."""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_upstreams import Fault, OpenAICompatUpstream


@pytest.mark.parametrize("provider", ["custom", "ollama", "cerebras"])
def test_an_upstream_failure_names_the_provider_not_its_url(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    upstream.fault = Fault(kind="reset_before_headers")
    response = client.get(f"/{provider}/v1/models")
    assert response.status_code == 502, response.text
    message = response.json()["error"]["message"]
    assert f"'{provider}'" in message
    assert upstream.base_url.removeprefix("http://") not in message
    assert "127.0.0.1" not in message
