"""Limits and revocations hold across processes: replicas sharing one Redis, processes and
workers sharing one SQLite file; and the store going away and coming back (SPEC §10.3)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from msgspec.structs import replace

from oai_gateway.keys.records import Limits, now_iso
from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.keys.redis_server import RedisServer
from tests.keys.replicas import Replica, burst, issue_in, until_status, update_in
from tests.support.fake_upstreams import OpenAICompatUpstream

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
CHAT_PATH = "/custom/v1/chat/completions"


def replica_env(upstream: OpenAICompatUpstream, store_url: str, **extra: str) -> dict[str, str]:
    return {
        "CUSTOM_BASE_URL": upstream.base_url + "/v1",
        "CUSTOM_API_KEY": CUSTOM_KEY,
        "ALLOWED_API_KEYS": GATEWAY_KEY,
        "STORE_URL": store_url,
        "LOG_FORMAT": "json",
        **extra,
    }


@pytest.fixture(params=["redis", "sqlite"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    server.command("FLUSHALL")
    return server.url


@pytest.fixture
def two_replicas(
    shared_store: str, custom_upstream: OpenAICompatUpstream, tmp_path: Path
) -> Iterator[tuple[Replica, Replica]]:
    env = replica_env(custom_upstream, shared_store)
    first, second = Replica(env, tmp_path), Replica(env, tmp_path)
    with first, second:
        yield first, second


def post(url: str, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(url + CHAT_PATH, json=CHAT, headers=headers, timeout=10)


def test_twenty_requests_over_two_replicas_one_limit_one_success(
    two_replicas: tuple[Replica, Replica], shared_store: str
) -> None:
    _, key = issue_in(shared_store, limits=Limits(rpm=1))
    urls = [replica.url for replica in two_replicas]
    replies = asyncio.run(burst(urls, key, CHAT_PATH, CHAT, 20))
    assert sorted(r.status_code for r in replies) == [200] + [429] * 19
    # Both replicas answered some of them: the limit was shared, not per process.
    served_by = {str(r.request.url).split("/custom")[0] for r in replies}
    assert served_by == set(urls)


def test_a_revocation_written_to_the_store_is_refused_by_a_replica(
    two_replicas: tuple[Replica, Replica], shared_store: str
) -> None:
    # As the CLI revokes: straight into the store, through no replica's admin API (that path:
    # test_admin_replicas.py). The 1 s of SPEC §10.1 is the cache's TTL, pinned there.
    made, key = issue_in(shared_store)
    _, other = two_replicas
    assert post(other.url, key).status_code == 200  # now cached in that replica
    update_in(shared_store, replace(made, revoked_at=now_iso()))
    reply, waited = until_status(other.url, key, CHAT_PATH, CHAT, 401)
    assert reply.status_code == 401, f"revoked key still served after {waited:.2f}s"
    assert "revoked" in reply.json()["error"]["message"]


def test_two_workers_sharing_one_sqlite_file_admit_one(
    custom_upstream: OpenAICompatUpstream, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'workers.db'}"
    _, key = issue_in(store, limits=Limits(rpm=1))
    with Replica(replica_env(custom_upstream, store), tmp_path, workers=2) as replica:
        replies = asyncio.run(burst([replica.url], key, CHAT_PATH, CHAT, 20))
    assert sorted(r.status_code for r in replies) == [200] + [429] * 19


def metric(url: str, name: str) -> float:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    text = httpx.get(url + "/metrics", headers=headers, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_redis_away_closed_refuses_open_serves_and_back_limits_hold(
    custom_upstream: OpenAICompatUpstream, tmp_path: Path
) -> None:
    with RedisServer(persist=True) as redis:
        _, key = issue_in(redis.url, limits=Limits(rpm=100))
        closed_env = replica_env(custom_upstream, redis.url, STORE_FAILURE_MODE="closed")
        open_env = replica_env(custom_upstream, redis.url, STORE_FAILURE_MODE="open")
        with Replica(closed_env, tmp_path) as closed, Replica(open_env, tmp_path) as opened:
            assert post(closed.url, key).status_code == 200
            assert post(opened.url, key).status_code == 200
            redis.stop()
            refused = post(closed.url, key)
            assert refused.status_code == 503
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("api_error", "store_unavailable")
            assert post(opened.url, key).status_code == 200
            assert "serving without limits" in opened.log()
            assert metric(opened.url, "oai_gateway_store_errors_total") >= 1
            # Static keys never needed the store.
            assert post(closed.url, GATEWAY_KEY).status_code == 200
            redis.start()
            assert post(closed.url, key).status_code == 200
            _, fresh = issue_in(redis.url, limits=Limits(rpm=1))
            replies = asyncio.run(burst([closed.url, opened.url], fresh, CHAT_PATH, CHAT, 10))
            assert sorted(r.status_code for r in replies) == [200] + [429] * 9
