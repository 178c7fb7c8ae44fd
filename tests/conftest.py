"""Shared fixtures: one set of loopback upstreams and one gateway in front of all of them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from oai_gateway.config.loader import Config
from oai_gateway.upstream import client as upstream_client
from tests.support.fake_upstreams import CerebrasUpstream, OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, gateway_client, make_config
from tests.support.spec import begin_test, take_violations
from tests.support.values import (
    CEREBRAS_KEY,
    CHAT_MODEL,
    CUSTOM_KEY,
    GATEWAY_KEY,
    PROVIDERS,
)

# Test modules still import these names from here; tests/support/values.py is their home.
__all__ = ["CEREBRAS_KEY", "CHAT_MODEL", "CUSTOM_KEY", "GATEWAY_KEY", "PROVIDERS"]

pytest_plugins = ["tests.support.log_guard"]  # fails the session if a log record carries a key


@pytest.fixture(scope="session")
def custom_upstream() -> Iterator[OpenAICompatUpstream]:
    with OpenAICompatUpstream(api_key=CUSTOM_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def ollama_upstream() -> Iterator[OllamaUpstream]:
    with OllamaUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def cerebras_upstream() -> Iterator[CerebrasUpstream]:
    with CerebrasUpstream(api_key=CEREBRAS_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _responses_match_openai_spec() -> Iterator[None]:
    """Fail any test during which the gateway sent a response that breaks OpenAI's spec."""
    begin_test()
    yield
    violations = take_violations()
    assert not violations, "responses that break OpenAI's spec:\n" + "\n".join(violations)


@pytest.fixture(scope="module", autouse=True)
def _no_tracing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module that installs tracing (a global tracer provider, upstream request hooks) must
    remove it, or every later module's requests run through it."""
    yield
    module = request.module.__name__
    assert not upstream_client.REQUEST_HOOKS, f"{module} left upstream request hooks installed"
    otel = sys.modules.get("opentelemetry.trace")
    provider = getattr(otel, "_TRACER_PROVIDER", None)
    assert provider is None, f"{module} left a global tracer provider: {provider!r}"


@pytest.fixture(autouse=True)
def _fresh_upstreams(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with upstreams that behave normally and have seen no requests."""
    servers = [
        request.getfixturevalue(name)
        for name in ("custom_upstream", "ollama_upstream", "cerebras_upstream")
        if name in request.fixturenames
    ]
    for server in servers:
        server.clear()
    yield
    for server in servers:
        server.clear()


def config_for(
    custom: OpenAICompatUpstream,
    ollama: OllamaUpstream,
    cerebras: CerebrasUpstream,
    **settings: Any,
) -> Config:
    """The gateway key and all three built-in providers in front of the given upstreams."""
    return make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama.base_url,
        cerebras_base_url=cerebras.base_url + "/v1",
        cerebras_api_key=CEREBRAS_KEY,
        **settings,
    )


@contextmanager
def short_timeout_client(
    custom: OpenAICompatUpstream,
    ollama: OllamaUpstream,
    cerebras: CerebrasUpstream,
    timeout_s: float,
) -> Iterator[httpx.Client]:
    """A client of a second gateway, in front of the same upstreams, with a short timeout."""
    config = config_for(custom, ollama, cerebras, request_timeout_s=timeout_s)
    with gateway_client(config) as http:
        yield http


@pytest.fixture(scope="session")
def gateway(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    config = config_for(custom_upstream, ollama_upstream, cerebras_upstream, request_timeout_s=3)
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def gateway_url(gateway: GatewayServer) -> str:
    return gateway.url


@pytest.fixture
def client(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with gateway.client() as http:
        yield http


def upstream_for(
    provider: str,
    custom: OpenAICompatUpstream,
    ollama: OllamaUpstream,
    cerebras: CerebrasUpstream,
) -> OpenAICompatUpstream:
    return {"custom": custom, "ollama": ollama, "cerebras": cerebras}[provider]


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def upstream(
    provider: str,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> OpenAICompatUpstream:
    """The loopback upstream behind the parametrised `provider`."""
    return upstream_for(provider, custom_upstream, ollama_upstream, cerebras_upstream)
