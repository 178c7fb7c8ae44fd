"""The virtual-key side of the data plane's one choke point (SPEC §10.3): who the caller is,
whether the key may use this provider and model, and its limits before the call (one store
call), reconciled after it (one more, which Redis sends along with a later admission, so the
finished request does not wait for it). Keys without limits or budget never reach the store
beyond the cached lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.keys.auth import KeyAuthenticator, Principal, check_allowed
from oai_gateway.keys.cache import KeyCache
from oai_gateway.keys.leases import LeaseKeeper
from oai_gateway.keys.limits import Estimate, Plan, Price, estimate, plan, settlement
from oai_gateway.keys.metrics import KeyMetrics
from oai_gateway.keys.records import KeyRecord
from oai_gateway.keys.refusals import (
    STORE_UNAVAILABLE,
    Headers,
    StoreUnreachableError,
    rate_headers,
    refusal,
)
from oai_gateway.keys.store import Decision, Store, StoreUnavailableError
from oai_gateway.observability.context import SCOPE_KEY, RequestContext
from oai_gateway.providers.base import Json, Operation
from oai_gateway.server.asgi import Scope, header

if TYPE_CHECKING:
    from oai_gateway.api.exchange import Exchange

_log = logging.getLogger("oai_gateway")
GENERATING = frozenset({Operation.CHAT, Operation.COMPLETIONS, Operation.RESPONSES})
NOTHING_RESERVED = Estimate(0, 0)  # a key without limits or budget reserves nothing


def body_size(scope: Scope, body: Json | None) -> int:
    """The request body's size: its Content-Length, or (chunked) its JSON re-encoded."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit():
        return int(length)
    return 0 if body is None else len(orjson.dumps(body))


class Ticket(msgspec.Struct, frozen=True):
    """An admitted request of a limited key, until it settles."""

    record: KeyRecord
    plan: Plan
    decision: Decision
    headers: Headers  # the x-ratelimit-* of the key's limits, for the successful answer


class KeyEnforcement:
    def __init__(
        self,
        static_keys: list[str],
        store: Store | None,
        metrics: KeyMetrics,
        *,
        failure_open: bool,
        providers: Mapping[str, ProviderSpec],
    ) -> None:
        self.store = store
        self.cache = None if store is None else KeyCache(store)
        self.leases = None if store is None else LeaseKeeper(store)
        self.authenticator = KeyAuthenticator(static_keys, store, self.cache)
        self.authenticator.stale_ok = failure_open
        self._metrics = metrics
        self._open = failure_open
        self._specs = providers  # name -> spec, for its `prices`
        self._settling: set[asyncio.Future[None]] = set()  # settlements queued by the store

    async def start(self) -> None:
        if self.store is None or self.cache is None:
            return
        try:
            await self.store.start()
        except StoreUnavailableError as exc:
            # Not fatal: the store may come up after the gateway; requests say so meanwhile.
            _log.warning("key store not reachable at startup: %s", exc)
        self.cache.start()
        if self.leases is not None:
            self.leases.start()

    async def aclose(self) -> None:
        if self._settling:  # every settlement reaches the store before it closes
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self.leases is not None:
            await self.leases.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        if self.store is not None:
            await self.store.aclose()

    async def authenticate(self, scope: Scope) -> Principal | None:
        try:
            principal = await self.authenticator.authenticate(scope)
        except StoreUnavailableError as exc:
            # Without a record there is no one to serve, open or closed.
            self._store_failed("lookup", exc)
            raise StoreUnreachableError(STORE_UNAVAILABLE) from None
        context = scope.get(SCOPE_KEY)
        if principal is not None and isinstance(context, RequestContext):
            context.key_id = principal.key_id  # known from here on: failed requests count too
        return principal

    async def admit(self, exchange: Exchange, body: Json | None) -> None:
        """The data plane's admission (api.enforcement.Enforcement)."""
        context = exchange.context
        principal = exchange.principal if isinstance(exchange.principal, Principal) else None
        if principal is None:
            return
        context.key_id = principal.key_id
        provider = context.provider or ""
        guess = NOTHING_RESERVED
        if principal.record is not None and principal.record.limited:
            generates = exchange.route.operation in GENERATING
            guess = estimate(body, body_size(exchange.scope, body), generates=generates)
        ticket = await self.admit_key(principal, provider, context.model, guess)
        if ticket is not None:
            context.admission = ticket
            context.reserved_tokens = ticket.plan.admission.tokens
            exchange.respond.add_headers(ticket.headers)

    async def settle(self, exchange: Exchange) -> None:
        context = exchange.context
        ticket = context.admission
        context.admission = None
        if isinstance(ticket, Ticket):
            await self.settle_ticket(ticket, context.usage)
        if context.key_id is not None:
            self._metrics.request(context.key_id, context.status, context.usage)

    def price_of(self, provider: str, model: str | None) -> Price | None:
        spec = self._specs.get(provider)
        if spec is None or model is None:
            return None
        return spec.prices.get(model)

    async def admit_key(
        self, principal: Principal | None, provider: str, model: str | None, guess: Estimate
    ) -> Ticket | None:
        """Allow-lists, then limits; raises the §5 error of a refusal. None: nothing to settle."""
        if principal is None or principal.record is None:
            return None
        record = principal.record
        check_allowed(record, provider, model)
        planned = plan(record, guess, self.price_of(provider, model))
        if planned is None or self.store is None:
            return None
        try:
            decision = await self.store.admit(record.id, planned.admission)
        except StoreUnavailableError as exc:
            self._store_failed("admit", exc)
            if self._open:
                return None
            raise StoreUnreachableError(STORE_UNAVAILABLE) from None
        if not decision.admitted:
            raise refusal(record, decision)
        if planned.admission.max_parallel is not None and self.leases is not None:
            self.leases.hold(record.id, planned.admission.request_id)
        return Ticket(record, planned, decision, rate_headers(record, decision))

    async def settle_ticket(self, ticket: Ticket | None, usage: Mapping[str, Any] | None) -> None:
        if ticket is None or self.store is None:
            return
        reconciled = settlement(ticket.record, ticket.plan, ticket.decision, usage)
        if self.leases is not None:
            self.leases.drop(ticket.record.id, reconciled.request_id)
        if not reconciled.changes_anything:
            return
        outcome = self.store.settle(ticket.record.id, reconciled)
        if isinstance(outcome, asyncio.Future):  # queued (settles_later): nobody waits for it
            self._settling.add(outcome)
            outcome.add_done_callback(self._settled)
            return
        try:
            await outcome
        except StoreUnavailableError as exc:
            self._store_failed("settle", exc)

    def _settled(self, outcome: asyncio.Future[None]) -> None:
        self._settling.discard(outcome)
        failed = None if outcome.cancelled() else outcome.exception()
        if isinstance(failed, StoreUnavailableError):
            self._store_failed("settle", failed)
        elif failed is not None:
            _log.error("settling a request failed: %r", failed)

    def _store_failed(self, operation: str, exc: StoreUnavailableError) -> None:
        self._metrics.store_error(operation)
        if self._open and operation != "lookup":
            _log.warning(
                "key store unavailable (%s): serving without limits (STORE_FAILURE_MODE=open)",
                exc,
            )
        else:
            _log.warning("key store unavailable (%s) during %s", exc, operation)
