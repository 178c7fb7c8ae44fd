"""Direct vs gateway (and the bare reference proxy) on the scenarios of the performance work.

    uv run python bench/run.py [--runs 3] [--quick] [--json bench/results/run.json]

Pins the target (gateway, reference proxy) to core 0 and the upstream and the load drivers to
core 1, as the published figures were measured. Throughput and c=1 latency come from `wrk`
(`apt-get install wrk`); streams and embeddings from a small aiohttp client. Prints a Markdown
table of medians over the runs. Only 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
CHAT = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly, please."}],
    "max_tokens": 16,
}
TICKS = os.sysconf("SC_CLK_TCK")


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv


class Process:
    """A child process whose CPU time and memory can be read from /proc."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(url: str, timeout_s: float, body: dict[str, object] | None) -> float:
    """Seconds until `url` first answers 200 (POSTing `body` when given)."""
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < timeout_s:
            try:
                request = (
                    session.post(url, json=body, headers=headers) if body else session.get(url)
                )
                async with request as reply:
                    if reply.status == 200:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Target:
    name: str
    base: str  # URL prefix that /chat/completions etc. are appended to
    process: Process | None = None
    startup_s: float | None = None
    idle_rss_mb: float | None = None


def start_upstream(port: int, chunks: int) -> Process:
    argv = [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", str(port)]
    process = Process(pinned(1, [*argv, "--chunks", str(chunks)]))
    asyncio.run(_wait_ready(f"http://127.0.0.1:{port}/v1/models", 10, None))
    return process


def start_gateway(upstream: str) -> Target:
    port = free_port()
    env = {
        **os.environ,
        "CUSTOM_BASE_URL": upstream,
        "ALLOWED_API_KEYS": KEY,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    process = Process(pinned(0, argv), env)
    url = f"http://127.0.0.1:{port}/custom/v1"
    asyncio.run(_wait_ready(url + "/chat/completions", 20, CHAT))
    startup = time.perf_counter() - process.started
    return Target("gateway", url, process, startup, process.rss_mb())


def start_reference(upstream: str) -> Target:
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "reference_proxy.py"), "--port", str(port)]
    process = Process(pinned(0, [*argv, "--upstream", upstream]))
    url = f"http://127.0.0.1:{port}/custom/v1"
    asyncio.run(_wait_ready(url + "/chat/completions", 20, CHAT))
    startup = time.perf_counter() - process.started
    return Target("reference", url, process, startup, process.rss_mb())


# -- load drivers ---------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    requests: int


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    return (
        value / 1000
        if text.endswith("us")
        else value * 1000
        if text.endswith("s") and not text.endswith("ms")
        else value
    )


def wrk(url: str, connections: int, seconds: float, body: dict[str, object]) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url]
    output = subprocess.run(pinned(1, argv), capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses under load")
    return WrkResult(rate, p50, count)


@dataclass
class StreamResult:
    streams_per_s: float
    first_chunk_p50_ms: float
    streams: int


async def _streams(url: str, concurrency: int, total: int) -> StreamResult:
    body = {**CHAT, "stream": True}
    first: list[float] = []
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, json=body, headers=headers) as reply:
                    assert reply.status == 200, reply.status
                    seen_first = False
                    async for line in reply.content:
                        if not seen_first and line.startswith(b"data: {"):
                            first.append((time.perf_counter() - started) * 1000)
                            seen_first = True
                        if line.startswith(b"data: [DONE]"):
                            break

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
        elapsed = time.perf_counter() - started
    return StreamResult(total / elapsed, statistics.median(first), total)


def streams(url: str, concurrency: int, total: int) -> StreamResult:
    return asyncio.run(_streams(url, concurrency, total))


async def _latencies(url: str, body: dict[str, object], count: int) -> float:
    headers = {"authorization": f"Bearer {KEY}"}
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, reply.status
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


# -- the scenarios ----------------------------------------------------------------------------


@dataclass
class Measure:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        found = self.values.get(key)
        return statistics.median(found) if found else None


def cpu_per(target: Target, run: Callable[[], int]) -> tuple[int, float | None]:
    """Run a load and return (units of work, target CPU ms per unit)."""
    before = target.process.cpu_s() if target.process else 0.0
    units = run()
    if target.process is None or units == 0:
        return units, None
    return units, (target.process.cpu_s() - before) * 1000 / units


