"""One contract, every backend: records, change notices and the limiter (SPEC §10)."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from msgspec.structs import replace

from oai_gateway.keys.records import Budget, Limits, now_iso, period_index
from oai_gateway.keys.store import (
    ALL_KEYS,
    KeyExistsError,
    KeyNotFoundError,
    Settlement,
)
from tests.keys.contract import admission, another, opened, record

pytestmark = pytest.mark.anyio


async def test_a_record_round_trips_unchanged(url: str) -> None:
    original = record(
        name="team a",
        expires_at="2027-01-01T00:00:00Z",
        providers=("custom",),
        models=("custom/gpt-test", "ollama"),
        limits=Limits(rpm=5, tpm=1000, max_parallel=2),
        budget=Budget(period="month", usd=12.5),
        metadata={"owner": "ops"},
    )
    async with opened(url) as store:
        await store.create_key(original)
        assert await store.get_key(original.id) == original
        assert await store.get_key("nosuchkey000") is None


async def test_an_id_is_created_once(url: str) -> None:
    async with opened(url) as store:
        first = record()
        await store.create_key(first)
        with pytest.raises(KeyExistsError):
            await store.create_key(replace(first, name="other"))
        assert await store.get_key(first.id) == first


async def test_put_replaces_only_existing_records(url: str) -> None:
    async with opened(url) as store:
        with pytest.raises(KeyNotFoundError):
            await store.put_key(record())
        kept = record(name="before")
        await store.create_key(kept)
        revoked = replace(kept, name="after", revoked_at=now_iso())
        await store.put_key(revoked)
        assert await store.get_key(kept.id) == revoked


async def test_keys_are_listed_newest_first_in_pages(url: str) -> None:
    stamps = ["2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-02-01T00:00:00Z"]
    async with opened(url) as store:
        made = [record(created_at=s) for s in stamps]
        twins = [record(created_at="2026-03-01T00:00:00Z") for _ in range(2)]
        for r in made + twins:
            await store.create_key(r)
        everything = await store.list_keys(100)
        expected = sorted(made + twins, key=lambda r: (r.created_at, r.id), reverse=True)
        assert [r.id for r in everything] == [r.id for r in expected]
        pages, after = [], None
        while page := await store.list_keys(2, after):
            pages.append([r.id for r in page])
            after = page[-1].id
        assert [i for p in pages for i in p] == [r.id for r in expected]
        assert all(len(p) <= 2 for p in pages)
        assert await store.list_keys(10, "nosuchkey000") == []


async def test_the_pepper_is_made_once_and_shared(url: str, backend: str) -> None:
    async with opened(url) as store:
        pepper = await store.pepper()
        assert len(bytes.fromhex(pepper)) == 32
        assert await store.pepper() == pepper
        if backend != "memory":
            async with opened(url) as other:
                assert await other.pepper() == pepper


async def test_a_change_reaches_other_processes_stores(url: str, backend: str) -> None:
    async with opened(url) as writer, another(url, backend, writer) as watcher:
        kept = record()
        await writer.create_key(kept)
        seen: asyncio.Queue[str] = asyncio.Queue()

        async def watch() -> None:
            async for key_id in watcher.changes():
                seen.put_nowait(key_id)

        task = asyncio.create_task(watch())
        try:
            await asyncio.sleep(0.3)  # let the watcher subscribe or read its first version
            while not seen.empty():
                seen.get_nowait()
            await writer.put_key(replace(kept, revoked_at=now_iso()))
            assert await asyncio.wait_for(seen.get(), 5) in (kept.id, ALL_KEYS)
        finally:
            task.cancel()


async def test_rpm_admits_that_many_then_says_when_to_retry(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        decisions = [await store.admit(key_id, admission(rpm=3)) for _ in range(4)]
        assert [d.refused for d in decisions] == [None, None, None, "requests"]
        assert [d.remaining_requests for d in decisions] == [2, 1, 0, 0]
        assert 0 < decisions[3].retry_after_s <= 61  # SQLite counts in slots of 1 s: up to 61
        assert 0 < decisions[0].reset_requests_s <= 60
        assert decisions[0].remaining_tokens is None


async def test_the_window_slides(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        first = await store.admit(key_id, admission(rpm=2, window_s=0.4))
        await asyncio.sleep(0.2)
        second = await store.admit(key_id, admission(rpm=2, window_s=0.4))
        third = await store.admit(key_id, admission(rpm=2, window_s=0.4))
        assert (first.refused, second.refused, third.refused) == (None, None, "requests")
        await asyncio.sleep(0.25)  # the first entry has left the window; the second has not
        fourth = await store.admit(key_id, admission(rpm=2, window_s=0.4))
        fifth = await store.admit(key_id, admission(rpm=2, window_s=0.4))
        assert (fourth.refused, fifth.refused) == (None, "requests")


async def test_an_entry_counts_for_at_least_the_whole_window(url: str) -> None:
    # Memory keeps an exact log; SQLite and Redis count in slots of 1/60 of the window, so an
    # entry there may stay up to one slot longer, never shorter.
    async with opened(url) as store:
        key_id = record().id
        started = time.time()
        assert (await store.admit(key_id, admission(rpm=1, window_s=0.3))).admitted
        for _ in range(200):  # bounded: the entry leaves after 0.3-0.305 s
            await asyncio.sleep(0.01)
            decision = await store.admit(key_id, admission(rpm=1, window_s=0.3))
            if decision.admitted:
                break
            assert 0 < decision.retry_after_s <= 0.3 * (1 + 1 / 60) + 0.001
        assert decision.admitted
        assert time.time() - started >= 0.3


async def test_tpm_reserves_before_and_reconciles_after(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        first = admission(tpm=100, tokens=70)
        assert (await store.admit(key_id, first)).remaining_tokens == 30
        refused = await store.admit(key_id, admission(tpm=100, tokens=40))
        assert refused.refused == "tokens"
        assert 0 < refused.retry_after_s <= 61
        # The first request used only 20 of its 70: the 50 left come back.
        await store.settle(key_id, Settlement(first.request_id, tokens_delta=-50))
        again = await store.admit(key_id, admission(tpm=100, tokens=40))
        assert (again.refused, again.remaining_tokens) == (None, 40)


async def test_a_request_bigger_than_tpm_runs_alone(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        assert (await store.admit(key_id, admission(tpm=100, tokens=500))).admitted
        assert (await store.admit(key_id, admission(tpm=100, tokens=1))).refused == "tokens"


async def test_leases_bound_parallel_requests_and_expire(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        held = [admission(max_parallel=2) for _ in range(2)]
        for a in held:
            assert (await store.admit(key_id, a)).admitted
        assert (await store.admit(key_id, admission(max_parallel=2))).refused == "parallel"
        await store.settle(key_id, Settlement(held[0].request_id, release_lease=True))
        assert (await store.admit(key_id, admission(max_parallel=2, lease_ttl_s=0.2))).admitted
        assert (await store.admit(key_id, admission(max_parallel=2))).refused == "parallel"
        await asyncio.sleep(0.3)  # the short lease was never released: its holder "died"
        assert (await store.admit(key_id, admission(max_parallel=2))).admitted


async def test_a_budget_admits_until_spent_plus_reserved_reaches_it(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        budget = {"budget_limit": 100.0, "budget_period": "day"}
        first = admission(**budget, budget_cost=150.0)
        decision = await store.admit(key_id, first)
        assert decision.admitted
        assert decision.period == period_index("day", __import__("time").time())
        assert (await store.admit(key_id, admission(**budget, budget_cost=1.0))).refused == (
            "budget"
        )
        # Real cost 50: under the budget again. A settlement for another period changes nothing.
        stale = Settlement(first.request_id, budget_delta=-1000.0, period=decision.period - 1)
        await store.settle(key_id, stale)
        assert not (await store.admit(key_id, admission(**budget))).admitted
        await store.settle(
            key_id, Settlement(first.request_id, budget_delta=-100.0, period=decision.period)
        )
        assert (await store.admit(key_id, admission(**budget, budget_cost=10.0))).admitted


async def test_usd_budgets_count_fractions(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        spend = {"budget_limit": 0.3, "budget_period": "total", "budget_cost": 0.1}
        results = [(await store.admit(key_id, admission(**spend))).admitted for _ in range(4)]
        assert results == [True, True, True, False]


async def test_limits_of_one_key_leave_others_alone(url: str) -> None:
    async with opened(url) as store:
        one, two = record().id, record().id
        assert (await store.admit(one, admission(rpm=1))).admitted
        assert (await store.admit(two, admission(rpm=1))).admitted
        assert not (await store.admit(one, admission(rpm=1))).admitted


async def test_simultaneous_admissions_admit_exactly_the_limit(url: str, backend: str) -> None:
    async with opened(url) as store, another(url, backend, store) as other:
        stores = [store, other]
        key_id = record().id
        decisions = await asyncio.gather(
            *(stores[i % len(stores)].admit(key_id, admission(rpm=1)) for i in range(20))
        )
        assert sum(d.admitted for d in decisions) == 1
        budget = {"budget_limit": 1.0, "budget_period": "total", "budget_cost": 1.0}
        decisions = await asyncio.gather(
            *(stores[i % len(stores)].admit(key_id, admission(**budget)) for i in range(20))
        )
        assert sum(d.admitted for d in decisions) == 1


def test_budgets_have_exactly_one_unit() -> None:
    decode = msgspec.json.Decoder(Budget).decode
    assert decode(b'{"period":"week","tokens":5}').tokens == 5
    for bad in (b'{"period":"week"}', b'{"period":"week","usd":1,"tokens":2}'):
        with pytest.raises(msgspec.ValidationError):
            decode(bad)


async def test_a_refreshed_lease_outlives_its_first_expiry(url: str) -> None:
    async with opened(url) as store:
        key_id = record().id
        held = admission(max_parallel=1, lease_ttl_s=0.3)
        assert (await store.admit(key_id, held)).admitted
        await store.refresh_leases(key_id, [held.request_id, "never-admitted"], 30.0)
        await asyncio.sleep(0.4)  # past the first expiry: the refresh keeps the slot taken
        assert (await store.admit(key_id, admission(max_parallel=1))).refused == "parallel"
        await store.settle(key_id, Settlement(held.request_id, release_lease=True))
        # A refresh after the release does not bring the lease back.
        await store.refresh_leases(key_id, [held.request_id], 30.0)
        assert (await store.admit(key_id, admission(max_parallel=1))).admitted
