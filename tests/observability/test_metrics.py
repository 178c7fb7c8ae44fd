"""GET /metrics (SPEC §4.6): every series carries the right values after a known workload."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import Fault, OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config
from tests.support.processes import GatewayProcess, base_env
from tests.support.sockets import free_port

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
CHAT = "/{provider}/v1/chat/completions"
COMPLETIONS = "/{provider}/v1/completions"
EMBEDDINGS = "/{provider}/v1/embeddings"
MODELS = "/{provider}/v1/models"
WAIT_S = 3.0


def labels(**values: str) -> Labels:
    return frozenset(values.items())


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def series(samples: Samples, name: str) -> dict[Labels, float]:
    return {key_labels: value for (n, key_labels), value in samples.items() if n == name}


class Scraper:
    """Scrapes /metrics and remembers how many scrapes it made (each one counts itself after)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.count = 0

    def scrape(self) -> Samples:
        response = self.client.get("/metrics")
        self.count += 1
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        return parse(response.text)

    def until(self, name: str, key: Labels, value: float) -> Samples:
        """Scrape until a series reaches `value` (the middleware records after the response)."""
        return self.until_true(lambda samples: samples.get((name, key)) == value)

    def until_true(self, done: Callable[[Samples], bool]) -> Samples:
        deadline = time.monotonic() + WAIT_S
        while True:
            samples = self.scrape()
            if done(samples) or time.monotonic() > deadline:
                return samples
            time.sleep(0.01)


@pytest.fixture
def fresh_gateway(
    custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream
) -> Iterator[GatewayServer]:
    """A gateway of its own, so its counters start at zero."""
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama_upstream.base_url,
        request_timeout_s=3,
    )
    with GatewayServer(config) as server:
        yield server


def add_usage(tokens: Counter[tuple[str, str, str]], provider: str, body: dict[str, Any]) -> None:
    usage = body["usage"]
    tokens[(provider, body["model"], "prompt")] += usage["prompt_tokens"]
    if usage.get("completion_tokens"):
        tokens[(provider, body["model"], "completion")] += usage["completion_tokens"]