def measure(target: Target, results: Measure, quick: bool) -> None:
    secs = 3 if quick else 8
    n_streams = 600 if quick else 3000
    chat = target.base + "/chat/completions"
    for connections in (1, 64):
        outcome: list[WrkResult] = []

        def load(c: int = connections, out: list[WrkResult] = outcome) -> int:
            out.append(wrk(chat, c, secs, CHAT))
            return out[-1].requests

        _, cpu = cpu_per(target, load)
        results.add(f"chat c={connections} req/s", outcome[0].requests_per_s)
        results.add(f"chat c={connections} p50 ms", outcome[0].p50_ms)
        if cpu is not None:
            results.add(f"chat c={connections} cpu ms/req", cpu)
    for concurrency in (16, 64):
        stream_outcome: list[StreamResult] = []

        def stream_load(c: int = concurrency, out: list[StreamResult] = stream_outcome) -> int:
            out.append(streams(chat, c, n_streams))
            return out[-1].streams

        _, cpu = cpu_per(target, stream_load)
        results.add(f"stream c={concurrency} streams/s", stream_outcome[0].streams_per_s)
        if cpu is not None:
            results.add(f"stream c={concurrency} cpu ms/stream", cpu)
    results.add(
        "stream c=1 first chunk p50 ms", streams(chat, 1, 100 if quick else 300).first_chunk_p50_ms
    )
    embed: dict[str, object] = {
        "model": "bench-embedding",
        "input": [f"text number {i}" for i in range(64)],
    }
    results.add(
        "embeddings 64x1536 p50 ms",
        asyncio.run(_latencies(target.base + "/embeddings", embed, 30 if quick else 100)),
    )
    if target.process is not None:
        results.add("RSS after load MB", target.process.rss_mb())


ROWS = (
    ("chat c=1 p50 ms", "chat, c=1: p50 latency (ms)"),
    ("chat c=1 cpu ms/req", "chat, c=1: CPU per request (ms)"),
    ("chat c=64 req/s", "chat, c=64: requests/s"),
    ("chat c=64 cpu ms/req", "chat, c=64: CPU per request (ms)"),
    ("stream c=16 streams/s", "stream of 20 chunks, c=16: streams/s"),
    ("stream c=64 streams/s", "stream of 20 chunks, c=64: streams/s"),
    ("stream c=16 cpu ms/stream", "stream: CPU per stream (ms, c=16)"),
    ("stream c=1 first chunk p50 ms", "stream, c=1: time to first chunk p50 (ms)"),
    ("embeddings 64x1536 p50 ms", "embeddings 64x1536, c=1: p50 latency (ms)"),
    ("idle RSS MB", "idle RSS (MB)"),
    ("RSS after load MB", "RSS after load (MB)"),
    ("startup s", "start to first served request (s)"),
)


def table(by_target: dict[str, Measure]) -> str:
    names = list(by_target)
    lines = [
        "| scenario | " + " | ".join(names) + " | gateway vs direct |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for key, label in ROWS:
        cells = []
        for name in names:
            value = by_target[name].median(key)
            cells.append(
                "—" if value is None else f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
            )
        gateway = by_target["gateway"].median(key) if "gateway" in by_target else None
        direct = by_target["direct"].median(key) if "direct" in by_target else None
        if gateway is None or direct is None:
            versus = ""
        elif "req/s" in key or "streams/s" in key:
            versus = f"{gateway / direct:.2f}x"
        else:
            versus = f"+{gateway - direct:.3f} ms" if key.endswith("ms") else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {versus} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    parser.add_argument("--targets", default="direct,reference,gateway")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    wanted = args.targets.split(",")
    by_target: dict[str, Measure] = {name: Measure() for name in wanted}
    upstream_port = free_port()
    upstream = start_upstream(upstream_port, chunks=20)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    try:
        for run in range(args.runs):
            for name in wanted:
                print(f"run {run + 1}/{args.runs}: {name}", file=sys.stderr)
                if name == "direct":
                    target = Target("direct", upstream_url)
                elif name == "reference":
                    target = start_reference(upstream_url)
                else:
                    target = start_gateway(upstream_url)
                try:
                    if target.startup_s is not None:
                        by_target[name].add("startup s", target.startup_s)
                    if target.idle_rss_mb is not None:
                        by_target[name].add("idle RSS MB", target.idle_rss_mb)
                    measure(target, by_target[name], args.quick)
                finally:
                    if target.process is not None:
                        target.process.stop()
    finally:
        upstream.stop()
    print(table(by_target))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({k: v.values for k, v in by_target.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
