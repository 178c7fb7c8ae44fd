"""Load and soak test: mixed traffic through a real gateway process in front of bench/upstream.py.

    uv run python bench/load.py [--requests 20000] [--concurrency 256]
    uv run python bench/load.py --soak 600 [--concurrency 64] [--sample-s 5]

Every request is checked (status 200; streams end with `data: [DONE]`); anything else is an
unexpected error and makes the exit status 1. After the run the gateway's open file descriptors
must come back to the idle baseline. Soak mode samples the gateway's RSS every few seconds.
Everything talks to 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-load-key"
CHAT_MSG = [{"role": "user", "content": "Say hello to the load test."}]
CHAT_STREAM = {"model": "m", "messages": CHAT_MSG, "stream": True}
# (name, method, path, body): the mix cycles through these in order.
MIX: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("chat", "POST", "/chat/completions", {"model": "m", "messages": CHAT_MSG}),
    (
        "chat-stream",
        "POST",
        "/chat/completions",
        {"model": "m", "messages": CHAT_MSG, "stream": True},
    ),
    ("completions", "POST", "/completions", {"model": "m", "prompt": "hello"}),
    ("completions-stream", "POST", "/completions", {"model": "m", "prompt": "hi", "stream": True}),
    ("embeddings", "POST", "/embeddings", {"model": "m", "input": ["one", "two"]}),
    ("models", "GET", "/models", None),
    ("model", "GET", "/models/bench-model", None),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        return -9


async def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, headers=headers) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Tally:
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def fail(self, kind: str, what: str) -> None:
        self.errors[f"{kind}: {what[:80]}"] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {what[:300]}")


async def one(
    session: aiohttp.ClientSession, base: str, spec: tuple[str, str, str, Any], tally: Tally
) -> None:
    kind, method, path, body = spec
    started = time.perf_counter()
    try:
        async with session.request(method, base + path, json=body) as reply:
            data = await reply.read()
            if reply.status != 200:
                tally.fail(kind, f"status {reply.status} {data[:200]!r}")
            elif body is not None and body.get("stream") and not data.endswith(b"data: [DONE]\n\n"):
                tally.fail(kind, f"stream without [DONE]: {data[-200:]!r}")
            else:
                tally.by_kind[kind] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.fail(kind, repr(exc))
    tally.latencies.append(time.perf_counter() - started)


async def drive(base: str, concurrency: int, total: int | None, until: float | None) -> Tally:
    """`total` requests, or as many as fit before `until` (monotonic), `concurrency` at a time."""
    tally = Tally()
    counter = itertools.count()
    mix = itertools.cycle(MIX)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as s:

        async def worker() -> None:
            while True:
                if total is not None and next(counter) >= total:
                    return
                if until is not None and time.monotonic() >= until:
                    return
                await one(s, base, next(mix), tally)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def settle_fds(pid: int, baseline: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    now = open_fds(pid)
    while now > baseline and time.monotonic() < deadline:
        time.sleep(0.25)
        now = open_fds(pid)
    return now


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--soak", type=float, default=0.0, help="run for SECONDS instead")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sample interval (soak)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", str(up_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "CUSTOM_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "ALLOWED_API_KEYS": KEY,
        "LOG_LEVEL": "WARNING",
        "SERVICE_PORT": str(gw_port),
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "oai_gateway", "serve"],
        env=env,
        cwd="/tmp",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{gw_port}/custom/v1"
    result: dict[str, Any] = {"concurrency": args.concurrency}
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{up_port}/v1/models", 10))
        asyncio.run(wait_ready(base + "/models", 20))
        time.sleep(0.5)
        fds_idle = open_fds(gateway.pid)
        rss_idle = rss_mb(gateway.pid)
        started = time.monotonic()
        samples: list[tuple[float, float]] = [(0.0, rss_idle)]
        if args.soak > 0:
            until = started + args.soak

            async def soak() -> Tally:
                task = asyncio.create_task(drive(base, args.concurrency, None, until))
                while not task.done():
                    await asyncio.wait({task}, timeout=args.sample_s)
                    samples.append((round(time.monotonic() - started, 1), rss_mb(gateway.pid)))
                return task.result()

            tally = asyncio.run(soak())
        else:
            tally = asyncio.run(drive(base, args.concurrency, args.requests, None))
        elapsed = time.monotonic() - started
        fds_peak_after = open_fds(gateway.pid)
        fds_after = settle_fds(gateway.pid, fds_idle, 10.0)
        done = sum(tally.by_kind.values())
        result.update(
            requests=done + sum(tally.errors.values()),
            ok=done,
            unexpected_errors=sum(tally.errors.values()),
            by_kind=dict(tally.by_kind),
            errors=dict(tally.errors),
            examples=tally.examples,
            seconds=round(elapsed, 1),
            rps=round(done / elapsed, 1),
            p50_ms=round(percentile(tally.latencies, 0.5), 1),
            p99_ms=round(percentile(tally.latencies, 0.99), 1),
            fds_idle=fds_idle,
            fds_right_after=fds_peak_after,
            fds_after_settle=fds_after,
            rss_idle_mb=round(rss_idle, 1),
            rss_end_mb=round(rss_mb(gateway.pid), 1),
            rss_samples_mb=[(t, round(m, 1)) for t, m in samples],
        )
    finally:
        result["gateway_exit"] = stop(gateway)
        stop(upstream)
        stderr = gateway.stderr.read().decode(errors="replace") if gateway.stderr else ""
        result["gateway_log_tracebacks"] = stderr.count("Traceback")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    clean = (
        result.get("unexpected_errors", 1) == 0
        and result.get("fds_after_settle", 1 << 30) <= result.get("fds_idle", 0)
        and result["gateway_exit"] == 0
        and result["gateway_log_tracebacks"] == 0
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
