"""The attempt loop: one budget, failover order, what is retried and what is not (SPEC §11)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from oai_gateway.errors import GatewayError, InvalidRequestError, UpstreamError
from oai_gateway.routing.attempts import AttemptPlan, Candidate, Report, Target, run_attempts
from oai_gateway.routing.failures import retry_after_s
from oai_gateway.routing.members import Lease
from tests.routing.clock import FakeClock
from tests.routing.members import target


def refused() -> GatewayError:
    error = UpstreamError("refused")
    error.failure = "refused"
    return error


def status(code: int, headers: dict[str, str] | None = None) -> GatewayError:
    error = GatewayError(f"HTTP {code}", status=502, headers=headers)
    error.upstream_status = code
    return error


class Recorder:
    """Plays each candidate's scripted answer and remembers who was called."""

    def __init__(self, answers: dict[str, GatewayError | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str | None]] = []

    async def __call__(self, candidate: Candidate, lease: Lease) -> str:
        label = candidate.member.label
        self.calls.append((label, candidate.model))
        assert lease.member.in_flight == 1
        error = self.answers.get(label)
        if error is not None:
            raise error
        return label


def run(plan: AttemptPlan, recorder: Recorder, ttft: float | None = None) -> tuple[str, Report]:
    report = Report()

    async def go() -> str:
        answer, lease = await run_attempts(plan, recorder, report=report, ttft_timeout_s=ttft)
        lease.release()
        return answer

    return asyncio.run(go()), report


