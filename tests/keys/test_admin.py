"""The admin functions over every backend: what each call answers and what it refuses (§10.2)."""

from __future__ import annotations

from typing import Any

import pytest

from oai_gateway.errors import GatewayError
from oai_gateway.keys.admin import KeyAdmin, parse_usage_query
from oai_gateway.keys.secrets import SecretHasher, parse_key
from oai_gateway.keys.usage import UsageRecord, day_start
from tests.keys.contract import opened

pytestmark = pytest.mark.anyio

FULL = {
    "name": "team a",
    "expires_at": "2099-01-01T00:00:00+00:00",
    "providers": ["custom"],
    "models": ["ollama/llama3.2:1b", "cerebras"],
    "limits": {"rpm": 5, "tpm": 1000, "max_parallel": 2},
    "budget": {"usd": 12.5, "period": "month"},
    "metadata": {"owner": "ops"},
}


async def refused(call: Any, status: int = 400) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await call
    assert caught.value.http_status == status, caught.value.message
    return caught.value


async def test_create_answers_the_key_once_and_stores_only_its_hash(url: str) -> None:
    async with opened(url) as store:
        admin = KeyAdmin(store)
        status, created = await admin.create(FULL)
        assert status == 201
        parsed = parse_key(created["key"])
        assert parsed is not None
        assert parsed.key_id == created["id"]
        assert created["object"] == "virtual_key"
        assert created["expires_at"] == "2099-01-01T00:00:00Z"
        assert created["limits"] == FULL["limits"]
        assert created["budget"] == {"period": "month", "usd": 12.5}
        assert created["revoked_at"] is None
        assert "secret_hash" not in created
        record = await store.get_key(created["id"])
        assert record is not None
        assert SecretHasher(await store.pepper()).matches(parsed.secret, record.secret_hash)
        _, shown = await admin.show(created["id"])
        assert "key" not in shown
        assert shown == {k: v for k, v in created.items() if k != "key"}


