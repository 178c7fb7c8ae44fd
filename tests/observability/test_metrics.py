"""GET /metrics (SPEC §4.6): every series carries the right values after a known workload."""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from tests.support.spec import take_violations
from tests.support.sse import stream_chunks

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


@dataclass
class Workload:
    """One known mix of requests against a gateway of its own, and what /metrics said after."""

    samples: Samples = field(default_factory=dict)  # the last scrape
    during: Samples = field(default_factory=dict)  # a scrape while a stream was still open
    # (provider, route, status), then (provider, model, kind)
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    tokens: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    scrapes: int = 0  # the scrapes /metrics itself has counted

    @property
    def per_route(self) -> dict[Labels, float]:
        totals: Counter[tuple[str, str]] = Counter()
        for (provider, route, _), n in self.requests.items():
            totals[(provider, route)] += n
        return {labels(provider=p, route=r): float(n) for (p, r), n in totals.items()}


CHAT_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "say hi there"}]}
STREAM_BODY = {
    "model": "gpt-test",
    "messages": [{"role": "user", "content": "count to five please"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def _successes(client: httpx.Client, done: Workload) -> None:
    for provider, model in (("custom", "gpt-test"), ("ollama", "llama3.2:1b")):
        response = client.post(
            f"/{provider}/v1/chat/completions", json=CHAT_BODY | {"model": model}
        )
        assert response.status_code == 200, response.text
        add_usage(done.tokens, provider, response.json())
        done.requests[(provider, CHAT, "200")] += 1
    with client.stream("POST", "/custom/v1/chat/completions", json=STREAM_BODY) as streamed:
        streamed.read()
    with_usage = [e for e in stream_chunks(streamed) if e.get("usage")]
    assert len(with_usage) == 1, streamed.text
    add_usage(done.tokens, "custom", with_usage[0])
    done.requests[("custom", CHAT, "200")] += 1
    response = client.post(
        "/custom/v1/completions", json={"model": "gpt-test", "prompt": "once upon a time"}
    )
    assert response.status_code == 200, response.text
    add_usage(done.tokens, "custom", response.json())
    done.requests[("custom", COMPLETIONS, "200")] += 1
    response = client.post(
        "/custom/v1/embeddings", json={"model": "org/model-a", "input": ["a b", "c d e"]}
    )
    assert response.status_code == 200, response.text
    assert "completion_tokens" not in response.json()["usage"]
    add_usage(done.tokens, "custom", response.json())
    done.requests[("custom", EMBEDDINGS, "200")] += 1
    assert client.get("/custom/v1/models").status_code == 200
    done.requests[("custom", MODELS, "200")] += 1


def _failures(client: httpx.Client, upstream: OpenAICompatUpstream, done: Workload) -> None:
    bad_request = b'{"error":{"message":"bad","type":"invalid_request_error"}}'
    for fault, status in (
        (Fault(kind="status", status=500, body=b"boom"), 502),
        (Fault(kind="status", status=400, body=bad_request), 400),
        (Fault(kind="status", status=429, headers={"retry-after": "1"}), 429),
    ):
        upstream.fault = fault
        response = client.post("/custom/v1/chat/completions", json=CHAT_BODY)
        assert response.status_code == status, response.text
        done.requests[("custom", CHAT, str(status))] += 1
    upstream.fault = None
    anonymous = client.base_url.copy_with(path="/custom/v1/chat/completions")
    response = httpx.post(str(anonymous), json=CHAT_BODY)
    assert response.status_code == 401
    # Authentication comes before routing, so a rejected request names no provider/route.
    done.requests[("", "unmatched", "401")] += 1


def _abandoned_stream(
    client: httpx.Client, upstream: OpenAICompatUpstream, scraper: Scraper, done: Workload
) -> None:
    """A client that leaves mid-stream: counted as 499, with its first chunk timed."""
    upstream.fault = Fault(kind="stream_stall", after_chunks=1, delay_s=2.5)
    with client.stream("POST", "/custom/v1/chat/completions", json=STREAM_BODY) as stalled:
        assert stalled.status_code == 200
        chunks = stalled.iter_raw()  # kept: dropping the iterator would close the response
        assert next(chunks).startswith(b"data: {")
        done.during = scraper.scrape()
    assert upstream.wait_for_disconnect(WAIT_S)
    upstream.fault = None
    done.requests[("custom", CHAT, "499")] += 1


@pytest.fixture(scope="module")
def workload(custom_upstream: OpenAICompatUpstream, ollama_upstream: OllamaUpstream) -> Workload:
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=ollama_upstream.base_url,
        request_timeout_s=3,
    )
    done = Workload()
    with GatewayServer(config) as gateway, gateway.client() as client:
        scraper = Scraper(client)
        _successes(client, done)
        _failures(client, custom_upstream, done)
        _abandoned_stream(client, custom_upstream, scraper, done)
        key = labels(provider="custom", route=CHAT, status="499")
        done.samples = scraper.until("oai_gateway_requests_total", key, 1)
        done.scrapes = scraper.count - 1  # the last scrape is recorded only after it answered
    custom_upstream.clear()
    # Set up outside any one test, so the spec check of these answers is made here.
    assert not take_violations(), "the workload's answers break OpenAI's spec"
    return done


def test_requests_are_counted_by_provider_route_and_status(workload: Workload) -> None:
    found = series(workload.samples, "oai_gateway_requests_total")
    assert found.pop(labels(provider="", route="/metrics", status="200")) == workload.scrapes
    expected = {
        labels(provider=p, route=r, status=s): float(n)
        for (p, r, s), n in workload.requests.items()
    }
    assert found == expected


def test_every_request_is_timed_and_ends_in_the_inf_bucket(workload: Workload) -> None:
    samples = workload.samples
    counts = series(samples, "oai_gateway_request_duration_seconds_count")
    assert counts.pop(labels(provider="", route="/metrics")) == workload.scrapes
    assert counts == workload.per_route
    inf = {
        k - {("le", "+Inf")}: v
        for k, v in series(samples, "oai_gateway_request_duration_seconds_bucket").items()
        if ("le", "+Inf") in k
    }
    inf.pop(labels(provider="", route="/metrics"))
    assert inf == workload.per_route
    sums = series(samples, "oai_gateway_request_duration_seconds_sum")
    assert 0 < sums[labels(provider="custom", route=CHAT)] < 10


def test_only_requests_that_reached_a_provider_spend_time_upstream(workload: Workload) -> None:
    upstream_expected = {key: n for key, n in workload.per_route.items() if dict(key)["provider"]}
    for name in ("oai_gateway_upstream_duration_seconds", "oai_gateway_overhead_seconds"):
        assert series(workload.samples, f"{name}_count") == upstream_expected, name
        for key, value in series(workload.samples, f"{name}_bucket").items():
            assert value <= upstream_expected[key - {("le", dict(key)["le"])}]
    # The stalled stream waited upstream for most of its life, so upstream time covers it.
    upstream_sums = series(workload.samples, "oai_gateway_upstream_duration_seconds_sum")
    assert upstream_sums[labels(provider="custom", route=CHAT)] > 0


def test_both_streams_timed_their_first_chunk(workload: Workload) -> None:
    # The complete one and the abandoned one.
    assert series(workload.samples, "oai_gateway_time_to_first_chunk_seconds_count") == {
        labels(provider="custom", route=CHAT): 2.0
    }


def test_tokens_are_counted_by_provider_model_and_kind(workload: Workload) -> None:
    assert series(workload.samples, "oai_gateway_tokens_total") == {
        labels(provider=p, model=m, kind=k): float(n) for (p, m, k), n in workload.tokens.items()
    }
    assert all(n > 0 for n in workload.tokens.values())


def test_upstream_errors_are_counted_by_kind(workload: Workload) -> None:
    assert series(workload.samples, "oai_gateway_upstream_errors_total") == {
        labels(provider="custom", kind="upstream_error"): 1.0,
        labels(provider="custom", kind="http_400"): 1.0,
        labels(provider="custom", kind="http_429"): 1.0,
    }


def test_requests_in_flight_count_what_is_being_served(workload: Workload) -> None:
    # The open stream and the scrape itself; at the end only the last scrape was being served.
    assert workload.during[("oai_gateway_requests_in_flight", labels())] == 2
    assert workload.samples[("oai_gateway_requests_in_flight", labels())] == 1


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
