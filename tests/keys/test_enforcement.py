"""Virtual keys on the data plane, over real HTTP (SPEC §10.3): who may call, what they may call,
how often, and what every answer says about it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from msgspec.structs import replace

from oai_gateway.keys.records import Budget, Limits, format_time, now_iso
from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.keys.replicas import burst, issue_in, update_in
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config
from tests.support.log_guard import record_text, virtual_keys_in
from tests.support.sockets import open_raw, read_until

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
CHAT_PATH = "/custom/v1/chat/completions"


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def gateway(custom_upstream: OpenAICompatUpstream, store_url: str) -> Iterator[GatewayServer]:
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        store_url=store_url,
        request_timeout_s=10,
    )
    with GatewayServer(config) as server:
        yield server


def post(gateway: GatewayServer, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        gateway.url + CHAT_PATH,
        json=body or CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_a_virtual_key_without_limits_is_served_without_rate_headers(
    gateway: GatewayServer, store_url: str
) -> None:
    _, key = issue_in(store_url)
    reply = post(gateway, key)
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "chat.completion"
    assert not any(h.startswith("x-ratelimit") for h in reply.headers)


def test_static_keys_keep_working_unlimited(gateway: GatewayServer) -> None:
    assert all(post(gateway, GATEWAY_KEY).status_code == 200 for _ in range(3))


def test_unknown_and_malformed_keys_get_401(gateway: GatewayServer, store_url: str) -> None:
    _, key = issue_in(store_url)
    for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "sk-gw-unknown", "nonsense"):
        reply = post(gateway, bad)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"
        assert reply.headers["www-authenticate"] == "Bearer"
    # Before the provider is resolved: no key, no learning which providers exist.
    unknown = httpx.post(gateway.url + "/nosuch/v1/chat/completions", json=CHAT, timeout=10)
    assert unknown.status_code == 401


def test_revoked_and_expired_keys_get_401_saying_so(gateway: GatewayServer, store_url: str) -> None:
    revoked, revoked_key = issue_in(store_url)
    assert post(gateway, revoked_key).status_code == 200
    update_in(store_url, replace(revoked, revoked_at=now_iso()))
    _, expired_key = issue_in(store_url, expires_at=format_time(1_000_000))
    reply = post(gateway, expired_key)
    assert (reply.status_code, reply.json()["error"]["code"]) == (401, "invalid_api_key")
    assert "expired" in reply.json()["error"]["message"]
    for _ in range(100):  # the change reaches this process within a second
        reply = post(gateway, revoked_key)
        if reply.status_code == 401:
            break
        threading.Event().wait(0.05)
    assert reply.status_code == 401
    assert "revoked" in reply.json()["error"]["message"]


def test_allow_lists_refuse_other_models_with_403(gateway: GatewayServer, store_url: str) -> None:
    _, key = issue_in(store_url, models=("custom/gpt-test",))
    assert post(gateway, key).status_code == 200
    reply = post(gateway, key, {**CHAT, "model": "gpt-other"})
    assert reply.status_code == 403
    error = reply.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_allowed",
        "model",
    )
    _, ollama_only = issue_in(store_url, providers=("ollama",))
    assert post(gateway, ollama_only).status_code == 403
    models = httpx.get(
        gateway.url + "/custom/v1/models",
        headers={"authorization": f"Bearer {ollama_only}"},
        timeout=10,
    )
    assert models.status_code == 403


def test_rpm_twenty_at_once_exactly_one_succeeds(gateway: GatewayServer, store_url: str) -> None:
    _, key = issue_in(store_url, limits=Limits(rpm=1))
    replies = asyncio.run(burst([gateway.url], key, CHAT_PATH, CHAT, 20))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [429] * 19
    refused = next(r for r in replies if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 61  # a window slot's width more on SQLite
    assert refused.headers["x-ratelimit-limit-requests"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    ok = next(r for r in replies if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "1"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")


def test_a_token_budget_twenty_at_once_exactly_one_succeeds_then_no_retry(
    gateway: GatewayServer, store_url: str
) -> None:
    _, key = issue_in(store_url, budget=Budget(period="day", tokens=1))
    replies = asyncio.run(burst([gateway.url], key, CHAT_PATH, CHAT, 20))
    assert sorted(r.status_code for r in replies) == [200] + [429] * 19
    refused = next(r for r in replies if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert refused.headers["x-should-retry"] == "false"


def test_tpm_reserves_then_reconciles_with_the_real_usage(
    gateway: GatewayServer, store_url: str
) -> None:
    # A reservation of max_tokens=400 (+ the input) fits once in 600; the real usage is a few
    # tokens, so after reconciliation the next request fits again.
    _, key = issue_in(store_url, limits=Limits(tpm=600))
    body = {**CHAT, "max_tokens": 400}
    first = post(gateway, key, body)
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 200
    for _ in range(100):  # settlement runs once the answer is out
        second = post(gateway, key, body)
        if second.status_code == 200:
            break
        threading.Event().wait(0.02)
    assert second.status_code == 200
    replies = asyncio.run(burst([gateway.url], key, CHAT_PATH, {**CHAT, "max_tokens": 590}, 5))
    assert sum(r.status_code == 200 for r in replies) <= 1
    refused = [r for r in replies if r.status_code == 429]
    assert refused
    assert refused[0].json()["error"]["type"] == "tokens"


def test_streams_hold_their_parallel_slot_until_they_end(
    gateway: GatewayServer, store_url: str, custom_upstream: OpenAICompatUpstream
) -> None:
    _, key = issue_in(store_url, limits=Limits(max_parallel=1))
    custom_upstream.fault = Fault(kind="delay_headers", delay_s=1.5)
    headers = {"authorization": f"Bearer {key}"}
    stream_body = {**CHAT, "stream": True}

    async def scenario() -> tuple[int, int, int]:
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as http:
            held = asyncio.create_task(http.post(CHAT_PATH, json=stream_body))
            seen = await asyncio.to_thread(custom_upstream.wait_for_requests, 1, 5)
            assert seen
            during = (await http.post(CHAT_PATH, json=CHAT)).status_code
            first = (await held).status_code
            custom_upstream.fault = None
            after = (await http.post(CHAT_PATH, json=CHAT)).status_code
            return first, during, after

    assert asyncio.run(scenario()) == (200, 429, 200)


def test_embeddings_and_models_pass_the_same_choke_point(
    gateway: GatewayServer, store_url: str
) -> None:
    _, key = issue_in(store_url, limits=Limits(rpm=2))
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as http:
        embed = http.post("/custom/v1/embeddings", json={"model": "org/model-a", "input": "hi"})
        models = http.get("/custom/v1/models")
        third = http.get("/custom/v1/models/gpt-test")
    assert (embed.status_code, models.status_code, third.status_code) == (200, 200, 429)
    assert models.headers["x-ratelimit-remaining-requests"] == "0"


def test_without_a_store_virtual_keys_are_unknown(custom_upstream: OpenAICompatUpstream) -> None:
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=custom_upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
    )
    with GatewayServer(config) as server:
        assert post(server, "sk-gw-abcdefghij12-" + "s" * 40).status_code == 401
        assert post(server, GATEWAY_KEY).status_code == 200


def test_no_full_virtual_key_reaches_any_log_record(
    gateway: GatewayServer, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    made, key = issue_in(store_url, limits=Limits(rpm=1))
    caplog.set_level(logging.DEBUG)
    for sent in (key, key, key[:-3] + "xyz", f"sk-gw-{made.id}-" + "z" * 40):
        post(gateway, sent)
    texts = [record_text(r) for r in caplog.records]
    assert any(made.id in t for t in texts), "the access lines name the key id"
    assert not [t for t in texts if virtual_keys_in(t)]


def test_the_log_guard_recognises_a_full_virtual_key() -> None:
    key = "sk-gw-abcdefghij12-" + "Ab_-" * 10
    assert virtual_keys_in(f"Authorization: Bearer {key}") == [key]
    assert virtual_keys_in("key abcdefghij12 (sk-gw-abcdefghij12-…)") == []


def test_per_key_counters_only_when_asked(
    custom_upstream: OpenAICompatUpstream, store_url: str
) -> None:
    made, key = issue_in(store_url)
    for per_key in (True, False):
        config = make_config(
            allowed_api_keys=GATEWAY_KEY,
            custom_base_url=custom_upstream.base_url + "/v1",
            custom_api_key=CUSTOM_KEY,
            store_url=store_url,
            metrics_per_key=per_key,
        )
        with GatewayServer(config) as server:
            assert post(server, key).status_code == 200
            assert post(server, GATEWAY_KEY).status_code == 200
            text = httpx.get(
                server.url + "/metrics",
                headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                timeout=10,
            ).text
        lines = [line for line in text.splitlines() if line.startswith("oai_gateway_key_")]
        if per_key:
            assert any(f'key_id="{made.id}"' in line and 'status="200"' in line for line in lines)
            assert any('key_id="static-1"' in line for line in lines)
            assert any("oai_gateway_key_tokens_total" in line for line in lines)
        else:
            assert lines == []
        assert "# HELP oai_gateway_store_errors_total" in text


def test_the_responses_route_passes_the_same_limit(gateway: GatewayServer, store_url: str) -> None:
    _, key = issue_in(store_url, limits=Limits(rpm=1))
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "gpt-test", "input": "hello", "max_output_tokens": 16}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as http:
        first = http.post("/custom/v1/responses", json=body)
        second = http.post("/custom/v1/responses", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_client_leaving_mid_stream_gives_its_slot_back(
    gateway: GatewayServer, store_url: str, custom_upstream: OpenAICompatUpstream
) -> None:
    _, key = issue_in(store_url, limits=Limits(max_parallel=1))
    custom_upstream.fault = Fault(kind="stream_stall", after_chunks=1, delay_s=5)
    conn = open_raw(gateway.port, CHAT_PATH, {**CHAT, "stream": True}, key)
    try:
        read_until(conn, b"data: {")
        assert post(gateway, key).status_code == 429  # the stream holds the only slot
    finally:
        conn.close()
    assert custom_upstream.wait_for_disconnect(5)
    custom_upstream.fault = None
    for _ in range(100):  # the cancelled request settles and releases its lease
        reply = post(gateway, key)
        if reply.status_code == 200:
            break
        threading.Event().wait(0.02)
    assert reply.status_code == 200
