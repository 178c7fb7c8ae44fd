"""Gateway keys (SPEC §4.1): constant-time checks, one answer for every kind of failure."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from oai_gateway.errors import AuthenticationError
from oai_gateway.server.asgi import Scope, header

_MESSAGE = (
    "Invalid or missing API key. Send 'Authorization: Bearer <key>' with a key this gateway "
    "accepts (ALLOWED_API_KEYS)."
)


def _digest(value: bytes) -> bytes:
    # Comparing fixed-size digests keeps the comparison time independent of the key length too.
    return hashlib.sha256(value).digest()


class Authenticator:
    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k.encode()) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, scope: Scope) -> None:
        """Raise AuthenticationError unless the request carries an accepted bearer key."""
        if not self._digests:
            return
        value = header(scope, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        presented = _digest(token.strip() if scheme.lower() == b"bearer" else b"\x00" + value)
        accepted = False
        for digest in self._digests:
            accepted |= hmac.compare_digest(presented, digest)
        if not accepted:
            raise AuthenticationError(_MESSAGE)
