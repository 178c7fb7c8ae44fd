"""`RoutedProvider`: a provider with several upstreams or fallbacks (SPEC §11), behind the same
`Provider` interface the routes use for every other provider."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import GatewayError, ModelNotFoundError
from oai_gateway.observability.context import RequestContext
from oai_gateway.providers.base import ChunkStream, Json, Operation, Provider, UpstreamCall
from oai_gateway.routing.attempts import (
    Attempt,
    AttemptPlan,
    Candidate,
    Report,
    Target,
    run_attempts,
    timed,
)
from oai_gateway.routing.members import Lease, Member
from oai_gateway.routing.stream import CommittedStream, first_event
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.requests import RequestFacts

if TYPE_CHECKING:
    from oai_gateway.routing.fleet import Fleet

T = TypeVar("T")
Invoke = Callable[[Provider, UpstreamCall, Json, RequestFacts], Awaitable[T]]


class RoutedProvider:
    """Every call goes through the attempt loop over the provider's upstreams, then the
    request model's fallbacks; the upstream providers themselves do the talking."""

    def __init__(self, spec: ProviderSpec, fleet: Fleet) -> None:
        self.spec = spec
        self._fleet = fleet
        self.target: Target = fleet.targets[spec.name]
        self.unsupported = fleet.callee(self.target.members[0]).unsupported
        # What the last readiness check found per upstream, for /readyz.
        self.upstreams_ready: dict[str, dict[str, object]] = {}

    async def start(self) -> None:
        """Nothing: the fleet starts every upstream's pool once, fallbacks included."""

    async def aclose(self) -> None:
        """Nothing: the fleet closes the pools it started."""

    # -- models and readiness ----------------------------------------------------------------

    async def upstream_readiness(self) -> dict[str, str | None]:
        """Each upstream's problem (None when it answers), by `provider/index`."""
        members = self.target.members
        checks = [self._fleet.callee(m).check_ready() for m in members]
        results = await asyncio.gather(*checks)
        return {m.label: problem for m, problem in zip(members, results, strict=True)}

    async def check_ready(self) -> str | None:
        problems = await self.upstream_readiness()
        states = {m.label: m.breaker.state.value for m in self.target.members}
        self.upstreams_ready = {
            label: {"ready": problem is None, "detail": problem, "breaker": states[label]}
            for label, problem in problems.items()
        }
        if any(problem is None for problem in problems.values()):
            return None
        return "; ".join(f"{label}: {problem}" for label, problem in problems.items())

    async def list_models(self, ctx: UpstreamCall) -> list[Json]:
        """The union of the upstreams' lists; an upstream that cannot answer is left out
        unless none can."""
        members = self.target.members
        calls = [self._fleet.callee(m).list_models(ctx) for m in members]
        lists = await asyncio.gather(*calls, return_exceptions=True)
        failures = [models for models in lists if isinstance(models, BaseException)]
        if len(failures) == len(lists):
            raise failures[0]
        union: dict[str, Json] = {}
        for models in lists:
            if not isinstance(models, BaseException):
                for model in models:
                    union.setdefault(model["id"], model)
        return list(union.values())

    async def retrieve_model(self, ctx: UpstreamCall, model_id: str) -> Json:
        for model in await self.list_models(ctx):
            if model["id"] == model_id:
                return model
        raise ModelNotFoundError(
            f"The model '{model_id}' does not exist at provider '{self.spec.name}'."
        )

    # -- generation ----------------------------------------------------------------------------

    # `embed`, `generate` and `stream` are not coroutines themselves: every level of coroutines
    # between the route and the upstream call is paid again each time the call waits on I/O.

    def embed(
        self, ctx: UpstreamCall, body: Json, facts: RequestFacts
    ) -> Coroutine[Any, Any, Answer]:
        return self._answer(ctx, Operation.EMBEDDINGS, body, facts, _embed)

    def generate(
        self, ctx: UpstreamCall, operation: Operation, body: Json, facts: RequestFacts
    ) -> Coroutine[Any, Any, Answer]:
        return self._answer(ctx, operation, body, facts, _GENERATE[operation])

    def stream(
        self, ctx: UpstreamCall, operation: Operation, body: Json, facts: RequestFacts
    ) -> Coroutine[Any, Any, ChunkStream]:
        return self._stream(ctx, operation, body, facts, _STREAM[operation])

    async def stored_response(self, ctx: UpstreamCall, method: str, suffix: str) -> Answer:
        """A stored response lives on whichever upstream made it; the first one is asked."""
        member = self._fleet.callee(self.target.members[0])
        return await member.stored_response(ctx, method, suffix)

    # The first attempt goes straight to the strategy's pick when every upstream may be tried
    # (nearly always); only when it fails, or an upstream is paused or open, is the attempt
    # loop built: its plan, report and candidates cost more than the routing itself.

    async def _answer(
        self,
        ctx: UpstreamCall,
        operation: Operation,
        body: Json,
        facts: RequestFacts,
        invoke: Invoke[T],
    ) -> T:
        """A whole answer from the first candidate that gives one."""
        member = self.target.first()
        if member is None:
            attempt = self._attempt(ctx, body, facts, invoke)
            answer, lease = await self._attempts(ctx, operation, facts.model, attempt)
        else:
            lease = self._begin(ctx, member)
            try:
                work = invoke(self._fleet.callees[member], ctx, dict(body), facts)
                answer = await self._timed(work, member)
            except GatewayError as exc:
                attempt = self._attempt(ctx, body, facts, invoke)
                failure = (lease, exc)
                answer, lease = await self._attempts(ctx, operation, facts.model, attempt, failure)
            except BaseException:
                lease.release()
                raise
            else:
                self._served(lease)
        lease.release()
        return answer

    async def _stream(
        self,
        ctx: UpstreamCall,
        operation: Operation,
        body: Json,
        facts: RequestFacts,
        invoke: Invoke[ChunkStream],
    ) -> ChunkStream:
        """A stream from the first candidate whose first event arrives: the commit point."""
        opening = self._attempt(ctx, body, facts, invoke)

        async def attempt(candidate: Candidate, lease: Lease) -> ChunkStream:
            opened = await opening(candidate, lease)
            return CommittedStream(await first_event(opened), opened, lease)

        member = self.target.first()
        if member is None:
            stream, _lease = await self._attempts(ctx, operation, facts.model, attempt)
            return stream  # the lease is released when the stream is closed
        lease = self._begin(ctx, member)
        try:
            stream = await self._timed(attempt(Candidate(self.target, member, None), lease), member)
        except GatewayError as exc:
            stream, _lease = await self._attempts(
                ctx, operation, facts.model, attempt, (lease, exc)
            )
        except BaseException:
            lease.release()
            raise
        else:
            self._served(lease)
        return stream

    def _begin(self, ctx: UpstreamCall, member: Member) -> Lease:
        """The first attempt, on `member`: the response headers and the access line name it."""
        sink = ctx.timer
        if isinstance(sink, RequestContext):
            sink.upstream = member.label
            sink.attempts = 1
        return member.lease()

    def _timed(self, work: Awaitable[T], member: Member) -> Awaitable[T]:
        timeout_s = self.spec.ttft_timeout_s
        return work if timeout_s is None else timed(work, timeout_s, member)

    def _served(self, lease: Lease) -> None:
        lease.succeeded()
        observe = self._fleet.observe
        if observe is not None:
            observe(lease.member, "ok")

    def _attempts(
        self,
        ctx: UpstreamCall,
        operation: Operation,
        model: str,
        attempt: Attempt[T],
        failure: tuple[Lease, GatewayError] | None = None,
    ) -> Coroutine[Any, Any, tuple[T, Lease]]:
        spec = self.spec
        fallbacks = self._fleet.fallbacks(spec, model, operation) if spec.fallbacks else ()
        timer = ctx.timer
        # Put the attempts where the response headers and the access line read them.
        sink = timer if isinstance(timer, RequestContext) else None
        return run_attempts(
            AttemptPlan(self.target, fallbacks, spec.max_attempts),
            attempt,
            report=Report(sink=sink),
            ttft_timeout_s=spec.ttft_timeout_s,
            observe=self._fleet.observe,
            failure=failure,
        )

    def _attempt(
        self, ctx: UpstreamCall, body: Json, facts: RequestFacts, invoke: Invoke[T]
    ) -> Attempt[T]:
        """One attempt: the call to the candidate's upstream provider."""
        callees = self._fleet.callees

        def attempt(candidate: Candidate, lease: Lease) -> Awaitable[T]:
            # A copy each time: a provider may adjust the body for its upstream, and the next
            # candidate (perhaps of another kind) must see the client's request as it came.
            sent = dict(body)
            model = candidate.model
            if model is None:
                return invoke(callees[candidate.member], ctx, sent, facts)
            sent["model"] = model
            return invoke(callees[candidate.member], ctx, sent, replace(facts, model=model))

        return attempt


def _embed(p: Provider, c: UpstreamCall, b: Json, f: RequestFacts) -> Awaitable[Answer]:
    return p.embed(c, b, f)


def _generate(operation: Operation) -> Invoke[Answer]:
    def invoke(p: Provider, c: UpstreamCall, b: Json, f: RequestFacts) -> Awaitable[Answer]:
        return p.generate(c, operation, b, f)

    return invoke


def _stream(operation: Operation) -> Invoke[ChunkStream]:
    def invoke(p: Provider, c: UpstreamCall, b: Json, f: RequestFacts) -> Awaitable[ChunkStream]:
        return p.stream(c, operation, b, f)

    return invoke


# Built once: a closure per request and operation would be work on every call.
_GENERATE = {operation: _generate(operation) for operation in Operation}
_STREAM = {operation: _stream(operation) for operation in Operation}