async def test_an_empty_body_makes_an_unlimited_key(url: str) -> None:
    async with opened(url) as store:
        _, created = await KeyAdmin(store).create({})
    assert created["name"] == ""
    assert created["limits"] == {}
    assert created["budget"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": 3}, "name"),
        ({"limits": {"rpm": 0}}, "limits"),
        ({"limits": {"rpx": 1}}, "limits"),
        ({"budget": {"usd": 1, "tokens": 2, "period": "day"}}, "budget"),
        ({"budget": {"usd": 1, "period": "year"}}, "budget"),
        ({"budget": {"usd": 1}}, "budget"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"expires_at": "2026-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"metadata": {"": "x"}}, "metadata"),
        ({"providers": ["Not A Name"]}, "providers"),
        ({"providers": "custom"}, "providers"),
        ({"models": [""]}, "models"),
        ({"models": ["GPT 4o"]}, "models"),
        ({"models": ["custom/"]}, "models"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_create_names_the_bad_field(body: dict[str, Any], param: str) -> None:
    async with opened("memory://") as store:
        error = await refused(KeyAdmin(store).create(body))
    assert error.param == param
    assert error.type == "invalid_request_error"
    assert param in error.message


async def test_a_body_that_is_no_object_is_refused() -> None:
    async with opened("memory://") as store:
        error = await refused(KeyAdmin(store).create(["name"]))
    assert error.param is None


async def test_list_pages_newest_first(url: str) -> None:
    async with opened(url) as store:
        admin = KeyAdmin(store)
        ids = [(await admin.create({"name": str(n)}))[1]["id"] for n in range(5)]
        _, everything = await admin.list({})
        assert everything["object"] == "list"
        assert everything["has_more"] is False
        listed = [k["id"] for k in everything["data"]]
        assert sorted(listed) == sorted(ids)
        _, first = await admin.list({"limit": "2"})
        assert first["has_more"] is True
        assert [k["id"] for k in first["data"]] == listed[:2]
        assert (first["first_id"], first["last_id"]) == (listed[0], listed[1])
        _, rest = await admin.list({"limit": "100", "after": first["last_id"]})
        assert [k["id"] for k in rest["data"]] == listed[2:]
        assert rest["has_more"] is False
        assert all("key" not in k and "secret_hash" not in k for k in rest["data"])


async def test_an_empty_list() -> None:
    async with opened("memory://") as store:
        _, page = await KeyAdmin(store).list({})
    assert page == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after": "nosuchkey000"}, "after"),
        ({"after": "../"}, "after"),
        ({"page": "2"}, "page"),
    ],
)
async def test_list_names_the_bad_parameter(query: dict[str, str], param: str) -> None:
    async with opened("memory://") as store:
        error = await refused(KeyAdmin(store).list(query))
    assert error.param == param


async def test_unknown_ids_are_404(url: str) -> None:
    async with opened(url) as store:
        admin = KeyAdmin(store)
        for call in (
            admin.show("nosuchkey000"),
            admin.show("NOT-AN-ID"),
            admin.update("nosuchkey000", {"name": "x"}),
            admin.revoke("nosuchkey000"),
            admin.rotate("nosuchkey000"),
        ):
            error = await refused(call, 404)
            assert error.code == "key_not_found"


async def test_update_replaces_the_given_fields_and_null_clears(url: str) -> None:
    async with opened(url) as store:
        admin = KeyAdmin(store)
        _, created = await admin.create(FULL)
        _, updated = await admin.update(
            created["id"],
            {
                "name": "renamed",
                "limits": {"rpm": 9},
                "budget": None,
                "expires_at": None,
                "metadata": None,
            },
        )
        assert updated["name"] == "renamed"
        assert updated["limits"] == {"rpm": 9}
        assert updated["budget"] is None
        assert updated["expires_at"] is None
        assert updated["metadata"] == {}
        assert list(updated["providers"]) == ["custom"]  # not named: kept
        _, cleared = await admin.update(created["id"], {"limits": None, "providers": None})
        assert cleared["limits"] == {}
        assert cleared["providers"] is None
        _, shown = await admin.show(created["id"])
        assert shown == cleared
        error = await refused(admin.update(created["id"], {"revoked_at": None}))
        assert error.param == "revoked_at"


async def test_revoke_keeps_the_record(url: str) -> None:
    async with opened(url) as store:
        admin = KeyAdmin(store)
        _, created = await admin.create({"name": "gone"})
        _, revoked = await admin.revoke(created["id"])
        assert revoked["revoked_at"] is not None
        _, again = await admin.revoke(created["id"])
        assert again["revoked_at"] == revoked["revoked_at"]
        _, shown = await admin.show(created["id"])
        assert shown["name"] == "gone"
        assert shown["revoked_at"] == revoked["revoked_at"]
        error = await refused(admin.rotate(created["id"]))
        assert error.param == "id"


async def test_rotate_gives_a_new_secret_for_the_same_key(url: str) -> None:
    async with opened(url) as store:
        admin = KeyAdmin(store)
        _, created = await admin.create(FULL)
        status, rotated = await admin.rotate(created["id"])
        assert status == 200
        assert rotated["id"] == created["id"]
        assert rotated["key"] != created["key"]
        assert {k: v for k, v in rotated.items() if k != "key"} == {
            k: v for k, v in created.items() if k != "key"
        }
        hasher = SecretHasher(await store.pepper())
        record = await store.get_key(created["id"])
        assert record is not None
        old, new = parse_key(created["key"]), parse_key(rotated["key"])
        assert old is not None
        assert new is not None
        assert hasher.matches(new.secret, record.secret_hash)
        assert not hasher.matches(old.secret, record.secret_hash)


async def test_usage_rows_as_the_api_answers_them(url: str) -> None:
    day = day_start("2026-12-01")
    async with opened(url) as store:
        await store.append_usage(
            [
                UsageRecord(
                    "static-1",
                    "/r",
                    "custom",
                    "m",
                    200,
                    False,
                    3,
                    4,
                    0,
                    7000,
                    True,
                    timestamp=day + 10,
                ),
                UsageRecord(
                    "static-1", "/r", "custom", "m", 502, True, 0, 0, 0, 0, True, timestamp=day + 20
                ),
            ]
        )
        status, answer = await KeyAdmin(store).usage(
            {"group_by": "day,key", "since": "2026-12-01", "until": "2026-12-02T00:00:00Z"}
        )
    assert status == 200
    assert answer == {
        "object": "list",
        "data": [
            {
                "key_id": "static-1",
                "day": "2026-12-01",
                "requests": 2,
                "errors": 1,
                "input_tokens": 3,
                "output_tokens": 4,
                "cached_tokens": 0,
                "cost_usd": 7e-06,
                "unpriced_requests": 0,
            }
        ],
    }


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"since": "last week"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"group_by": "key,team"}, "group_by"),
        ({"keyid": "x"}, "keyid"),
    ],
)
def test_usage_query_names_the_bad_parameter(query: dict[str, str], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_usage_query(query)
    assert caught.value.param == param
    assert caught.value.http_status == 400


def test_usage_query_values() -> None:
    query = parse_usage_query(
        {"key_id": "static-1", "provider": "custom", "model": "m", "group_by": "day, key,day"}
    )
    assert (query.key_id, query.provider, query.model) == ("static-1", "custom", "m")
    assert query.group_by == ("day", "key")
    assert parse_usage_query({}).group_by == ()