def test_metrics_after_mixed_workload(
    fresh_gateway: GatewayServer,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
) -> None:
    tokens: Counter[tuple[str, str, str]] = Counter()
    requests: Counter[tuple[str, str, str]] = Counter()
    with fresh_gateway.client() as client:
        scraper = Scraper(client)
        for provider, model in (("custom", "gpt-test"), ("ollama", "llama3.2:1b")):
            chat = {"model": model, "messages": [{"role": "user", "content": "say hi there"}]}
            response = client.post(f"/{provider}/v1/chat/completions", json=chat)
            assert response.status_code == 200, response.text
            add_usage(tokens, provider, response.json())
            requests[(provider, CHAT, "200")] += 1

        stream_body = {
            "model": "gpt-test",
            "messages": [{"role": "user", "content": "count to five please"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with client.stream("POST", "/custom/v1/chat/completions", json=stream_body) as streamed:
            assert streamed.status_code == 200
            text = "".join(streamed.iter_text())
        events = [
            json.loads(line[6:])
            for line in text.splitlines()
            if line.startswith("data: {") and '"usage":{' in line
        ]
        assert len(events) == 1, text
        add_usage(tokens, "custom", events[0])
        requests[("custom", CHAT, "200")] += 1

        response = client.post(
            "/custom/v1/completions", json={"model": "gpt-test", "prompt": "once upon a time"}
        )
        assert response.status_code == 200, response.text
        add_usage(tokens, "custom", response.json())
        requests[("custom", COMPLETIONS, "200")] += 1

        response = client.post(
            "/custom/v1/embeddings", json={"model": "org/model-a", "input": ["a b", "c d e"]}
        )
        assert response.status_code == 200, response.text
        embedded = response.json()
        assert "completion_tokens" not in embedded["usage"]
        add_usage(tokens, "custom", embedded)
        requests[("custom", EMBEDDINGS, "200")] += 1

        assert client.get("/custom/v1/models").status_code == 200
        requests[("custom", MODELS, "200")] += 1

        custom_upstream.fault = Fault(kind="status", status=500, body=b"boom")
        response = client.post("/custom/v1/chat/completions", json=chat | {"model": "gpt-test"})
        assert response.status_code == 502
        custom_upstream.fault = Fault(
            kind="status",
            status=400,
            body=b'{"error":{"message":"bad","type":"invalid_request_error"}}',
        )
        response = client.post("/custom/v1/chat/completions", json=chat | {"model": "gpt-test"})
        assert response.status_code == 400
        custom_upstream.fault = Fault(kind="status", status=429, headers={"retry-after": "1"})
        response = client.post("/custom/v1/chat/completions", json=chat | {"model": "gpt-test"})
        assert response.status_code == 429
        custom_upstream.fault = None
        requests[("custom", CHAT, "502")] += 1
        requests[("custom", CHAT, "400")] += 1
        requests[("custom", CHAT, "429")] += 1

        response = httpx.post(f"{fresh_gateway.url}/custom/v1/chat/completions", json=chat)
        assert response.status_code == 401
        # Authentication comes before routing, so a rejected request names no provider/route.
        requests[("", "unmatched", "401")] += 1

        # A client that leaves mid-stream: counted as 499, with its first chunk timed.
        custom_upstream.fault = Fault(kind="stream_stall", after_chunks=1, delay_s=2.5)
        with client.stream("POST", "/custom/v1/chat/completions", json=stream_body) as stalled:
            assert stalled.status_code == 200
            chunks = stalled.iter_raw()  # kept: dropping the iterator would close the response
            first = next(chunks)
            assert first.startswith(b"data: {")
            during = scraper.scrape()
            assert during[("oai_gateway_requests_in_flight", labels())] == 2  # it and the scrape
        assert custom_upstream.wait_for_disconnect(WAIT_S)
        requests[("custom", CHAT, "499")] += 1

        samples = scraper.until(
            "oai_gateway_requests_total", labels(provider="custom", route=CHAT, status="499"), 1
        )
        scrapes = scraper.count - 1  # the last scrape is recorded only after it answered

    found = series(samples, "oai_gateway_requests_total")
    assert found.pop(labels(provider="", route="/metrics", status="200")) == scrapes
    expected = {
        labels(provider=p, route=r, status=s): float(n) for (p, r, s), n in requests.items()
    }
    assert found == expected

    per_route: Counter[tuple[str, str]] = Counter()
    for (provider, route, _), n in requests.items():
        per_route[(provider, route)] += n
    counts = series(samples, "oai_gateway_request_duration_seconds_count")
    assert counts.pop(labels(provider="", route="/metrics")) == scrapes
    assert counts == {labels(provider=p, route=r): float(n) for (p, r), n in per_route.items()}
    # Only requests that got as far as a provider spend time upstream.
    upstream_expected = {
        labels(provider=p, route=r): float(n) for (p, r), n in per_route.items() if p
    }
    for name in ("oai_gateway_upstream_duration_seconds", "oai_gateway_overhead_seconds"):
        assert series(samples, f"{name}_count") == upstream_expected, name
        for key, value in series(samples, f"{name}_bucket").items():
            assert value <= upstream_expected[key - {("le", dict(key)["le"])}]
    # Every second ends in the +Inf bucket, and the sums are real durations.
    inf = {
        k - {("le", "+Inf")}: v
        for k, v in series(samples, "oai_gateway_request_duration_seconds_bucket").items()
        if ("le", "+Inf") in k
    }
    inf.pop(labels(provider="", route="/metrics"))
    assert inf == {labels(provider=p, route=r): float(n) for (p, r), n in per_route.items()}
    sums = series(samples, "oai_gateway_request_duration_seconds_sum")
    assert 0 < sums[labels(provider="custom", route=CHAT)] < 10
    # The stalled stream waited upstream for most of its life, so upstream time covers it.
    assert (
        series(samples, "oai_gateway_upstream_duration_seconds_sum")[
            labels(provider="custom", route=CHAT)
        ]
        > 0
    )

    # Two streams produced a first chunk: the complete one and the abandoned one.
    assert series(samples, "oai_gateway_time_to_first_chunk_seconds_count") == {
        labels(provider="custom", route=CHAT): 2.0
    }

    assert series(samples, "oai_gateway_tokens_total") == {
        labels(provider=p, model=m, kind=k): float(n) for (p, m, k), n in tokens.items()
    }
    assert all(n > 0 for n in tokens.values())

    assert series(samples, "oai_gateway_upstream_errors_total") == {
        labels(provider="custom", kind="upstream_error"): 1.0,
        labels(provider="custom", kind="http_400"): 1.0,
        labels(provider="custom", kind="http_429"): 1.0,
    }
    # Only the scrape that produced these numbers was still being served.
    assert samples[("oai_gateway_requests_in_flight", labels())] == 1


def test_metrics_need_the_gateway_key(fresh_gateway: GatewayServer) -> None:
    response = httpx.get(f"{fresh_gateway.url}/metrics")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "oai_gateway" not in response.text


def test_unknown_provider_names_do_not_become_labels(fresh_gateway: GatewayServer) -> None:
    """Names from request paths must not mint series: each would live until the process ends."""
    with fresh_gateway.client() as client:
        for name in ("nosuch-a", "nosuch-b"):
            response = client.get(f"/{name}/v1/models")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "provider_not_found"
        samples = Scraper(client).until_true(
            lambda samples: (
                sum(
                    v
                    for k, v in series(samples, "oai_gateway_requests_total").items()
                    if ("status", "404") in k
                )
                == 2
            )
        )
    providers = {dict(key)["provider"] for (name, key) in samples if "provider" in dict(key)}
    assert providers <= {""}, providers


# --- several workers --------------------------------------------------------------------------


def test_metrics_add_up_across_workers(
    tmp_path: Path, custom_upstream: OpenAICompatUpstream
) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"  # the CLI keeps a directory it is given
    metrics_dir.mkdir()
    env = base_env(
        tmp_path,
        ALLOWED_API_KEYS=GATEWAY_KEY,
        CUSTOM_BASE_URL=custom_upstream.base_url + "/v1",
        CUSTOM_API_KEY=CUSTOM_KEY,
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    total = 40
    with GatewayProcess(
        "module", ["--workers", "2", "--port", str(port)], env, tmp_path, port
    ) as gateway:
        gateway.wait_healthy()
        for _ in range(total):
            # A new connection each time, so the kernel spreads them over both workers.
            with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as client:
                response = client.get("/custom/v1/models")
                assert response.status_code == 200, response.text
        assert custom_upstream.wait_for_requests(total, WAIT_S)
        assert len(custom_upstream.requests) == total  # one upstream call per request
        key = ("oai_gateway_requests_total", labels(provider="custom", route=MODELS, status="200"))
        seen: list[float] = []
        for _ in range(10):  # whichever worker answers, every scrape sees the whole group
            with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as client:
                samples = parse(client.get("/metrics").text)
            seen.append(samples[key])
        assert seen == [float(total)] * 10
        counts = series(samples, "oai_gateway_request_duration_seconds_count")
        assert counts[labels(provider="custom", route=MODELS)] == total
        assert samples[("oai_gateway_requests_in_flight", labels())] == 1
        per_worker = worker_counts(metrics_dir, tmp_path, key)
        assert len(per_worker) == 2, per_worker
        assert sum(per_worker.values()) == total
        assert all(count > 0 for count in per_worker.values()), per_worker
        assert gateway.terminate() in (0, -signal.SIGTERM)


def worker_counts(metrics_dir: Path, scratch: Path, key: tuple[str, Labels]) -> dict[str, float]:
    """One worker's view: its own counter file alone, collected the way /metrics collects."""
    counts: dict[str, float] = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        alone = scratch / path.stem
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts[path.stem] = parse(generate_latest(registry).decode()).get(key, 0.0)
    return counts
