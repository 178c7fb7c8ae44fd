"""Routed providers over real loopback upstreams, driven without the HTTP front (the gateway
tests drive the same through the routes)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from oai_gateway.config.providers_file import read_providers_file
from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import GatewayError
from oai_gateway.observability.context import RequestContext
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers.base import Operation, Provider, UpstreamCall
from oai_gateway.providers.provider import DialectProvider
from oai_gateway.providers.registry import KINDS
from oai_gateway.routing.fleet import Fleet, build_fleet
from oai_gateway.routing.provider import RoutedProvider
from oai_gateway.wire.requests import RequestFacts
from tests.routing.clock import FakeClock
from tests.support.fake_upstreams.openai_compat import OpenAICompatUpstream

T = TypeVar("T")
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def member(spec: ProviderSpec) -> Provider:
    provider = DialectProvider(spec, Redactor([]), KINDS[spec.kind])
    provider.transport.client.connect_retries = 0
    return provider


@contextmanager
def upstreams(count: int, **options: Any) -> Iterator[list[OpenAICompatUpstream]]:
    with ExitStack() as stack:
        yield [stack.enter_context(OpenAICompatUpstream(**options)) for _ in range(count)]


def providers_toml(urls: list[str], extra: str = "", weights: list[int] | None = None) -> str:
    lines = ['[providers.local]\nkind = "openai"\n', extra]
    for i, url in enumerate(urls):
        weight = weights[i] if weights else 1
        lines.append(f'[[providers.local.upstreams]]\nbase_url = "{url}/v1"\nweight = {weight}\n')
    return "".join(lines)


class Rig:
    def __init__(
        self,
        tmp_path: Path,
        text: str,
        clock: FakeClock | None = None,
        specs: Sequence[ProviderSpec] = (),
    ) -> None:
        if not specs:
            path = tmp_path / "providers.toml"
            path.write_text(text, encoding="utf-8")
            specs, problems = read_providers_file(path, {}, 30.0)
            assert not problems, problems
        self.clock = clock or FakeClock()
        self.outcomes: list[tuple[str, str]] = []
        self.fleet: Fleet
        # Seeded: the strategies' random starts and tie breaks repeat from run to run.
        self.fleet, self.routed = build_fleet(
            specs, member, clock=self.clock, rng=random.Random(20261202)
        )
        self.fleet.observe = lambda m, outcome: self.outcomes.append((m.label, outcome))

    @property
    def local(self) -> RoutedProvider:
        return self.routed["local"]

    def run(self, work: Callable[[Rig], Awaitable[T]]) -> T:
        async def go() -> T:
            await self.fleet.start()
            try:
                return await work(self)
            finally:
                await self.fleet.aclose()

        return asyncio.run(go())


def context() -> tuple[UpstreamCall, RequestContext]:
    request = RequestContext("req_routing_test")
    return UpstreamCall(request.request_id, time.monotonic() + 30, request), request


async def chat(provider: RoutedProvider) -> tuple[dict[str, Any] | GatewayError, RequestContext]:
    ctx, request = context()
    try:
        answer = await provider.generate(ctx, Operation.CHAT, dict(BODY), RequestFacts("gpt-test"))
    except GatewayError as exc:
        return exc, request
    return orjson.loads(answer.body), request


def served(servers: list[OpenAICompatUpstream], path: str = CHAT) -> list[int]:
    return [sum(1 for r in s.requests if r.path == path) for s in servers]