def fail(plan: AttemptPlan, recorder: Recorder) -> tuple[GatewayError, Report]:
    with pytest.raises(GatewayError) as caught:
        run(plan, recorder)
    return caught.value, Report(
        int(caught.value.headers["x-gateway-attempts"]),
        caught.value.headers.get("x-gateway-upstream"),
        "x-should-retry" in caught.value.headers,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.mark.parametrize(
    "error",
    [refused(), status(429), status(500), status(502), status(503), status(504)],
    ids=["refused", "429", "500", "502", "503", "504"],
)
def test_a_failed_attempt_moves_to_the_other_upstream(
    clock: FakeClock, error: GatewayError
) -> None:
    local = target("local", [1, 1], clock)
    local.members[0].score = local.members[1].score = 0.0  # member 0 first
    recorder = Recorder({"local/0": error})
    answer, report = run(AttemptPlan(local), recorder)
    assert answer == "local/1"
    assert [c[0] for c in recorder.calls] == ["local/0", "local/1"]
    assert report.attempts == 2
    assert report.upstream == "local/1"


@pytest.mark.parametrize("code", [400, 401, 404, 409, 413, 422, 501])
def test_other_answers_are_the_clients_and_are_never_retried(clock: FakeClock, code: int) -> None:
    local = target("local", [1, 1], clock)
    recorder = Recorder({m.label: status(code) for m in local.members})
    error, report = fail(AttemptPlan(local), recorder)
    assert len(recorder.calls) == 1
    assert report.attempts == 1
    assert not report.budget_spent
    assert error.upstream_status == code


def test_an_error_without_a_failure_kind_is_not_retried(clock: FakeClock) -> None:
    local = target("local", [1, 1], clock)
    recorder = Recorder({m.label: InvalidRequestError("bad") for m in local.members})
    fail(AttemptPlan(local), recorder)
    assert len(recorder.calls) == 1


def test_fallbacks_come_after_the_upstreams_in_order_with_their_own_model(
    clock: FakeClock,
) -> None:
    local = target("local", [1, 1], clock)
    cloud = target("cloud", [1], clock)
    other = target("other", [1], clock)
    recorder = Recorder({"local/0": status(503), "local/1": refused(), "cloud/0": status(500)})
    plan = AttemptPlan(local, [(cloud, "big"), (other, "small")], max_attempts=4)
    answer, report = run(plan, recorder)
    assert answer == "other/0"
    assert recorder.calls[2:] == [("cloud/0", "big"), ("other/0", "small")]
    assert {c[0] for c in recorder.calls[:2]} == {"local/0", "local/1"}
    assert report.attempts == 4


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_attempts_never_exceed_the_budget(clock: FakeClock, budget: int) -> None:
    local = target("local", [1, 1, 1], clock)
    cloud = target("cloud", [1, 1], clock)
    recorder = Recorder({m.label: status(503) for m in (*local.members, *cloud.members)})
    error, report = fail(AttemptPlan(local, [(cloud, "m")], max_attempts=budget), recorder)
    assert len(recorder.calls) == budget == report.attempts
    assert error.headers["x-should-retry"] == "false"


def test_every_candidate_tried_once_before_the_budget_ends_leaves_the_sdk_its_retry(
    clock: FakeClock,
) -> None:
    local = target("local", [1, 1], clock)
    recorder = Recorder({m.label: status(503) for m in local.members})
    error, report = fail(AttemptPlan(local, max_attempts=5), recorder)
    assert len(recorder.calls) == 2
    assert report.attempts == 2
    assert "x-should-retry" not in error.headers
    assert error.upstream_status == 503  # the last attempt's error


def test_a_429_with_retry_after_skips_that_upstream_until_then(clock: FakeClock) -> None:
    local = target("local", [1, 1], clock)
    local.members[0].score = local.members[1].score = 0.0
    recorder = Recorder({"local/0": status(429, {"retry-after": "20"})})
    run(AttemptPlan(local), recorder)
    recorder.calls.clear()
    for _ in range(6):
        run(AttemptPlan(local), recorder)
    assert {c[0] for c in recorder.calls} == {"local/1"}
    clock.advance(20)
    recorder.answers.clear()
    for _ in range(6):
        run(AttemptPlan(local), recorder)
    assert {c[0] for c in recorder.calls[6:]} == {"local/0", "local/1"}


def _open(local: Target, index: int) -> None:
    member = local.members[index]
    for _ in range(5):
        lease = member.lease()
        lease.failed()
        lease.release()


def test_an_open_breaker_is_skipped_then_probed_once_then_closed(clock: FakeClock) -> None:
    local = target("local", [1, 1], clock)
    _open(local, 0)
    recorder = Recorder({})
    for _ in range(8):
        run(AttemptPlan(local), recorder)
    assert {c[0] for c in recorder.calls} == {"local/1"}
    clock.advance(5)
    recorder.calls.clear()

    async def concurrent() -> list[str]:
        gate = asyncio.Event()

        async def slow(candidate: Candidate, lease: Lease) -> str:
            recorder.calls.append((candidate.member.label, None))
            await gate.wait()
            return candidate.member.label

        async def one() -> str:
            answer, lease = await run_attempts(AttemptPlan(local), slow, report=Report())
            lease.release()
            return answer

        tasks = [asyncio.create_task(one()) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    asyncio.run(concurrent())
    assert [c[0] for c in recorder.calls].count("local/0") == 1  # exactly one probe
    recorder.calls.clear()
    for _ in range(8):
        run(AttemptPlan(local), recorder)
    assert {c[0] for c in recorder.calls} == {"local/0", "local/1"}  # closed again


def test_when_every_breaker_is_open_the_soonest_is_tried_anyway(clock: FakeClock) -> None:
    local = target("local", [1, 1, 1], clock)
    _open(local, 2)
    clock.advance(1)
    _open(local, 0)
    clock.advance(1)
    _open(local, 1)
    recorder = Recorder({})
    answer, report = run(AttemptPlan(local), recorder)
    assert answer == "local/2"
    assert report.attempts == 1


def test_a_ttft_timeout_is_a_failed_attempt(clock: FakeClock) -> None:
    local = target("local", [1, 1], clock)
    local.members[0].score = local.members[1].score = 0.0
    calls: list[str] = []

    async def attempt(candidate: Candidate, lease: Lease) -> str:
        calls.append(candidate.member.label)
        if candidate.member.index == 0:
            await asyncio.Event().wait()  # never answers
        return candidate.member.label

    async def go() -> str:
        answer, lease = await run_attempts(
            AttemptPlan(local), attempt, report=Report(), ttft_timeout_s=0.01
        )
        lease.release()
        return answer

    assert asyncio.run(go()) == "local/1"
    assert calls == ["local/0", "local/1"]
    assert local.members[0].in_flight == 0


def test_a_cancelled_attempt_releases_its_lease_and_probe(clock: FakeClock) -> None:
    local = target("local", [1], clock)
    _open(local, 0)
    clock.advance(5)

    async def attempt(candidate: Candidate, lease: Lease) -> str:
        raise asyncio.CancelledError

    async def go() -> None:
        await run_attempts(AttemptPlan(local), attempt, report=Report())

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(go())
    member = local.members[0]
    assert member.in_flight == 0
    assert member.breaker.admits()


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "tomorrow"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = formatdate(time.time() + 60, usegmt=True)
    wait = retry_after_s({"retry-after": when})
    assert wait is not None
    assert 55 <= wait <= 60
    assert retry_after_s({"retry-after": formatdate(time.time() - 60, usegmt=True)}) == 0.0
