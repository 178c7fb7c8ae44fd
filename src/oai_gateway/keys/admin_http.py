"""The admin API over HTTP (SPEC §10.2): its authenticator and the handlers the route table names
under `/admin/v1/`. Each handler turns the request into a `KeyAdmin` call and its answer into
JSON; what the calls do and check lives in `keys/admin.py`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable
from urllib.parse import parse_qsl

import orjson

from oai_gateway.api.body import read_body
from oai_gateway.api.exchange import Exchange, Services
from oai_gateway.errors import AuthenticationError, RouteNotFoundError
from oai_gateway.keys.admin import KeyAdmin, Reply
from oai_gateway.keys.refusals import StoreUnreachableError
from oai_gateway.keys.store import StoreUnavailableError
from oai_gateway.server.asgi import Scope, header
from oai_gateway.wire.requests import parse_object

_WRONG_KEY = (
    "Invalid or missing admin key. Send 'Authorization: Bearer <ADMIN_API_KEY>' to use /admin/v1."
)


ADMIN_STORE_DOWN = "The gateway cannot reach its key store (STORE_URL); retry once it is back."


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class AdminAuthenticator:
    """ADMIN_API_KEY, compared in constant time. Without it (or without a store) every
    /admin route answers 404, as if the admin API did not exist."""

    def __init__(self, admin_key: str | None, *, store: bool) -> None:
        self._digest = _digest(admin_key.encode()) if admin_key and store else None
        self._missing = "set ADMIN_API_KEY" if not admin_key else "set STORE_URL"

    def check(self, scope: Scope) -> None:
        if self._digest is None:
            raise RouteNotFoundError(
                f"Unknown path: {scope['method']} {scope['path'][:200]} "
                f"(the admin API is off: {self._missing})."
            )
        value = header(scope, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        presented = _digest(token.strip() if scheme.lower() == b"bearer" else b"\x00" + value)
        if not hmac.compare_digest(presented, self._digest):
            raise AuthenticationError(_WRONG_KEY)


def _admin(services: Services) -> KeyAdmin:
    if services.admin is None:  # pragma: no cover - the authenticator answers 404 first
        raise RouteNotFoundError("The admin API is off.")
    return services.admin


def _query(exchange: Exchange) -> dict[str, str]:
    text = exchange.scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(text, keep_blank_values=True))


async def _body(services: Services, exchange: Exchange) -> object:
    raw = await read_body(exchange.scope, exchange.receive, services.max_body)
    return {} if not raw.strip() else parse_object(raw)


async def _send(exchange: Exchange, reply: Awaitable[Reply]) -> None:
    try:
        status, answer = await reply
    except StoreUnavailableError as exc:
        # An admin call cannot be served without its store, whatever STORE_FAILURE_MODE says
        # (that mode is about the data plane): 503, which the caller may retry.
        raise StoreUnreachableError(ADMIN_STORE_DOWN) from exc
    await exchange.respond.json(status, orjson.dumps(answer))


async def create_key(services: Services, exchange: Exchange) -> None:
    body = await _body(services, exchange)
    await _send(exchange, _admin(services).create(body))


async def list_keys(services: Services, exchange: Exchange) -> None:
    await _send(exchange, _admin(services).list(_query(exchange)))


async def show_key(services: Services, exchange: Exchange) -> None:
    await _send(exchange, _admin(services).show(exchange.params["id"]))


async def update_key(services: Services, exchange: Exchange) -> None:
    body = await _body(services, exchange)
    await _send(exchange, _admin(services).update(exchange.params["id"], body))


async def revoke_key(services: Services, exchange: Exchange) -> None:
    await _send(exchange, _admin(services).revoke(exchange.params["id"]))


async def rotate_key(services: Services, exchange: Exchange) -> None:
    await _send(exchange, _admin(services).rotate(exchange.params["id"]))


async def usage(services: Services, exchange: Exchange) -> None:
    await _send(exchange, _admin(services).usage(_query(exchange)))
