"""The usage ledger on the data plane, over real HTTP (SPEC §10.3): one record per request of a
static or virtual key, real stream usage, prices, failures, cut streams, and nothing lost at a
clean shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oai_gateway.keys.records import Limits
from oai_gateway.keys.usage import UsageQuery, UsageRow
from tests.conftest import CUSTOM_KEY
from tests.keys.contract import opened
from tests.keys.redis_server import RedisServer
from tests.keys.replicas import Replica, issue_in
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

FIRST_KEY = "gw-ledger-first-key-000111"
SECOND_KEY = "gw-ledger-second-key-222333"
PROMPT = "five words in this prompt"
WORDS = len(PROMPT.split())
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": PROMPT}]}
PRICES = """
[providers.priced]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "PRICED_KEY"
[providers.priced.prices]
"gpt-test" = {{ input = 1.5, output = 4.0 }}
"""


def rows(url: str, *group_by: str) -> list[UsageRow]:
    async def read() -> list[UsageRow]:
        async with opened(url) as store:
            return await store.usage_rollup(UsageQuery(group_by=group_by))

    return asyncio.run(read())


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def gateway(
    custom_upstream: OpenAICompatUpstream, store_url: str, tmp_path: Path
) -> Iterator[GatewayServer]:
    providers = tmp_path / "providers.toml"
    providers.write_text(PRICES.format(url=custom_upstream.base_url), encoding="utf-8")
    config = make_config(
        env={"PRICED_KEY": CUSTOM_KEY},
        providers_file=str(providers),
        allowed_api_keys=f"{FIRST_KEY},{SECOND_KEY}",
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        store_url=store_url,
        request_timeout_s=10,
    )
    server = GatewayServer(config)
    assert server.app.ledger is not None
    server.app.ledger.interval_s = 3600  # nothing is written before shutdown unless asked
    with server:
        yield server


def call(gateway: GatewayServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=10, **kwargs)


def test_one_record_per_request_of_every_key(gateway: GatewayServer, store_url: str) -> None:
    _, virtual = issue_in(store_url)
    assert (
        call(gateway, SECOND_KEY, "POST", "/priced/v1/chat/completions", json=CHAT).status_code
        == 200
    )
    streamed = call(
        gateway, virtual, "POST", "/custom/v1/chat/completions", json={**CHAT, "stream": True}
    )
    assert streamed.status_code == 200
    assert '"usage"' not in streamed.text  # the client did not ask for it
    bad = call(
        gateway, FIRST_KEY, "POST", "/custom/v1/chat/completions", json={**CHAT, "messages": 5}
    )
    assert bad.status_code == 400
    assert call(gateway, FIRST_KEY, "GET", "/custom/v1/models").status_code == 200
    assert call(gateway, FIRST_KEY, "GET", "/metrics").status_code == 200  # not data plane
    assert call(gateway, "wrong-key", "GET", "/custom/v1/models").status_code == 401  # no key
    ledger = gateway.app.ledger
    assert ledger is not None
    assert ledger.pending == 4
    gateway.stop()  # a clean shutdown writes what is queued
    by_key = {r.key_id: r for r in rows(store_url, "key")}
    assert set(by_key) == {"static-1", "static-2", _id_of(virtual)}
    first, second, third = by_key["static-1"], by_key["static-2"], by_key[_id_of(virtual)]
    assert (first.requests, first.errors, first.input_tokens) == (2, 1, 0)
    assert (second.requests, second.errors, second.input_tokens) == (1, 0, WORDS)
    assert second.output_tokens > 0
    assert second.cost_nanos == round((WORDS * 1.5 + second.output_tokens * 4.0) * 1000)
    assert second.unpriced_requests == 0
    assert (third.requests, third.input_tokens) == (1, WORDS)  # the stream's real usage
    assert third.output_tokens == second.output_tokens
    assert (third.cost_nanos, third.unpriced_requests) == (0, 1)  # custom has no prices


def _id_of(key: str) -> str:
    return key.split("-")[2]


def test_rows_by_provider_and_model(gateway: GatewayServer, store_url: str) -> None:
    for path in ("/priced/v1/chat/completions", "/custom/v1/chat/completions"):
        assert call(gateway, FIRST_KEY, "POST", path, json=CHAT).status_code == 200
    gateway.stop()
    found = [(r.provider, r.model, r.requests) for r in rows(store_url, "provider", "model")]
    assert found == [("custom", "gpt-test", 1), ("priced", "gpt-test", 1)]


def test_a_cut_stream_is_charged_its_reservation(
    gateway: GatewayServer, store_url: str, custom_upstream: OpenAICompatUpstream
) -> None:
    _, limited = issue_in(store_url, limits=Limits(tpm=100_000))
    custom_upstream.fault = Fault(kind="stream_stall", after_chunks=1, delay_s=5)
    body = {**CHAT, "stream": True, "max_tokens": 50}
    headers = {"authorization": f"Bearer {limited}"}
    with httpx.stream(
        "POST", gateway.url + "/custom/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        next(response.iter_bytes())  # the first chunk, then the client leaves
    ledger = gateway.app.ledger
    assert ledger is not None
    deadline = time.monotonic() + 5
    while ledger.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the gateway notices the disconnect, then records the request
    gateway.stop()
    (row,) = rows(store_url, "key")
    assert row.requests == 1
    assert row.errors == 1  # 499: the client left
    assert row.output_tokens >= 50  # the reservation: at least the whole max_tokens


def test_queued_records_survive_sigterm(
    custom_upstream: OpenAICompatUpstream, store_url: str, tmp_path: Path
) -> None:
    env = {
        "ALLOWED_API_KEYS": FIRST_KEY,
        "CUSTOM_BASE_URL": custom_upstream.base_url + "/v1",
        "CUSTOM_API_KEY": CUSTOM_KEY,
        "STORE_URL": store_url,
    }
    with Replica(env, tmp_path) as replica:
        headers = {"authorization": f"Bearer {FIRST_KEY}"}
        with httpx.Client(base_url=replica.url, headers=headers, timeout=10) as http:
            for _ in range(25):
                assert http.post("/custom/v1/chat/completions", json=CHAT).status_code == 200
        replica.close()  # SIGTERM at once: most records are still queued
        assert replica.process.returncode == 0, replica.log()
    (row,) = rows(store_url, "key")
    assert (row.key_id, row.requests, row.input_tokens) == ("static-1", 25, 25 * WORDS)


def test_the_ledger_on_redis(
    custom_upstream: OpenAICompatUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.command("FLUSHALL")
    config = make_config(
        allowed_api_keys=f"{FIRST_KEY},{SECOND_KEY}",
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        store_url=redis_server.url,
        request_timeout_s=10,
    )
    with GatewayServer(config) as server:
        for key in (FIRST_KEY, SECOND_KEY, SECOND_KEY):
            reply = call(
                server, key, "POST", "/custom/v1/chat/completions", json={**CHAT, "stream": True}
            )
            assert reply.status_code == 200
    found = [(r.key_id, r.requests, r.input_tokens) for r in rows(redis_server.url, "key")]
    assert found == [("static-1", 1, WORDS), ("static-2", 2, 2 * WORDS)]
