"""A routed provider over several real loopback upstreams with per-instance faults (SPEC §11).
Nothing here is timed: the breaker runs on a hand clock, shares are counted at the upstreams."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oai_gateway.errors import GatewayError
from oai_gateway.providers.base import ChunkStream, Operation
from oai_gateway.wire.requests import RequestFacts
from tests.routing.rig import BODY, Rig, chat, context, providers_toml, served, upstreams
from tests.support.fake_upstreams.base import Fault, openai_error_body


def test_weighted_shares_follow_the_weights_over_400_requests(tmp_path: Path) -> None:
    with upstreams(3) as servers:
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers], weights=[5, 3, 2]))

        async def work(rig: Rig) -> None:
            for _ in range(400):
                answer, _ = await chat(rig.local)
                assert isinstance(answer, dict)

        rig.run(work)
        counts = served(servers)
    assert sum(counts) == 400
    for count, weight in zip(counts, [5, 3, 2], strict=True):
        assert abs(count - 40 * weight) <= 4 * weight, counts  # within ±10 % of the share


def test_least_in_flight_avoids_the_upstream_holding_a_stream(tmp_path: Path) -> None:
    with upstreams(2, stream_chunks=4) as servers:
        extra = 'strategy = "least_in_flight"\n'
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers], extra))

        async def work(rig: Rig) -> tuple[str | None, list[str | None]]:
            ctx, request = context()
            facts = RequestFacts("gpt-test", stream=True)
            body = {**BODY, "stream": True}
            held: ChunkStream = await rig.local.stream(ctx, Operation.CHAT, body, facts)
            busy = request.upstream
            others = []
            for _ in range(12):
                _, after = await chat(rig.local)
                others.append(after.upstream)
            await held.aclose()
            return busy, others

        busy, others = rig.run(work)
    assert busy is not None
    assert busy not in others
    assert len(set(others)) == 1


FAULTS = {
    "refused": None,
    "reset": Fault("reset_before_headers"),
    "503": Fault("status", status=503, body=openai_error_body("busy", "server_error")),
    "429": Fault("status", status=429, body=openai_error_body("slow down", "requests")),
    "ttft": Fault("delay_headers", delay_s=3.0),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_failed_upstream_is_failed_over_to_the_other(tmp_path: Path, fault: str) -> None:
    with upstreams(2) as servers:
        broken, healthy = servers
        rig = Rig(
            tmp_path,
            providers_toml([broken.base_url, healthy.base_url], "ttft_timeout_s = 0.3\n"),
        )
        if fault == "refused":
            broken.stop()
        else:
            broken.fault = FAULTS[fault]

        async def work(rig: Rig) -> list[tuple[object, int, str | None]]:
            results: list[tuple[object, int, str | None]] = []
            for _ in range(4):
                answer, request = await chat(rig.local)
                results.append((answer, request.attempts, request.upstream))
            return results

        results = rig.run(work)
    assert all(isinstance(answer, dict) for answer, _, _ in results)
    assert {upstream for _, _, upstream in results} == {"local/1"}
    # Every request that tried the broken upstream first made exactly one more attempt.
    assert sorted({attempts for _, attempts, _ in results}) in ([1, 2], [2])
    failed = sum(attempts - 1 for _, attempts, _ in results)
    assert served([healthy]) == [4]
    if fault != "refused":
        assert served([broken]) == [failed]
    assert failed >= 1


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 422])
def test_client_errors_are_answered_at_once(tmp_path: Path, status: int) -> None:
    with upstreams(2) as servers:
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers]))
        for server in servers:
            server.fault = Fault("status", status=status, body=openai_error_body("no"))

        async def work(rig: Rig) -> list[object]:
            return [(await chat(rig.local))[0] for _ in range(6)]

        answers = rig.run(work)
        counts = served(servers)
    assert all(isinstance(a, GatewayError) for a in answers)
    assert sum(counts) == 6  # one upstream request per client request
    assert all(
        a.headers["x-gateway-attempts"] == "1" for a in answers if isinstance(a, GatewayError)
    )


def test_nothing_is_retried_after_the_first_event(tmp_path: Path) -> None:
    with upstreams(2, stream_chunks=4) as servers:
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers]))
        for server in servers:
            server.fault = Fault("stream_break", after_chunks=1)

        async def work(rig: Rig) -> tuple[list[bytes], BaseException | None, int]:
            ctx, request = context()
            facts = RequestFacts("gpt-test", stream=True)
            stream = await rig.local.stream(ctx, Operation.CHAT, {**BODY, "stream": True}, facts)
            pieces: list[bytes] = []
            error = None
            try:
                async for piece in stream:
                    pieces.append(piece)
            except GatewayError as exc:
                error = exc
            finally:
                await stream.aclose()
            return pieces, error, request.attempts

        pieces, error, attempts = rig.run(work)
        counts = served(servers)
    assert len(pieces) == 1
    assert pieces[0].startswith(b"data: ")
    assert isinstance(error, GatewayError)
    assert attempts == 1
    assert sorted(counts) == [0, 1]


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_attempts_never_exceed_max_attempts_counted_at_the_upstreams(
    tmp_path: Path, budget: int
) -> None:
    with upstreams(4) as servers:
        local = [s.base_url for s in servers[:3]]
        text = providers_toml(local, f"max_attempts = {budget}\n")
        text += '[providers.local.fallbacks]\n"gpt-test" = ["cloud/gpt-test"]\n'
        text += f'[providers.cloud]\nkind = "openai"\nbase_url = "{servers[3].base_url}/v1"\n'
        rig = Rig(tmp_path, text)
        for server in servers:
            server.fault = Fault(
                "status", status=502, body=openai_error_body("down", "server_error")
            )

        async def work(rig: Rig) -> GatewayError:
            answer, _ = await chat(rig.local)
            assert isinstance(answer, GatewayError)
            return answer

        error = rig.run(work)
        counts = served(servers)
    assert sum(counts) == budget
    assert max(counts) == 1
    assert error.headers["x-gateway-attempts"] == str(budget)
    assert error.headers["x-should-retry"] == "false"
    assert error.http_status == 502


def test_a_fallback_is_called_with_its_own_model(tmp_path: Path) -> None:
    with upstreams(3) as servers:
        text = providers_toml([s.base_url for s in servers[:2]])
        text += '[providers.local.fallbacks]\n"gpt-test" = ["cloud/llama3.2:1b"]\n'
        text += f'[providers.cloud]\nkind = "openai"\nbase_url = "{servers[2].base_url}/v1"\n'
        rig = Rig(tmp_path, text)
        servers[0].stop()
        servers[1].fault = Fault("status", status=503)

        answer, request = rig.run(lambda rig: chat(rig.local))
    assert isinstance(answer, dict)
    assert request.upstream == "cloud/0"
    assert request.attempts == 3
    assert servers[2].requests[-1].json["model"] == "llama3.2:1b"
    assert answer["model"] == "llama3.2:1b"


def test_a_breaker_opens_probes_once_after_the_cooldown_and_closes(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        broken, healthy = servers
        rig = Rig(tmp_path, providers_toml([broken.base_url, healthy.base_url]))
        broken.fault = Fault("status", status=500)

        async def work(rig: Rig) -> None:
            while served([broken]) != [5]:  # every request tried both at most: bounded
                answer, _ = await chat(rig.local)
                assert isinstance(answer, dict)
                assert served([healthy])[0] <= 10
            for _ in range(10):  # open: skipped
                await chat(rig.local)
            assert served([broken]) == [5]
            rig.clock.advance(5)
            # The probe answers slowly: the requests meanwhile must not reach that upstream.
            broken.fault = Fault("delay_headers", delay_s=0.5)
            answers = await asyncio.gather(*(chat(rig.local) for _ in range(6)))
            assert all(isinstance(answer, dict) for answer, _ in answers)
            assert served([broken]) == [6]  # exactly one probe
            broken.fault = None
            for _ in range(10):  # closed by the probe's success: weighted again
                await chat(rig.local)
            assert served([broken]) == [11]

        rig.run(work)
    assert rig.outcomes.count(("local/0", "http_500")) == 5


def test_a_failed_probe_doubles_the_cooldown(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        broken, healthy = servers
        rig = Rig(tmp_path, providers_toml([broken.base_url, healthy.base_url]))
        broken.fault = Fault("status", status=503)

        async def work(rig: Rig) -> None:
            while served([broken]) != [5]:
                await chat(rig.local)
            rig.clock.advance(5)
            await chat(rig.local)
            assert served([broken]) == [6]  # the probe, failed
            rig.clock.advance(9.9)
            for _ in range(5):
                await chat(rig.local)
            assert served([broken]) == [6]
            rig.clock.advance(0.1)
            await chat(rig.local)
            assert served([broken]) == [7]

        rig.run(work)


def test_with_every_breaker_open_the_soonest_is_tried_anyway(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers], "max_attempts = 1\n"))
        for server in servers:
            server.fault = Fault("status", status=503)

        async def work(rig: Rig) -> None:
            while served([servers[0]]) != [5]:
                await chat(rig.local)
            rig.clock.advance(1)
            while served([servers[1]]) != [5]:
                await chat(rig.local)
            before = served(servers)
            servers[0].fault = None
            answer, request = await chat(rig.local)
            assert isinstance(answer, dict)  # not turned away: local/0's cooldown ends first
            assert request.upstream == "local/0"
            assert served(servers) == [before[0] + 1, before[1]]

        rig.run(work)


def test_retry_after_skips_the_upstream_until_then(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        limited, other = servers
        rig = Rig(tmp_path, providers_toml([limited.base_url, other.base_url]))
        limited.fault = Fault("status", status=429, headers={"retry-after": "30"})

        async def work(rig: Rig) -> None:
            while served([limited]) != [1]:
                await chat(rig.local)
            limited.fault = None
            for _ in range(10):
                await chat(rig.local)
            assert served([limited]) == [1]
            rig.clock.advance(30)
            for _ in range(10):
                await chat(rig.local)
            assert served([limited])[0] > 1

        rig.run(work)


def test_the_model_list_is_the_union_of_the_upstreams(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        servers[1].models.append("only-on-one")
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers]))

        async def work(rig: Rig) -> list[str]:
            ctx, _ = context()
            return [m["id"] for m in await rig.local.list_models(ctx)]

        ids = rig.run(work)
    assert "only-on-one" in ids
    assert len(ids) == len(set(ids))


STREAM_FAULTS = {
    "silent": Fault("stream_stall", after_chunks=0, delay_s=3.0),
    "cut": Fault("stream_break", after_chunks=0),
}


@pytest.mark.parametrize("fault", STREAM_FAULTS, ids=list(STREAM_FAULTS))
def test_a_stream_without_a_first_event_fails_over(tmp_path: Path, fault: str) -> None:
    with upstreams(2, stream_chunks=3) as servers:
        broken, healthy = servers
        text = providers_toml([broken.base_url, healthy.base_url], "ttft_timeout_s = 0.3\n")
        rig = Rig(tmp_path, text)
        broken.fault = STREAM_FAULTS[fault]

        async def work(rig: Rig) -> list[tuple[bytes, int, str | None]]:
            results = []
            for _ in range(3):
                ctx, request = context()
                facts = RequestFacts("gpt-test", stream=True)
                stream = await rig.local.stream(
                    ctx, Operation.CHAT, {**BODY, "stream": True}, facts
                )
                try:
                    text = b"".join([piece async for piece in stream])
                finally:
                    await stream.aclose()
                results.append((text, request.attempts, request.upstream))
            return results

        results = rig.run(work)
    assert all(text.endswith(b"data: [DONE]\n\n") for text, _, _ in results)
    assert {upstream for _, _, upstream in results} == {"local/1"}
    assert 2 in {attempts for _, attempts, _ in results}
    assert served([healthy]) == [3]


def test_a_stream_skips_a_paused_upstream(tmp_path: Path) -> None:
    with upstreams(2, stream_chunks=2) as servers:
        limited, other = servers
        rig = Rig(tmp_path, providers_toml([limited.base_url, other.base_url]))
        limited.fault = Fault("status", status=429, headers={"retry-after": "30"})

        async def work(rig: Rig) -> list[tuple[int, str | None]]:
            while served([limited]) != [1]:
                await chat(rig.local)
            limited.fault = None
            results = []
            for _ in range(4):
                ctx, request = context()
                facts = RequestFacts("gpt-test", stream=True)
                body = {**BODY, "stream": True}
                stream = await rig.local.stream(ctx, Operation.CHAT, body, facts)
                try:
                    assert b"".join([piece async for piece in stream]).endswith(b"[DONE]\n\n")
                finally:
                    await stream.aclose()
                results.append((request.attempts, request.upstream))
            return results

        results = rig.run(work)
        assert served([limited]) == [1]
    assert results == [(1, "local/1")] * 4


def test_the_model_list_fails_only_when_every_upstream_fails(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        servers[0].models.clear()
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers]))
        servers[1].stop()

        async def work(rig: Rig) -> tuple[list[str], GatewayError | None, GatewayError | None]:
            ctx, _ = context()
            ids = [m["id"] for m in await rig.local.list_models(ctx)]  # one answered: empty
            missing = None
            try:
                await rig.local.retrieve_model(ctx, "gpt-test")
            except GatewayError as exc:
                missing = exc
            servers[0].stop()
            down = None
            try:
                await rig.local.list_models(ctx)
            except GatewayError as exc:
                down = exc
            return ids, missing, down

        ids, missing, down = rig.run(work)
    assert ids == []
    assert missing is not None
    assert missing.http_status == 404
    assert missing.code == "model_not_found"
    assert down is not None
    assert down.http_status == 502


def test_embeddings_fail_over_too(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        servers[0].fault = Fault("status", status=503)
        rig = Rig(tmp_path, providers_toml([s.base_url for s in servers]))

        async def work(rig: Rig) -> list[tuple[int, str | None]]:
            results = []
            for _ in range(4):
                ctx, request = context()
                body = {"model": "gpt-test", "input": ["a", "b"]}
                answer = await rig.local.embed(ctx, body, RequestFacts("gpt-test", input_count=2))
                assert b'"embedding"' in answer.body
                results.append((request.attempts, request.upstream))
            return results

        results = rig.run(work)
    assert {upstream for _, upstream in results} == {"local/1"}
    assert served(servers, "/v1/embeddings")[1] == 4
