"""Ollama's one-prompt-per-call fan-out is bounded: a legacy completion with many prompts runs
at most the provider's `max_prompts_in_flight` generations at once (4 unless the providers file
says otherwise), and the first failure cancels the rest."""

from __future__ import annotations

from pathlib import Path

import httpx

from oai_gateway.config.settings import ProviderSpec
from tests.conftest import GATEWAY_KEY
from tests.support.fake_upstreams import Fault, OllamaUpstream
from tests.support.gateway import GatewayServer, make_config

MAX_PROMPTS_IN_FLIGHT = ProviderSpec(name="x", kind="ollama", base_url="").max_prompts_in_flight

PROMPTS = [f"prompt {i}" for i in range(12)]


def complete(client: httpx.Client) -> httpx.Response:
    body = {"model": "llama3.2:1b", "prompt": PROMPTS, "max_tokens": 1}
    return client.post("/ollama/v1/completions", json=body)


def test_many_prompts_run_a_few_at_a_time(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    ollama_upstream.fault = Fault(kind="delay_headers", delay_s=0.1)
    response = complete(client)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == len(PROMPTS)
    assert len(ollama_upstream.requests) == len(PROMPTS)
    assert ollama_upstream.most_in_flight == MAX_PROMPTS_IN_FLIGHT


def test_the_first_failure_cancels_the_prompts_not_yet_sent(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    ollama_upstream.fault = Fault(kind="status", status=400, body=b"no")
    response = complete(client)
    assert response.status_code == 400, response.text
    # Given a second to arrive, the prompts not yet sent must never reach the upstream.
    assert not ollama_upstream.wait_for_requests(len(PROMPTS), 1.0)
    assert len(ollama_upstream.requests) <= 2 * MAX_PROMPTS_IN_FLIGHT


def test_the_bound_is_a_providers_file_setting(
    ollama_upstream: OllamaUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(
        f'[providers.ollama]\nkind = "ollama"\nbase_url = "{ollama_upstream.base_url}"\n'
        "max_prompts_in_flight = 2\n",
        encoding="utf-8",
    )
    config = make_config(providers_file=str(path), allowed_api_keys=GATEWAY_KEY)
    ollama_upstream.fault = Fault(kind="delay_headers", delay_s=0.1)
    with GatewayServer(config) as server, server.client() as client:
        response = complete(client)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == len(PROMPTS)
    assert ollama_upstream.most_in_flight == 2
