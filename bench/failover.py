"""Several upstreams (SPEC §11): what routing costs, and how a failover looks to clients.

    uv run python bench/failover.py [--rounds 5] [--seconds 8] [--quick]

`overhead`: one gateway serving two providers side by side, `one` (a single base_url, §4.2a)
and `two` (two upstreams, weighted, breakers on). Both of `two`'s upstreams are the same
`bench/upstream.py` process (two entries, two pools), so the difference is the routing layer's
alone, not a second upstream process competing for the upstream core. wrk alternates between
the two in paired rounds (c=1 p50 latency, c=64 requests/s, and the gateway's CPU per request
from /proc), so machine drift cancels; the table gives the medians and the differences.
`failover` then uses a second upstream process for `two`'s second entry.

`failover`: the gateway's `two` provider under c=16 non-streaming load from a small aiohttp
client; after a third of the run one upstream is killed (SIGKILL, so in-flight requests are cut).
Reported: client-visible errors before and after the kill, the time from the kill to the last
error (0 when there was none), and how many requests needed a second attempt.

Pins the gateway to core 0 and the upstreams and load drivers to core 1, like `bench/run.py`.
Only 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    CHAT,
    KEY,
    Process,
    WrkResult,
    _wait_ready,
    free_port,
    pinned,
    start_upstream,
    wrk,
)

PROVIDERS = """
[providers.one]
kind = "openai"
base_url = "{a}"

[providers.two]
kind = "openai"
[[providers.two.upstreams]]
base_url = "{a}"
[[providers.two.upstreams]]
base_url = "{a}"

[providers.failover]
kind = "openai"
[[providers.failover.upstreams]]
base_url = "{a}"
[[providers.failover.upstreams]]
base_url = "{b}"
"""


@dataclass
class Gateway:
    process: Process
    url: str
    providers_file: Path


def start_gateway(upstream_a: str, upstream_b: str, directory: Path) -> Gateway:
    providers = directory / "providers.toml"
    providers.write_text(PROVIDERS.format(a=upstream_a, b=upstream_b), encoding="utf-8")
    port = free_port()
    env = {
        **os.environ,
        "ALLOWED_API_KEYS": KEY,
        "PROVIDERS_FILE": str(providers),
        "LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    process = Process(pinned(0, argv), env)
    url = f"http://127.0.0.1:{port}"
    try:
        for name in ("one", "two", "failover"):
            asyncio.run(_wait_ready(f"{url}/{name}/v1/chat/completions", 20, CHAT, process=process))
    except BaseException:
        process.stop()
        raise
    return Gateway(process, url, providers)


def _cpu_us_per_request(gateway: Gateway, run: Callable[[], WrkResult]) -> tuple[WrkResult, float]:
    before = gateway.process.cpu_s()
    result = run()
    return result, (gateway.process.cpu_s() - before) / max(result.requests, 1) * 1e6


def overhead(gateway: Gateway, rounds: int, seconds: int) -> list[str]:
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for round_ in range(rounds):
        for name in ("one", "two") if round_ % 2 == 0 else ("two", "one"):
            url = f"{gateway.url}/{name}/v1/chat/completions"
            single, _ = _cpu_us_per_request(gateway, partial(wrk, url, 1, seconds, CHAT))
            many, cpu = _cpu_us_per_request(gateway, partial(wrk, url, 64, seconds, CHAT))
            add(f"{name} c=1 p50 ms", single.p50_ms)
            add(f"{name} c=64 req/s", many.requests_per_s)
            add(f"{name} c=64 cpu us", cpu)
    m = {key: statistics.median(values) for key, values in samples.items()}
    added_us = (m["two c=1 p50 ms"] - m["one c=1 p50 ms"]) * 1000
    return [
        f"medians of {rounds} paired rounds of {seconds} s each",
        "",
        "| scenario | one upstream | two upstreams, breakers on | difference |",
        "|---|---|---|---|",
        f"| chat c=1 p50 latency (ms) | {m['one c=1 p50 ms']:.3f} | {m['two c=1 p50 ms']:.3f} "
        f"| {added_us:+.0f} µs |",
        f"| chat c=64 requests/s | {m['one c=64 req/s']:,.0f} | {m['two c=64 req/s']:,.0f} "
        f"| {m['two c=64 req/s'] / m['one c=64 req/s']:.3f}x |",
        f"| chat c=64 gateway CPU per request (µs) | {m['one c=64 cpu us']:.0f} | "
        f"{m['two c=64 cpu us']:.0f} | {m['two c=64 cpu us'] - m['one c=64 cpu us']:+.0f} µs |",
    ]


@dataclass
class Outcome:
    ended: float
    status: int
    attempts: int


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    killed_at: float | None = None


async def _client(session: aiohttp.ClientSession, url: str, until: float, load: Load) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    while time.perf_counter() < until:
        try:
            async with session.post(url, json=CHAT, headers=headers) as reply:
                await reply.read()
                attempts = int(reply.headers.get("x-gateway-attempts", "0"))
                load.outcomes.append(Outcome(time.perf_counter(), reply.status, attempts))
        except aiohttp.ClientError:
            load.outcomes.append(Outcome(time.perf_counter(), 0, 0))


async def _load(url: str, seconds: float, victim: Process, concurrency: int) -> Load:
    load = Load()
    started = time.perf_counter()
    until = started + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [
            asyncio.create_task(_client(session, url, until, load)) for _ in range(concurrency)
        ]
        await asyncio.sleep(seconds / 3)
        victim.popen.send_signal(signal.SIGKILL)
        load.killed_at = time.perf_counter()
        await asyncio.gather(*clients)
    return load


def failover(gateway: Gateway, victim: Process, seconds: float, concurrency: int) -> list[str]:
    load = asyncio.run(
        _load(f"{gateway.url}/failover/v1/chat/completions", seconds, victim, concurrency)
    )
    killed = load.killed_at or 0.0
    before = [o for o in load.outcomes if o.ended < killed]
    after = [o for o in load.outcomes if o.ended >= killed]
    errors_before = sum(o.status != 200 for o in before)
    errors_after = [o for o in after if o.status != 200]
    last_error_ms = (max(o.ended for o in errors_after) - killed) * 1000 if errors_after else 0.0
    attempts = Counter(o.attempts for o in after)
    return [
        f"| c={concurrency}, {seconds:g} s, one of two upstreams killed at {seconds / 3:g} s | |",
        "|---|---|",
        f"| requests before the kill / errors | {len(before):,} / {errors_before} |",
        f"| requests after the kill / client-visible errors | {len(after):,} / "
        f"{len(errors_after)} |",
        f"| kill to last client-visible error (ms) | {last_error_ms:.0f} |",
        f"| requests after the kill with 2 attempts | {attempts.get(2, 0):,} |",
        f"| statuses after the kill | {dict(Counter(o.status for o in after))} |",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    rounds, seconds = (2, 2) if args.quick else (args.rounds, args.seconds)
    ports = [free_port(), free_port()]
    upstreams = [start_upstream(port, chunks=20) for port in ports]
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    try:
        with tempfile.TemporaryDirectory(prefix="oai-gateway-failover-") as directory:
            gateway = start_gateway(urls[0], urls[1], Path(directory))
            try:
                print("\n".join(overhead(gateway, rounds, seconds)))
                print()
                print("\n".join(failover(gateway, upstreams[1], seconds * 2, args.concurrency)))
            finally:
                gateway.process.stop()
    finally:
        for upstream in upstreams:
            if upstream.popen.poll() is None:
                upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
