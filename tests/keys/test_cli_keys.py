"""`oai-gateway keys …` and `oai-gateway usage`, run as the real console script on a real SQLite
file and a real Redis (SPEC §10.2)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from oai_gateway.keys.secrets import parse_key
from oai_gateway.keys.usage import UsageRecord, day_start
from tests.keys.contract import opened
from tests.keys.redis_server import RedisServer
from tests.support.processes import base_env, command

RUN_TIMEOUT_S = 30


def gateway(url: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("script", *args),
        env=base_env(cwd, STORE_URL=url, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def answer(url: str, cwd: Path, *args: str) -> Any:
    done = gateway(url, cwd, *args, "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    server.command("FLUSHALL")
    return server.url


# A dozen CLI processes, each a fresh interpreter (with coverage in each child): on a loaded
# machine that outlasts the suite's 60 s default.
@pytest.mark.timeout(180)
def test_a_key_through_its_whole_life(url: str, tmp_path: Path) -> None:
    created = answer(
        url,
        tmp_path,
        "keys",
        "create",
        "--name",
        "app one",
        "--provider",
        "custom",
        "--model",
        "ollama/llama3.2:1b",
        "--rpm",
        "5",
        "--tpm",
        "1000",
        "--budget-usd",
        "2.5",
        "--budget-period",
        "month",
        "--metadata",
        "owner=ops",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    )
    parsed = parse_key(created["key"])
    assert parsed is not None
    key_id = created["id"]
    assert parsed.key_id == key_id
    assert created["limits"] == {"rpm": 5, "tpm": 1000}
    assert created["budget"] == {"period": "month", "usd": 2.5}
    assert created["metadata"] == {"owner": "ops"}
    shown = answer(url, tmp_path, "keys", "show", key_id)
    assert "key" not in shown
    assert shown["name"] == "app one"

    updated = answer(
        url,
        tmp_path,
        "keys",
        "update",
        key_id,
        "--max-parallel",
        "2",
        "--metadata",
        "team=a",
        "--clear",
        "expires_at",
    )
    assert updated["limits"] == {"rpm": 5, "tpm": 1000, "max_parallel": 2}  # flags merge
    assert updated["metadata"] == {"owner": "ops", "team": "a"}
    assert updated["expires_at"] is None

    second = answer(url, tmp_path, "keys", "create", "--name", "two")
    listed = answer(url, tmp_path, "keys", "list", "--limit", "1")
    assert [k["id"] for k in listed["data"]] == [second["id"]]  # newest first
    assert listed["has_more"] is True
    rest = answer(url, tmp_path, "keys", "list", "--after", second["id"])
    assert [k["id"] for k in rest["data"]] == [key_id]

    rotated = answer(url, tmp_path, "keys", "rotate", key_id)
    assert rotated["id"] == key_id
    assert rotated["key"] != created["key"]
    assert rotated["limits"] == updated["limits"]
    revoked = answer(url, tmp_path, "keys", "revoke", key_id)
    assert revoked["revoked_at"] is not None
    assert answer(url, tmp_path, "keys", "show", key_id)["revoked_at"] == revoked["revoked_at"]


def test_usage_from_the_ledger(url: str, tmp_path: Path) -> None:
    day = day_start("2026-12-01")

    async def write() -> None:
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
                        10,
                        5,
                        1,
                        4000,
                        True,
                        timestamp=day + 5,
                    ),
                    UsageRecord(
                        "static-1",
                        "/r",
                        "custom",
                        "m",
                        500,
                        True,
                        0,
                        0,
                        0,
                        0,
                        True,
                        timestamp=day + 86_400,
                    ),
                    UsageRecord(
                        "static-2",
                        "/r",
                        "ollama",
                        "x",
                        200,
                        False,
                        1,
                        1,
                        0,
                        0,
                        False,
                        timestamp=day + 7,
                    ),
                ]
            )

    asyncio.run(write())
    rows = answer(url, tmp_path, "usage", "--group-by", "key,day", "--since", "2026-12-01")
    assert rows["object"] == "list"
    assert [(r["key_id"], r["day"], r["requests"], r["errors"]) for r in rows["data"]] == [
        ("static-1", "2026-12-01", 1, 0),
        ("static-1", "2026-12-02", 1, 1),
        ("static-2", "2026-12-01", 1, 0),
    ]
    (only,) = answer(url, tmp_path, "usage", "--key-id", "static-1", "--until", "2026-12-02")[
        "data"
    ]
    assert (only["requests"], only["input_tokens"], only["cost_usd"]) == (1, 10, 4e-06)
    table = gateway(url, tmp_path, "usage", "--group-by", "provider")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "provider",
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cost_usd",
        "unpriced_requests",
    ]
    assert lines[1].split()[:3] == ["custom", "2", "1"]
    assert lines[2].split()[:2] == ["ollama", "1"]


def test_human_output_shows_the_key_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    created = gateway(url, tmp_path, "keys", "create", "--name", "shown")
    assert created.returncode == 0, created.stderr
    key_line = next(line for line in created.stdout.splitlines() if line.startswith("key: "))
    assert parse_key(key_line.removeprefix("key: ")) is not None
    assert "shown only now" in created.stdout
    listing = gateway(url, tmp_path, "keys", "list")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["id", "name", "created_at", "status", "limits", "budget"]
    assert row.split()[1:2] == ["shown"]
    assert "active" in row.split()
    assert "sk-gw-" not in listing.stdout


def test_store_url_flag_and_dotenv(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flag.db'}"
    by_flag = gateway("", tmp_path, "keys", "create", "--store-url", url, "--json")
    assert by_flag.returncode == 0, by_flag.stderr
    (tmp_path / ".env").write_text(f"STORE_URL={url}\n", encoding="utf-8")
    listed = gateway("", tmp_path, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(orjson.loads(listed.stdout)["data"]) == 1


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("keys", "show", "nosuchkey000"), 1, "No virtual key"),
        (("keys", "create", "--rpm", "0"), 1, "limits"),
        (("keys", "create", "--budget-usd", "1"), 2, "--budget-period is required"),
        (("keys", "create", "--metadata", "novalue"), 2, "KEY=VALUE"),
        (("keys", "create", "--expires-at", "tomorrow"), 1, "expires_at"),
        (("usage", "--group-by", "team"), 1, "group_by"),
        (("usage", "--since", "last week"), 1, "since"),
    ],
)
def test_bad_input_is_named_with_a_non_zero_exit(
    tmp_path: Path, args: tuple[str, ...], status: int, message: str
) -> None:
    done = gateway(f"sqlite:///{tmp_path / 'keys.db'}", tmp_path, *args)
    assert done.returncode == status
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_without_a_store_url_or_with_a_bad_one(tmp_path: Path) -> None:
    done = gateway("", tmp_path, "keys", "list")
    assert done.returncode == 2
    assert "STORE_URL: not set" in done.stderr
    bad = gateway("postgres://db/keys", tmp_path, "keys", "list")
    assert bad.returncode == 2
    assert "STORE_URL: must be" in bad.stderr


def test_an_unreachable_store(tmp_path: Path) -> None:
    from tests.support.sockets import free_port

    done = gateway(f"redis://127.0.0.1:{free_port()}/0", tmp_path, "keys", "list")
    assert done.returncode == 1
    assert "store unavailable" in done.stderr
    assert "Traceback" not in done.stderr
