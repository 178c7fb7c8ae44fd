"""Who a request is: static keys, virtual keys (revoked, expired, allow-lists), and the cache
that keeps lookups off the store for at most a second."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from msgspec.structs import replace

from oai_gateway.errors import AuthenticationError
from oai_gateway.keys.auth import KeyAuthenticator, check_allowed
from oai_gateway.keys.cache import KeyCache
from oai_gateway.keys.records import KeyRecord, format_time, now_iso
from oai_gateway.keys.refusals import KeyRefusedError, ModelNotAllowedError
from oai_gateway.keys.secrets import SecretHasher, full_key, new_secret, parse_key
from oai_gateway.keys.store import StoreUnavailableError
from oai_gateway.keys.store_memory import MemoryStore
from tests.keys.contract import record

pytestmark = pytest.mark.anyio
STATIC_KEY_ONE = "static-key-one-0123456789"
STATIC_KEY_TWO = "static-key-two-0123456789"


def scope(token: str) -> dict[str, Any]:
    return {"headers": [(b"authorization", f"Bearer {token}".encode())]}


async def issued(store: MemoryStore, **values: Any) -> tuple[KeyRecord, str]:
    secret = new_secret()
    hashed = SecretHasher(await store.pepper()).hash(secret)
    made = replace(record(**values), secret_hash=hashed)
    await store.create_key(made)
    return made, full_key(made.id, secret)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False

    async def get_key(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        await asyncio.sleep(0)
        if self.down:
            raise StoreUnavailableError("down")
        return await super().get_key(key_id)


def test_the_key_format_round_trips() -> None:
    parsed = parse_key(full_key("abcdefghij12", "s" * 32))
    assert parsed is not None
    assert (parsed.key_id, parsed.secret) == ("abcdefghij12", "s" * 32)
    for bad in ("sk-gw-short-" + "s" * 32, "sk-gw-abcdefghij12-" + "s" * 31, "sk-other"):
        assert parse_key(bad) is None


async def test_static_keys_are_numbered_from_one() -> None:
    auth = KeyAuthenticator([STATIC_KEY_ONE, STATIC_KEY_TWO], None, None)
    assert (await auth.authenticate(scope(STATIC_KEY_TWO))).key_id == "static-2"  # type: ignore[union-attr]
    with pytest.raises(AuthenticationError):
        await auth.authenticate(scope("nope"))
    assert await KeyAuthenticator([], None, None).authenticate(scope("x")) is None


async def test_a_virtual_key_is_accepted_only_with_its_secret() -> None:
    store = CountingStore()
    made, key = await issued(store)
    auth = KeyAuthenticator([STATIC_KEY_ONE], store, KeyCache(store))
    principal = await auth.authenticate(scope(key))
    assert principal is not None
    assert (principal.key_id, principal.record) == (made.id, made)
    wrong = full_key(made.id, new_secret())
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(scope(wrong))
    assert not isinstance(caught.value, KeyRefusedError)
    with pytest.raises(AuthenticationError):
        await auth.authenticate(scope(full_key("nosuchkey000", new_secret())))


async def test_a_remembered_verification_holds_only_for_that_secret_and_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = CountingStore()
    made, key = await issued(store)
    cache = KeyCache(store, ttl_s=60)
    auth = KeyAuthenticator([], store, cache)
    hashed: list[str] = []
    original = SecretHasher.matches

    def counted(self: SecretHasher, secret: str, secret_hash: str) -> bool:
        hashed.append(secret)
        return original(self, secret, secret_hash)

    monkeypatch.setattr(SecretHasher, "matches", counted)
    for _ in range(3):
        assert (await auth.authenticate(scope(key))).key_id == made.id  # type: ignore[union-attr]
    assert len(hashed) == 1  # the keyed hash once, then the remembered secret
    with pytest.raises(AuthenticationError):
        await auth.authenticate(scope(full_key(made.id, new_secret())))
    assert len(hashed) == 2  # another secret is hashed, and refused
    # A rotated secret arrives as a new record: the old secret is checked against it, refused.
    secret = new_secret()
    rotated = replace(made, secret_hash=SecretHasher(await store.pepper()).hash(secret))
    await store.put_key(rotated)
    cache.invalidate(made.id)  # what the store's change notice does
    with pytest.raises(AuthenticationError):
        await auth.authenticate(scope(key))
    assert (await auth.authenticate(scope(full_key(made.id, secret)))).record == rotated  # type: ignore[union-attr]


async def test_revoked_and_expired_keys_are_refused_saying_why() -> None:
    store = CountingStore()
    _, revoked_key = await issued(store, revoked_at=now_iso())
    _, expired_key = await issued(store, expires_at=format_time(1_000_000))
    auth = KeyAuthenticator([], store, KeyCache(store))
    with pytest.raises(KeyRefusedError, match="revoked"):
        await auth.authenticate(scope(revoked_key))
    with pytest.raises(KeyRefusedError, match="expired"):
        await auth.authenticate(scope(expired_key))


async def test_the_cache_reads_once_per_ttl_and_drops_changed_keys_at_once() -> None:
    store = CountingStore()
    made, _ = await issued(store)
    cache = KeyCache(store, ttl_s=60)
    cache.start()
    try:
        results = await asyncio.gather(*(cache.get(made.id) for _ in range(10)))
        assert results == [made] * 10
        assert store.reads == 1
        changed = replace(made, revoked_at=now_iso())
        await store.put_key(changed)
        for _ in range(100):  # the notice arrives through the watcher task
            if await cache.get(made.id) == changed:
                break
            await asyncio.sleep(0.01)
        assert await cache.get(made.id) == changed
    finally:
        await cache.aclose()


async def test_a_stale_copy_serves_only_when_allowed() -> None:
    store = CountingStore()
    made, _ = await issued(store)
    cache = KeyCache(store, ttl_s=0.0)
    assert await cache.get(made.id) == made
    store.down = True
    with pytest.raises(StoreUnavailableError):
        await cache.get(made.id)
    assert await cache.get(made.id, stale_ok=True) == made
    with pytest.raises(StoreUnavailableError):
        await cache.get("neverseen000", stale_ok=True)


def test_allow_lists_name_providers_or_provider_models() -> None:
    key = record(providers=("custom", "ollama"), models=("custom/gpt-test", "ollama"))
    check_allowed(key, "custom", "gpt-test")
    check_allowed(key, "ollama", "anything")
    check_allowed(key, "custom", None)  # listing models: the provider is allowed
    with pytest.raises(ModelNotAllowedError) as caught:
        check_allowed(key, "custom", "gpt-other")
    assert (caught.value.http_status, caught.value.param) == (403, "model")
    with pytest.raises(ModelNotAllowedError):
        check_allowed(key, "cerebras", "x")
    slash = record(models=("custom/org/model-a",))
    check_allowed(slash, "custom", "org/model-a")
    with pytest.raises(ModelNotAllowedError):
        check_allowed(slash, "ollama", None)
