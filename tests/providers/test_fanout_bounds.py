"""Ollama's one-prompt-per-call fan-out is bounded: a legacy completion with many prompts runs
at most MAX_PROMPTS_IN_FLIGHT generations at once, and the first failure cancels the rest."""

from __future__ import annotations

import httpx

from oai_gateway.providers.fanout import MAX_PROMPTS_IN_FLIGHT
from tests.support.fake_upstreams import Fault, OllamaUpstream

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
