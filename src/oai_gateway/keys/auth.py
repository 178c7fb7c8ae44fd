"""Who a data-plane request is (SPEC §4.1, §10.1): a static key of ALLOWED_API_KEYS, a virtual
key of the store, or nobody; and whether that key may use a provider and model."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

import msgspec

from oai_gateway.errors import AuthenticationError
from oai_gateway.keys.cache import KeyCache
from oai_gateway.keys.records import KeyRecord, parse_time
from oai_gateway.keys.refusals import KeyRefusedError, ModelNotAllowedError
from oai_gateway.keys.secrets import SecretHasher, parse_key
from oai_gateway.keys.store import Store
from oai_gateway.server.asgi import Scope, header

UNKNOWN_KEY = (
    "Invalid or missing API key. Send 'Authorization: Bearer <key>' with a key this gateway "
    "accepts (ALLOWED_API_KEYS or a virtual key)."
)


class Principal(msgspec.Struct, frozen=True):
    """`key_id` is the virtual key's id or `static-<n>` (n from 1, in ALLOWED_API_KEYS order)."""

    key_id: str
    record: KeyRecord | None = None


_MAX_VERIFIED = 10_000  # keys remembered as verified; past it the memo starts again


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class KeyAuthenticator:
    def __init__(self, static_keys: Sequence[str], store: Store | None, cache: KeyCache | None):
        self._static = [_digest(k.encode()) for k in static_keys]
        self._store = store
        self._cache = cache
        self._hasher: SecretHasher | None = None
        # key id -> (record, secret) last verified against that record object: the keyed hash
        # is computed again only when the cache hands out a new record (at most once a second
        # per key, and at once on a change), not on every request.
        self._verified_secrets: dict[str, tuple[KeyRecord, str]] = {}
        self.stale_ok = False  # STORE_FAILURE_MODE=open: a stale record beats no answer

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._store is not None

    async def authenticate(self, scope: Scope) -> Principal | None:
        """The request's principal; AuthenticationError (401) for anything not accepted."""
        if not self.enabled:
            return None
        value = header(scope, b"authorization") or b""
        scheme, _, raw = value.partition(b" ")
        token = raw.strip() if scheme.lower() == b"bearer" else b""
        index = self._static_index(token)
        if index is not None:
            return Principal(f"static-{index + 1}")
        parsed = parse_key(token.decode("latin-1")) if self._cache is not None else None
        if parsed is None:
            raise AuthenticationError(UNKNOWN_KEY)
        record = await self._verified(parsed.key_id, parsed.secret)
        _check_usable(record, time.time())
        return Principal(record.id, record)

    def _static_index(self, token: bytes) -> int | None:
        presented = _digest(token or b"\x00")
        found = None
        for index, digest in enumerate(self._static):
            # Every digest is compared, so timing says nothing about which key matched.
            if hmac.compare_digest(presented, digest) and found is None:
                found = index
        return found

    async def _verified(self, key_id: str, secret: str) -> KeyRecord:
        assert self._cache is not None
        assert self._store is not None
        record = await self._cache.get(key_id, stale_ok=self.stale_ok)
        if self._hasher is None:
            self._hasher = SecretHasher(await self._store.pepper())
        if record is None:
            raise AuthenticationError(UNKNOWN_KEY)
        known = self._verified_secrets.get(key_id)
        if known is not None and known[0] is record and hmac.compare_digest(known[1], secret):
            return record
        if not self._hasher.matches(secret, record.secret_hash):
            raise AuthenticationError(UNKNOWN_KEY)
        if len(self._verified_secrets) >= _MAX_VERIFIED:
            self._verified_secrets.clear()
        self._verified_secrets[key_id] = (record, secret)
        return record


def _check_usable(record: KeyRecord, now: float) -> None:
    if record.revoked_at is not None:
        raise KeyRefusedError(
            f"This virtual key ({record.id}) was revoked at {record.revoked_at}; ask the "
            "gateway's operator for a new one."
        )
    if record.expires_at is not None and parse_time(record.expires_at) <= now:
        raise KeyRefusedError(
            f"This virtual key ({record.id}) expired at {record.expires_at}; ask the gateway's "
            "operator to extend it or for a new one."
        )


def check_allowed(record: KeyRecord, provider: str, model: str | None) -> None:
    """403 model_not_allowed unless the key's allow-lists admit this provider (and model)."""
    if record.providers is not None and provider not in record.providers:
        raise ModelNotAllowedError(f"Key {record.id} may not use provider '{provider}'.")
    models = record.models
    if models is None or provider in models:
        return
    if model is None:
        if not any(m.startswith(f"{provider}/") for m in models):
            raise ModelNotAllowedError(f"Key {record.id} may not use provider '{provider}'.")
        return
    if f"{provider}/{model}" not in models:
        raise ModelNotAllowedError(
            f"Key {record.id} may not use model '{model}' of provider '{provider}'."
        )
