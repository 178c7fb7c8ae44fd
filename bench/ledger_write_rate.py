"""The SQLite write rate the usage ledger sustains: records per second through `Ledger` into a
real SQLite file, at several batch sizes, plus how long one `admit` waits behind a batch.

    uv run python bench/ledger_write_rate.py [--records 200000] [--batches 100,1000,5000]
    uv run python bench/ledger_write_rate.py --records 20000 --rate 2000 --batches 250,1000

Each run writes into a fresh file in a temporary directory. Without `--rate` the records are
queued as fast as the loop can and the clock stops when `aclose()` has written the last one:
that is the sustained write rate. With `--rate N` records arrive at N per second, as from a
gateway serving N requests per second. Alongside, a probe task
times admissions (an rpm check, one transaction) on the same store, to show what the ledger's
batches cost the hot path that shares the store's one SQLite thread; `--batches 0,...` adds a
baseline row: the same pacing and probe without ledger writes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from oai_gateway.keys.ledger import Ledger
from oai_gateway.keys.records import KeyRecord, Limits, now_iso
from oai_gateway.keys.secrets import new_id
from oai_gateway.keys.store import Admission
from oai_gateway.keys.store_sqlite import SQLiteStore
from oai_gateway.keys.usage import UsageRecord

PROBE_LIMIT = 10_000  # bound on probe admissions per run


def _record(n: int) -> UsageRecord:
    return UsageRecord(
        key_id="abcdefghijkl",
        route="/{provider}/v1/chat/completions",
        provider="custom",
        model="gpt-test",
        status=200,
        stream=bool(n % 2),
        input_tokens=120,
        output_tokens=80,
        cached_tokens=0,
        cost_nanos=25_000,
        priced=True,
        duration_ms=12.5,
        request_id=f"req-{n}",
    )


async def _probe(store: SQLiteStore, key_id: str, done: asyncio.Event) -> list[float]:
    waits: list[float] = []
    while not done.is_set() and len(waits) < PROBE_LIMIT:
        started = time.perf_counter()
        await store.admit(key_id, Admission(request_id=uuid.uuid4().hex, rpm=10**9))
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(0.001)
    return waits


async def _run(path: Path, records: int, batch: int, rate: float | None) -> dict[str, float]:
    store = SQLiteStore(path)
    await store.start()
    key = KeyRecord(id=new_id(), secret_hash="00" * 32, created_at=now_iso(), limits=Limits(rpm=1))
    await store.create_key(key)
    # Batch 0 is the baseline: the same pacing and probe, no ledger writes.
    ledger = Ledger(store, capacity=records + 1, batch_size=max(batch, 1), interval_s=0.5)
    done = asyncio.Event()
    probe = asyncio.create_task(_probe(store, key.id, done))
    ledger.start()
    started = time.perf_counter()
    for n in range(records):
        if batch:
            ledger.record(_record(n))
        if rate is not None and n % 10 == 0:
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        elif n % max(batch, 100) == 0:
            await asyncio.sleep(0)  # let the flush task and the probe run, as requests would
    await ledger.aclose()
    elapsed = time.perf_counter() - started
    done.set()
    waits = await probe
    await store.aclose()
    return {
        "batch": batch,
        "records_per_s": records / elapsed,
        "admit_p50_ms": statistics.median(waits) * 1000 if waits else 0.0,
        "admit_p99_ms": _p99(waits) * 1000,
        "admit_max_ms": max(waits) * 1000 if waits else 0.0,
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99)] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batches", default="100,1000,5000")
    parser.add_argument("--rate", type=float, help="records per second (default: flat out)")
    args = parser.parse_args()
    print("| batch | records/s | admit p50 ms | admit p99 ms | admit max ms |")
    print("|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
            result = asyncio.run(_run(Path(folder) / "store.db", args.records, batch, args.rate))
        print(
            f"| {batch} | {result['records_per_s']:,.0f} | {result['admit_p50_ms']:.3f} "
            f"| {result['admit_p99_ms']:.2f} | {result['admit_max_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
