"""The admin API (SPEC §10.2) as functions over the Store: one answer per call, transport-free.

The HTTP routes and the CLI both call `KeyAdmin`, so they validate the same way and answer the
same JSON. Errors are `GatewayError`s (OpenAI envelope; a bad field names it in `param`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from oai_gateway.errors import GatewayError, InvalidRequestError
from oai_gateway.keys.key_fields import KeyFields, apply_fields, parse_fields
from oai_gateway.keys.records import KeyRecord, now_iso, parse_time
from oai_gateway.keys.secrets import SecretHasher, full_key, new_id, new_secret, valid_id
from oai_gateway.keys.store import KeyExistsError, Store
from oai_gateway.keys.usage import GROUP_FIELDS, UsageQuery, parse_bound

Json = dict[str, Any]
Reply = tuple[int, Json]
DEFAULT_PAGE = 20
MAX_PAGE = 100
_LIST_PARAMS = frozenset({"limit", "after"})
_USAGE_PARAMS = frozenset({"key_id", "provider", "model", "since", "until", "group_by"})
_NEW_ID_ATTEMPTS = 5


class UnknownKeyError(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "key_not_found"


def _not_found(key_id: str) -> UnknownKeyError:
    return UnknownKeyError(f"No virtual key with id {key_id[:64]!r}.", param="id")


def _check_params(query: Mapping[str, str], allowed: frozenset[str]) -> None:
    for name in query:
        if name not in allowed:
            raise InvalidRequestError(
                f"Unknown query parameter {name[:64]!r}; accepted: {', '.join(sorted(allowed))}.",
                param=name[:64],
            )


class KeyAdmin:
    """Create, list, show, update, revoke and rotate keys; roll up usage."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._hasher: SecretHasher | None = None

    async def _hash(self, secret: str) -> str:
        if self._hasher is None:
            self._hasher = SecretHasher(await self.store.pepper())
        return self._hasher.hash(secret)

    async def _record(self, key_id: str) -> KeyRecord:
        record = await self.store.get_key(key_id) if valid_id(key_id) else None
        if record is None:
            raise _not_found(key_id)
        return record

    async def create(self, body: object) -> Reply:
        fields = parse_fields(body)
        _check_future(fields)
        for _ in range(_NEW_ID_ATTEMPTS):
            key_id, secret = new_id(), new_secret()
            blank = KeyRecord(id=key_id, secret_hash=await self._hash(secret), created_at=now_iso())
            record = apply_fields(blank, fields)
            try:
                await self.store.create_key(record)
            except KeyExistsError:  # pragma: no cover - 36**12 ids; only a broken RNG repeats
                continue
            return 201, {**record.public(), "key": full_key(key_id, secret)}
        raise GatewayError("Could not find a free key id.")  # pragma: no cover

    async def list(self, query: Mapping[str, str]) -> Reply:
        _check_params(query, _LIST_PARAMS)
        limit = _page_size(query.get("limit"))
        after = query.get("after")
        if after is not None and (not valid_id(after) or await self.store.get_key(after) is None):
            raise InvalidRequestError(
                f"after: no virtual key with id {after[:64]!r}.", param="after"
            )
        records = await self.store.list_keys(limit + 1, after)
        page = [r.public() for r in records[:limit]]
        return 200, {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(records) > limit,
        }

    async def show(self, key_id: str) -> Reply:
        return 200, (await self._record(key_id)).public()

    async def update(self, key_id: str, body: object) -> Reply:
        fields = parse_fields(body)
        record = apply_fields(await self._record(key_id), fields)
        await self.store.put_key(record)
        return 200, record.public()

    async def revoke(self, key_id: str) -> Reply:
        record = await self._record(key_id)
        if record.revoked_at is None:
            record = msgspec.structs.replace(record, revoked_at=now_iso())
            await self.store.put_key(record)
        return 200, record.public()

    async def rotate(self, key_id: str) -> Reply:
        record = await self._record(key_id)
        if record.revoked_at is not None:
            raise InvalidRequestError(
                f"Key {key_id} is revoked; create a new key instead of rotating it.", param="id"
            )
        secret = new_secret()
        record = msgspec.structs.replace(record, secret_hash=await self._hash(secret))
        await self.store.put_key(record)
        return 200, {**record.public(), "key": full_key(key_id, secret)}

    async def usage(self, query: Mapping[str, str]) -> Reply:
        usage_query = parse_usage_query(query)
        rows = await self.store.usage_rollup(usage_query)
        data = [row.as_json(usage_query.group_by) for row in rows]
        return 200, {"object": "list", "data": data}


def _check_future(fields: KeyFields) -> None:
    if isinstance(fields.expires_at, str) and parse_time(fields.expires_at) <= time.time():
        raise InvalidRequestError("expires_at: must be in the future.", param="expires_at")


def _page_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidRequestError(
            f"limit: must be an integer from 1 to {MAX_PAGE} (got {text[:32]!r}).", param="limit"
        )
    return int(text)


def parse_usage_query(query: Mapping[str, str]) -> UsageQuery:
    """`?key_id=&provider=&model=&since=&until=&group_by=` as a UsageQuery, or a 400."""
    _check_params(query, _USAGE_PARAMS)
    bounds: dict[str, float | None] = {}
    for name in ("since", "until"):
        text = query.get(name)
        try:
            bounds[name] = None if text is None else parse_bound(text)
        except ValueError as exc:
            raise InvalidRequestError(f"{name}: {exc}", param=name) from None
    group_by = tuple(g.strip() for g in query.get("group_by", "").split(",") if g.strip())
    for name in group_by:
        if name not in GROUP_FIELDS:
            raise InvalidRequestError(
                f"group_by: {name[:32]!r} is not one of {', '.join(GROUP_FIELDS)}.",
                param="group_by",
            )
    return UsageQuery(
        key_id=query.get("key_id") or None,
        provider=query.get("provider") or None,
        model=query.get("model") or None,
        since=bounds["since"],
        until=bounds["until"],
        group_by=tuple(dict.fromkeys(group_by)),
    )
