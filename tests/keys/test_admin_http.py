"""The admin API over real HTTP (SPEC §10.2): guarded by ADMIN_API_KEY, absent without it, the
same answers as the admin functions, and its changes felt on the data plane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CUSTOM_KEY
from tests.keys.redis_server import RedisServer
from tests.support.errors import check_error
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

ADMIN_KEY = "admin-key-0123456789-0123456789-abcdef"
GATEWAY_KEY = "gw-admin-tests-static-key-01"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi there"}]}
CHANGE_WAIT_S = 3.0  # changes must reach the data plane within 1 s; bounded generously
LEDGER_WAIT_S = 15.0  # usage is written off the request path, in batches; a loaded machine is slow


def gateway_for(upstream: OpenAICompatUpstream, tmp_path: Path, **settings: Any) -> GatewayServer:
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=upstream.base_url + "/v1",
        custom_api_key=CUSTOM_KEY,
        request_timeout_s=10,
        **settings,
    )
    return GatewayServer(config)


@pytest.fixture
def gateway(custom_upstream: OpenAICompatUpstream, tmp_path: Path) -> Iterator[GatewayServer]:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    server = gateway_for(custom_upstream, tmp_path, store_url=store, admin_api_key=ADMIN_KEY)
    assert server.app.ledger is not None
    server.app.ledger.interval_s = 0.05
    with server:
        yield server


@pytest.fixture
def admin(gateway: GatewayServer) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url + "/admin/v1", headers=headers, timeout=10) as http:
        yield http


def chat(gateway: GatewayServer, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(
        gateway.url + "/custom/v1/chat/completions", json=CHAT, headers=headers, timeout=10
    )


def until_status(gateway: GatewayServer, key: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + CHANGE_WAIT_S
    while True:
        reply = chat(gateway, key)
        if reply.status_code == status or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


def test_a_key_from_creation_to_revocation(gateway: GatewayServer, admin: httpx.Client) -> None:
    created = admin.post("/keys", json={"name": "app", "limits": {"rpm": 100}})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    assert chat(gateway, key).status_code == 200
    shown = admin.get(f"/keys/{key_id}").json()
    assert "key" not in shown
    assert shown["limits"] == {"rpm": 100}
    patched = admin.patch(f"/keys/{key_id}", json={"name": "renamed", "metadata": {"team": "a"}})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["metadata"]) == ("renamed", {"team": "a"})
    rotated = admin.post(f"/keys/{key_id}/rotate")
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key"]
    assert rotated.json()["id"] == key_id
    assert until_status(gateway, key, 401).status_code == 401  # the old secret is gone
    assert chat(gateway, new_key).status_code == 200
    revoked = admin.delete(f"/keys/{key_id}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused = until_status(gateway, new_key, 401)
    assert "revoked" in check_error(refused, 401)["message"]
    assert admin.get(f"/keys/{key_id}").json()["revoked_at"] == revoked.json()["revoked_at"]


def test_the_list_is_an_openai_list(admin: httpx.Client) -> None:
    ids = [admin.post("/keys", json={"name": str(n)}).json()["id"] for n in range(3)]
    page = admin.get("/keys", params={"limit": 2}).json()
    assert page["object"] == "list"
    assert page["has_more"] is True
    assert len(page["data"]) == 2
    rest = admin.get("/keys", params={"after": page["last_id"]}).json()
    assert rest["has_more"] is False
    assert sorted(k["id"] for k in page["data"] + rest["data"]) == sorted(ids)
    assert all("key" not in k for k in page["data"] + rest["data"])


def test_usage_totals_over_http(gateway: GatewayServer, admin: httpx.Client) -> None:
    key = admin.post("/keys", json={}).json()["key"]
    for credential in (key, key, GATEWAY_KEY):
        assert chat(gateway, credential).status_code == 200
    deadline = time.monotonic() + LEDGER_WAIT_S
    while True:
        rows = admin.get("/usage", params={"group_by": "key"}).json()["data"]
        if sum(r["requests"] for r in rows) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    counted = [(r["key_id"], r["requests"]) for r in rows]
    assert counted == sorted([(key.split("-")[2], 2), ("static-1", 1)])  # sorted by key id
    assert set(rows[0]) == {
        "key_id",
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cost_usd",
        "unpriced_requests",
    }
    only = admin.get("/usage", params={"key_id": "static-1", "since": "2000-01-01"}).json()
    assert [r["requests"] for r in only["data"]] == [1]


@pytest.mark.parametrize(
    ("method", "path", "payload", "param"),
    [
        ("POST", "/keys", {"limits": {"rpm": 0}}, "limits"),
        ("POST", "/keys", {"nmae": "typo"}, "nmae"),
        ("POST", "/keys", {"budget": {"usd": 5}}, "budget"),
        ("GET", "/keys?limit=500", None, "limit"),
        ("GET", "/usage?group_by=team", None, "group_by"),
        ("GET", "/usage?since=yesterday", None, "since"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    admin: httpx.Client, method: str, path: str, payload: Any, param: str
) -> None:
    reply = admin.request(method, path, json=payload)
    error = check_error(reply, 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json(admin: httpx.Client) -> None:
    reply = admin.post("/keys", content=b"{nope", headers={"content-type": "application/json"})
    assert check_error(reply, 400)["code"] is None


def test_unknown_ids_paths_and_methods(admin: httpx.Client) -> None:
    assert check_error(admin.get("/keys/nosuchkey000"), 404)["code"] == "key_not_found"
    assert check_error(admin.delete("/keys/nosuchkey000"), 404)["code"] == "key_not_found"
    check_error(admin.get("/nothing"), 404)
    wrong = admin.put("/keys", json={})
    check_error(wrong, 405)
    assert wrong.headers["allow"] == "POST, GET"


def test_the_admin_key_is_checked(gateway: GatewayServer) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {ADMIN_KEY}"}):
        reply = httpx.get(gateway.url + "/admin/v1/keys", headers=headers, timeout=10)
        assert check_error(reply, 401)["code"] == "invalid_api_key"
    # Unknown admin paths say nothing to a caller without the key either.
    assert httpx.get(gateway.url + "/admin/v1/nothing", timeout=10).status_code == 401
    # The admin key is no data-plane key, and a gateway key is no admin key.
    assert check_error(chat(gateway, ADMIN_KEY), 401)["code"] == "invalid_api_key"
    as_gateway = {"authorization": f"Bearer {GATEWAY_KEY}"}
    assert (
        httpx.get(gateway.url + "/admin/v1/keys", headers=as_gateway, timeout=10).status_code == 401
    )


@pytest.mark.parametrize("settings", [{}, {"admin_api_key": ADMIN_KEY}], ids=["no-key", "no-store"])
def test_without_admin_key_or_store_the_admin_api_is_404(
    custom_upstream: OpenAICompatUpstream, tmp_path: Path, settings: dict[str, Any]
) -> None:
    if not settings:
        settings = {"store_url": f"sqlite:///{tmp_path / 'store.db'}"}
    with gateway_for(custom_upstream, tmp_path, **settings) as server:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        for method, path in (
            ("GET", "/admin/v1/keys"),
            ("POST", "/admin/v1/keys"),
            ("GET", "/admin/v1/usage"),
            ("GET", "/admin/v1/x"),
        ):
            reply = httpx.request(method, server.url + path, headers=headers, timeout=10)
            assert check_error(reply, 404)["type"] == "invalid_request_error"
        assert chat(server, GATEWAY_KEY).status_code == 200


def test_the_admin_api_answers_503_while_its_store_is_away(
    custom_upstream: OpenAICompatUpstream, tmp_path: Path
) -> None:
    """Every admin call needs the store, whatever STORE_FAILURE_MODE says of the data plane:
    with Redis stopped the answer is 503 store_unavailable (retryable), not a 500; with Redis
    back the same gateway serves the admin API again without a restart."""
    with RedisServer(persist=True) as redis:
        server = gateway_for(
            custom_upstream, tmp_path, store_url=redis.url, admin_api_key=ADMIN_KEY
        )
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        with server, httpx.Client(base_url=server.url + "/admin/v1", headers=headers) as http:
            assert http.post("/keys", json={"name": "before"}).status_code == 201
            redis.stop()
            calls = [
                http.get("/keys"),
                http.post("/keys", json={"name": "during"}),
                http.get("/usage"),
            ]
            for response in calls:
                check_error(response, 503, "store_unavailable", type_="api_error")
            redis.start()
            listed = http.get("/keys")
            assert listed.status_code == 200, listed.text
            assert [key["name"] for key in listed.json()["data"]] == ["before"]
