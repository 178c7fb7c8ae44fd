"""Changes made through one replica's admin API reach another replica's data plane (SPEC §10.1:
every worker and replica within 1 s): two `oai-gateway serve` processes sharing one Redis, and
two sharing one SQLite file. Replica B has the key cached before replica A changes it.

The 1 s is a design bound, not a timing: each process caches a key record for at most the
cache's TTL, and change notices only make it sooner. The tests pin that TTL, then wait for B
(bounded) and print how long it took."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oai_gateway.keys import cache
from oai_gateway.keys.store_sqlite import CHANGE_POLL_S
from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.keys.redis_server import RedisServer
from tests.keys.replicas import Replica, until_status
from tests.support.errors import check_error
from tests.support.fake_upstreams import OpenAICompatUpstream

ADMIN_KEY = "admin-key-for-replicas-0123456789-abcdef"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
CHAT_PATH = "/custom/v1/chat/completions"


def test_no_process_keeps_a_key_record_longer_than_a_second() -> None:
    assert cache.TTL_S <= 1.0
    # The enforcement builds its cache with the default TTL.
    assert inspect.signature(cache.KeyCache).parameters["ttl_s"].default == cache.TTL_S
    # SQLite's change counter is read more often than the TTL, so notices come sooner.
    assert CHANGE_POLL_S < cache.TTL_S


@pytest.fixture(params=["redis", "sqlite"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    server.command("FLUSHALL")
    return server.url


@pytest.fixture
def replicas(
    shared_store: str, custom_upstream: OpenAICompatUpstream, tmp_path: Path
) -> Iterator[tuple[Replica, Replica]]:
    env = {
        "CUSTOM_BASE_URL": custom_upstream.base_url + "/v1",
        "CUSTOM_API_KEY": CUSTOM_KEY,
        "ALLOWED_API_KEYS": GATEWAY_KEY,
        "STORE_URL": shared_store,
        "ADMIN_API_KEY": ADMIN_KEY,
        "LOG_FORMAT": "json",
    }
    with Replica(env, tmp_path) as first, Replica(env, tmp_path) as second:
        yield first, second


@pytest.fixture
def admin_of_a(replicas: tuple[Replica, Replica]) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    base = replicas[0].url + "/admin/v1"
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        yield http


def create(admin: httpx.Client, **fields: Any) -> tuple[str, str]:
    created = admin.post("/keys", json={"name": "replicated", **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


def warm(replica: Replica, key: str, times: int = 1) -> None:
    """B serves the key, so its record is in B's cache when A changes it."""
    headers = {"authorization": f"Bearer {key}"}
    for _ in range(times):
        reply = httpx.post(replica.url + CHAT_PATH, json=CHAT, headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text


def refused_by(replica: Replica, key: str, status: int) -> httpx.Response:
    reply, waited = until_status(replica.url, key, CHAT_PATH, CHAT, status)
    assert reply.status_code == status, f"still {reply.status_code} after {waited:.2f}s"
    print(f"replica B answered {status} {waited * 1000:.0f} ms after A's admin answer")
    return reply


def test_a_revocation_through_a_is_refused_by_b(
    replicas: tuple[Replica, Replica], admin_of_a: httpx.Client
) -> None:
    key_id, key = create(admin_of_a)
    warm(replicas[1], key)
    revoked = admin_of_a.delete(f"/keys/{key_id}")
    assert revoked.status_code == 200, revoked.text
    refused = refused_by(replicas[1], key, 401)
    error = check_error(refused, 401, "invalid_api_key", contains=("revoked",))
    assert revoked.json()["revoked_at"] in error["message"]


def test_a_lower_limit_set_through_a_is_applied_by_b(
    replicas: tuple[Replica, Replica], admin_of_a: httpx.Client
) -> None:
    key_id, key = create(admin_of_a, limits={"rpm": 100})
    warm(replicas[1], key, times=2)  # two in the window: more than the lower limit admits
    patched = admin_of_a.patch(f"/keys/{key_id}", json={"limits": {"rpm": 1}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["limits"] == {"rpm": 1}
    refused = refused_by(replicas[1], key, 429)
    check_error(refused, 429, "rate_limit_exceeded", type_="requests")
    assert refused.headers["x-ratelimit-limit-requests"] == "1"


def test_a_narrower_allow_list_set_through_a_is_applied_by_b(
    replicas: tuple[Replica, Replica], admin_of_a: httpx.Client
) -> None:
    key_id, key = create(admin_of_a, models=["custom/gpt-test"])
    warm(replicas[1], key)
    patched = admin_of_a.patch(f"/keys/{key_id}", json={"models": ["custom/another-model"]})
    assert patched.status_code == 200, patched.text
    refused = refused_by(replicas[1], key, 403)
    check_error(refused, 403, "model_not_allowed", param="model", contains=("gpt-test",))
    # A's own data plane agrees: the change is the store's, not one process's.
    reply, _ = until_status(replicas[0].url, key, CHAT_PATH, CHAT, 403)
    assert reply.status_code == 403
