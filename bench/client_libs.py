"""HTTP client libraries compared as the gateway's async upstream client.

Three clients: aiohttp, httpx, and "gateway", the gateway's own HTTP/1.1
client (``oai_gateway.upstream.client.UpstreamClient`` over ``oai_gateway.upstream.http1``),
which has since replaced aiohttp in the gateway.

Usage::

    uv run python bench/client_libs.py            # full run, ~1-3 minutes
    uv run python bench/client_libs.py --quick    # smoke run, ~20 seconds
    # httpx takes most of that time; without it a full run is ~20 seconds
    uv run python bench/client_libs.py --libraries aiohttp,gateway

Every library is driven the way the gateway drives its upstream: a
long-lived pooled client (one per library and scenario, its pool sized to the
scenario's concurrency and opened during warm-up), a pre-serialised ~300-byte
chat body, the whole response body read (non-stream), or a 20-event SSE
stream read to the end.  aiohttp and httpx read the stream line by line; the
gateway's client hands over body bytes as they arrive, which is what the
gateway relays, so its events are counted in those bytes.  One extra scenario
reuses the warm c=64 client at c=1, because a pool's cost can depend on how
many idle connections it holds.

The loopback upstream (bench/upstream.py) runs pinned to core 1 and
this process, with uvloop, to core 0, so the client's own CPU cost is what
the throughput numbers measure.

Fairness choices, all deliberate:

* the libraries take turns going first, one round each, so slow drift of
  the machine (thermal, noisy neighbours) does not favour any of them;
* each client gets its own warm-up, opening the full pool, before any
  measured round;
* request timeouts are configured alike on all of them, and aiohttp's and
  httpx's keep-alive expiry alike; the gateway's client is used exactly as
  the gateway configures it, so its connect timeout (the request timeout,
  capped at 10 s) and its keep-alive expiry (4 s, checked when a connection
  is taken) are its own.  Between rounds its idle connections therefore
  expire and are reopened inside the next run: at most one connect per
  pooled connection per run, well under 1% of a full run's requests.  In the
  "pool holding 64 idle conns" scenario its pool may have dropped the idle
  connections first; taking an idle connection is constant-time there
  anyway (newest first), so the row is about the other two;
* before measuring, the upstream's ceiling is taken with wrk (or a raw
  asyncio driver when wrk is missing) and the upstream's CPU use is sampled
  during every run, so a result bounded by the upstream would be visible.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, cast

import aiohttp
import httptools
import httpx

from oai_gateway.upstream.client import UpstreamClient, json_headers

HERE = Path(__file__).resolve().parent
UPSTREAM_SCRIPT = HERE / "upstream.py"
LIBRARIES = ("aiohttp", "httpx", "gateway")
STREAM_CHUNKS = 20
UPSTREAM_CORE = 1
CLIENT_CORE = 0
# Generous enough never to fire on loopback, but present because the gateway
# will always run with timeouts and their bookkeeping is part of the cost.
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
# Both libraries would otherwise close idle connections on different
# schedules (httpx after 5 s, aiohttp after 15 s), which would change how many
# idle connections a pool holds between runs and so what it costs to use.
KEEPALIVE_S = 60.0
# A hard ceiling per measured run so a wedged library cannot hang the script.
RUN_DEADLINE_S = 300.0


def chat_request_body() -> bytes:
    """A realistic ~300-byte chat request, serialised once like the gateway does."""
    body = {
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one line."},
            {
                "role": "user",
                "content": "Summarise why connection pooling matters for an HTTP gateway "
                "that forwards requests to a model server on the same host.",
            },
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "stream": False,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def stream_request_body() -> bytes:
    return chat_request_body().replace(b'"stream":false', b'"stream":true')


# --------------------------------------------------------------------------
# Library drivers


class Driver(Protocol):
    name: str

    async def request(self) -> None: ...

    async def stream(self) -> None: ...

    async def aclose(self) -> None: ...


class BenchError(RuntimeError):
    """A response was wrong; the numbers would be meaningless, so stop."""


HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key"}


class AiohttpDriver:
    name = "aiohttp"

    def __init__(self, base_url: str, pool_size: int) -> None:
        self._url = base_url + "/v1/chat/completions"
        self._body = chat_request_body()
        self._stream_body = stream_request_body()
        connector = aiohttp.TCPConnector(
            limit=pool_size, limit_per_host=pool_size, keepalive_timeout=KEEPALIVE_S
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    async def request(self) -> None:
        async with self._session.post(self._url, data=self._body, headers=HEADERS) as resp:
            body = await resp.read()
            if resp.status != 200 or not body:
                raise BenchError(f"aiohttp: HTTP {resp.status}, {len(body)} bytes")

    async def stream(self) -> None:
        events = 0
        async with self._session.post(self._url, data=self._stream_body, headers=HEADERS) as resp:
            if resp.status != 200:
                raise BenchError(f"aiohttp: HTTP {resp.status}")
            async for line in resp.content:
                if line.startswith(b"data:"):
                    events += 1
        if events != STREAM_CHUNKS + 1:
            raise BenchError(f"aiohttp: {events} SSE events, expected {STREAM_CHUNKS + 1}")

    async def aclose(self) -> None:
        await self._session.close()


class HttpxDriver:
    name = "httpx"

    def __init__(self, base_url: str, pool_size: int) -> None:
        self._url = base_url + "/v1/chat/completions"
        self._body = chat_request_body()
        self._stream_body = stream_request_body()
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=pool_size,
                max_keepalive_connections=pool_size,
                keepalive_expiry=KEEPALIVE_S,
            ),
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            # Proxy variables in the environment must not reroute loopback
            # traffic; aiohttp ignores them by default, so this also keeps
            # the two configurations alike.
            trust_env=False,
        )

    async def request(self) -> None:
        resp = await self._client.post(self._url, content=self._body, headers=HEADERS)
        if resp.status_code != 200 or not resp.content:
            raise BenchError(f"httpx: HTTP {resp.status_code}, {len(resp.content)} bytes")

    async def stream(self) -> None:
        events = 0
        async with self._client.stream(
            "POST", self._url, content=self._stream_body, headers=HEADERS
        ) as resp:
            if resp.status_code != 200:
                raise BenchError(f"httpx: HTTP {resp.status_code}")
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    events += 1
        if events != STREAM_CHUNKS + 1:
            raise BenchError(f"httpx: {events} SSE events, expected {STREAM_CHUNKS + 1}")

    async def aclose(self) -> None:
        await self._client.aclose()


class _Timer:
    """Receives the upstream wait time, as the gateway's per-request timer does."""

    __slots__ = ("upstream_s",)

    def __init__(self) -> None:
        self.upstream_s = 0.0


# An SSE event is a line starting with "data:", as the other drivers count it.
_EVENT_START = b"\ndata:"


class GatewayDriver:
    name = "gateway"

    def __init__(self, base_url: str, pool_size: int) -> None:
        self._body = chat_request_body()
        self._stream_body = stream_request_body()
        self._ids = itertools.count()
        self._client = UpstreamClient(
            base_url=base_url + "/v1",
            # The provider headers the gateway sends; the client adds content-type itself.
            headers=json_headers("bench-key", {}),
            timeout_s=REQUEST_TIMEOUT_S,
            label="bench upstream",
            unreachable_hint="the bench upstream is not running",
            pool_size=pool_size,
        )

    async def start(self) -> None:
        await self._client.start()

    async def request(self) -> None:
        resp = await self._client.request(
            "POST",
            "/chat/completions",
            body=self._body,
            request_id=f"bench-{next(self._ids)}",
            timer=_Timer(),
        )
        body = await resp.read()
        if resp.status != 200 or not body:
            raise BenchError(f"gateway: HTTP {resp.status}, {len(body)} bytes")

    async def stream(self) -> None:
        resp = await self._client.request(
            "POST",
            "/chat/completions",
            body=self._stream_body,
            request_id=f"bench-{next(self._ids)}",
            timer=_Timer(),
            stream=True,
        )
        events = 0
        try:
            if resp.status != 200:
                raise BenchError(f"gateway: HTTP {resp.status}")
            # The body starts a line, hence the leading newline; the tail carries a
            # marker split across two chunks, and is too short to hold a whole one,
            # so nothing is counted twice.
            tail = b"\n"
            async for part in resp.chunks():
                window = tail + part
                events += window.count(_EVENT_START)
                tail = window[1 - len(_EVENT_START) :]
        finally:
            resp.close()
        if events != STREAM_CHUNKS + 1:
            raise BenchError(f"gateway: {events} SSE events, expected {STREAM_CHUNKS + 1}")

    async def aclose(self) -> None:
        await self._client.aclose()


async def make_driver(name: str, base_url: str, pool_size: int) -> Driver:
    if name == "aiohttp":
        return AiohttpDriver(base_url, pool_size)
    if name == "httpx":
        return HttpxDriver(base_url, pool_size)
    if name == "gateway":
        driver = GatewayDriver(base_url, pool_size)
        # Its pool binds to the running loop, so it is opened here, not in __init__.
        await driver.start()
        return driver
    raise ValueError(name)


# --------------------------------------------------------------------------
# Measurement


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    concurrency: int
    count: int
    streaming: bool
    # Stop early after this long: a library that collapses must not push the
    # whole run past its time budget; the rate stays exact (done / elapsed).
    max_seconds: float
    # Pool size; None sizes the pool to the concurrency.
    pool: int | None = None
    # Run on the (warm, now idle) client of another scenario instead of a
    # client of its own.
    pool_of: str | None = None

    @property
    def pool_size(self) -> int:
        return self.pool if self.pool is not None else self.concurrency


@dataclass
class Sample:
    library: str
    scenario: str
    count: int
    planned: int
    wall_s: float
    cpu_s: float
    upstream_cpu_s: float | None
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.count / self.wall_s

    @property
    def cpu_ms_per_op(self) -> float:
        return self.cpu_s * 1000.0 / self.count

    @property
    def upstream_busy(self) -> float | None:
        if self.upstream_cpu_s is None:
            return None
        return self.upstream_cpu_s / self.wall_s


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile; exact enough with thousands of samples."""
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


class UpstreamCpu:
    """Reads the upstream's CPU time from /proc to show whether it saturated."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/stat")
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def seconds(self) -> float | None:
        try:
            raw = self._path.read_text()
        except OSError:
            return None
        # The command name may contain spaces; fields are counted after ')'.
        fields = raw.rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / self._tick


async def run_scenario(
    driver: Driver, scenario: Scenario, upstream_cpu: UpstreamCpu | None
) -> Sample:
    op: Callable[[], Awaitable[None]] = driver.stream if scenario.streaming else driver.request
    remaining = scenario.count
    latencies: list[int] = []
    clock = time.perf_counter_ns
    stop_at = 0

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and clock() < stop_at:
            remaining -= 1
            start = clock()
            await op()
            latencies.append(clock() - start)

    # Collect now so a cycle left by the previous run is not charged to this one.
    gc.collect()
    up_before = upstream_cpu.seconds() if upstream_cpu else None
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    stop_at = clock() + int(scenario.max_seconds * 1e9)
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(scenario.concurrency))),
        timeout=RUN_DEADLINE_S,
    )
    wall = time.perf_counter() - wall_before
    cpu = time.process_time() - cpu_before
    up_after = upstream_cpu.seconds() if upstream_cpu else None
    up_cpu = None if up_before is None or up_after is None else up_after - up_before
    latencies.sort()
    return Sample(
        library=driver.name,
        scenario=scenario.key,
        count=len(latencies),
        planned=scenario.count,
        wall_s=wall,
        cpu_s=cpu,
        upstream_cpu_s=up_cpu,
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p99_ms=percentile(latencies, 0.99) / 1e6,
    )


# --------------------------------------------------------------------------
# Upstream process and its ceiling


@dataclass
class UpstreamProcess:
    proc: subprocess.Popen[bytes]
    port: int
    pinned: bool

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and {
        CLIENT_CORE,
        UPSTREAM_CORE,
    } <= os.sched_getaffinity(0)


def start_upstream(pin: bool, delay_ms: float) -> UpstreamProcess:
    cmd = [
        sys.executable,
        str(UPSTREAM_SCRIPT),
        "--port",
        "0",
        "--chunks",
        str(STREAM_CHUNKS),
        "--delay-ms",
        str(delay_ms),
    ]
    taskset = shutil.which("taskset")
    if pin and taskset:
        cmd = [taskset, "-c", str(UPSTREAM_CORE), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    if pin and not taskset:
        os.sched_setaffinity(proc.pid, {UPSTREAM_CORE})
    assert proc.stdout is not None
    deadline = time.monotonic() + 15.0
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            # os.read, not the buffered file, so select() sees what is left.
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
        elif proc.poll() is not None:
            break
    if not line.startswith(b"listening "):
        proc.kill()
        raise RuntimeError(f"upstream did not start (said {line!r})")
    port = int(line.rsplit(b":", 1)[1])
    return UpstreamProcess(proc=proc, port=port, pinned=pin)


@dataclass
class Ceiling:
    tool: str
    requests_per_s: float


def wrk_ceiling(base_url: str, connections: int, seconds: int, pin: bool) -> Ceiling | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    body = chat_request_body().decode()
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    try:
        cmd = [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            script_path,
            base_url + "/v1/chat/completions",
        ]
        taskset = shutil.which("taskset")
        if pin and taskset:
            cmd = [taskset, "-c", str(CLIENT_CORE), *cmd]
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 30, check=False
        ).stdout
    finally:
        os.unlink(script_path)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return Ceiling(tool="wrk", requests_per_s=float(line.split()[1]))
    return None


class _LoadConnection(asyncio.Protocol):
    """A minimal keep-alive client: send, parse the reply, send again."""

    def __init__(self, request: bytes, budget: _Budget) -> None:
        self._request = request
        self._budget = budget
        self._parser: Any = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._budget.take():
            self._transport.write(self._request)
        else:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        self._budget.done += 1
        assert self._transport is not None
        if self._budget.take():
            self._transport.write(self._request)
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Budget:
    limit: int
    deadline: float
    started: int = 0
    done: int = 0

    def take(self) -> bool:
        if self.started >= self.limit or time.perf_counter() >= self.deadline:
            return False
        self.started += 1
        return True


async def python_ceiling(port: int, connections: int, seconds: float) -> Ceiling:
    """Fallback when wrk is absent: a lower bound, since this driver is Python too."""
    body = chat_request_body()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    )
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    budget = _Budget(limit=5_000_000, deadline=start + seconds)
    conns: list[_LoadConnection] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: _LoadConnection(request, budget), "127.0.0.1", port
        )
        conns.append(proto)
    await asyncio.wait_for(
        asyncio.gather(*(c.closed for c in conns)), timeout=seconds + RUN_DEADLINE_S
    )
    elapsed = time.perf_counter() - start
    return Ceiling(
        tool="python raw-asyncio driver (lower bound)", requests_per_s=budget.done / elapsed
    )


# --------------------------------------------------------------------------
# Orchestration and reporting


@dataclass
class Plan:
    libraries: tuple[str, ...]
    scenarios: list[Scenario]
    repeats: int
    warmup_scale: float
    ceiling_seconds: int


def make_plan(quick: bool, libraries: Sequence[str] = LIBRARIES) -> Plan:
    scale = 0.15 if quick else 1.0
    cap = 1.5 if quick else 15.0
    return Plan(
        libraries=tuple(libraries),
        scenarios=[
            Scenario("c1", "c=1 non-stream", 1, int(3_000 * scale), False, cap),
            Scenario("c64", "c=64 non-stream", 64, int(20_000 * scale), False, cap),
            # What a gateway at low load sees right after a burst: the pool is
            # holding many idle keep-alive connections.
            Scenario(
                "c1p64",
                "c=1, pool holding 64 idle conns",
                1,
                int(1_000 * scale),
                False,
                cap,
                pool_of="c64",
            ),
            # The best tuning found for httpx at c=64 (its pool costs grow with
            # the number of connections), applied to all for a like-for-like row.
            Scenario(
                "c64p16", "c=64 over a 16-conn pool", 64, int(5_000 * scale), False, cap, pool=16
            ),
            Scenario("s16", "c=16 SSE streams (20 events)", 16, int(2_000 * scale), True, cap),
        ],
        repeats=3,
        warmup_scale=scale,
        ceiling_seconds=2 if quick else 3,
    )


def warm_up_scenario(scenario: Scenario, scale: float) -> Scenario:
    # Enough rounds at full concurrency to open every pooled connection and
    # get past one-off costs (imports, caches) before anything is measured.
    count = max(scenario.concurrency * 8, 50, int(scenario.count * 0.1 * max(scale, 0.5)))
    return Scenario(
        "warm-" + scenario.key,
        "",
        scenario.concurrency,
        count,
        scenario.streaming,
        max_seconds=min(5.0, scenario.max_seconds),
    )


async def benchmark(
    upstream: UpstreamProcess, plan: Plan, log: Callable[[str], None]
) -> list[Sample]:
    cpu = UpstreamCpu(upstream.proc.pid)
    drivers: dict[tuple[str, str], Driver] = {}
    owned: list[Driver] = []
    samples: list[Sample] = []
    try:
        for scenario in plan.scenarios:
            for name in plan.libraries:
                if scenario.pool_of is not None:
                    drivers[(name, scenario.key)] = drivers[(name, scenario.pool_of)]
                    continue
                driver = await make_driver(name, upstream.base_url, scenario.pool_size)
                drivers[(name, scenario.key)] = driver
                owned.append(driver)
                log(f"warming up {name} for {scenario.key} (pool {scenario.pool_size})")
                await run_scenario(driver, warm_up_scenario(scenario, plan.warmup_scale), None)
        libraries = plan.libraries
        for round_no in range(plan.repeats):
            shift = round_no % len(libraries)
            order = libraries[shift:] + libraries[:shift]
            for scenario in plan.scenarios:
                for name in order:
                    sample = await run_scenario(drivers[(name, scenario.key)], scenario, cpu)
                    samples.append(sample)
                    log(
                        f"round {round_no + 1}/{plan.repeats} {scenario.key:>5} "
                        f"{name:<8} {sample.rate:9.0f}/s "
                        f"cpu {sample.cpu_ms_per_op:.3f} ms/op p50 {sample.p50_ms:.3f} ms"
                    )
    finally:
        for driver in owned:
            await driver.aclose()
    return samples


@dataclass
class Row:
    label: str
    unit_fmt: str
    higher_is_better: bool
    values: dict[str, float] = field(default_factory=dict)


def median_of(
    samples: list[Sample], lib: str, key: str, metric: Callable[[Sample], float]
) -> float:
    return statistics.median(metric(s) for s in samples if s.library == lib and s.scenario == key)


def build_rows(samples: list[Sample], plan: Plan) -> list[Row]:
    def p50(s: Sample) -> float:
        return s.p50_ms

    def p99(s: Sample) -> float:
        return s.p99_ms

    def cpu(s: Sample) -> float:
        return s.cpu_ms_per_op

    def rate(s: Sample) -> float:
        return s.rate

    # Which figures matter depends on the scenario: latency where a single
    # caller waits, throughput where the client is saturated.
    wanted: dict[str, list[tuple[str, str, bool, Callable[[Sample], float]]]] = {
        "c1": [
            ("latency p50 (ms)", "{:.3f}", False, p50),
            ("latency p99 (ms)", "{:.3f}", False, p99),
            ("client CPU per request (ms)", "{:.3f}", False, cpu),
        ],
        "c64": [
            ("throughput (req/s)", "{:,.0f}", True, rate),
            ("client CPU per request (ms)", "{:.3f}", False, cpu),
        ],
        "c1p64": [
            ("latency p50 (ms)", "{:.3f}", False, p50),
            ("client CPU per request (ms)", "{:.3f}", False, cpu),
        ],
        "c64p16": [
            ("throughput (req/s)", "{:,.0f}", True, rate),
            ("client CPU per request (ms)", "{:.3f}", False, cpu),
        ],
        "s16": [
            ("streams/s", "{:,.0f}", True, rate),
            ("client CPU per stream (ms)", "{:.3f}", False, cpu),
        ],
    }
    rows = []
    for scenario in plan.scenarios:
        for label, fmt, higher, metric in wanted.get(scenario.key, []):
            row = Row(f"{scenario.title}: {label}", fmt, higher)
            for lib in plan.libraries:
                row.values[lib] = median_of(samples, lib, scenario.key, metric)
            rows.append(row)
    return rows


def advantage(row: Row, lib: str, over: str) -> float:
    """How many times better `lib` did than `over` on this row (above 1: `lib` won)."""
    mine, theirs = row.values[lib], row.values[over]
    return mine / theirs if row.higher_is_better else theirs / mine


def markdown_table(rows: list[Row], libraries: Sequence[str]) -> str:
    # Ratios are taken against the gateway's own client when it ran, since that
    # is the one in use; otherwise against the first library named.
    reference = "gateway" if "gateway" in libraries else libraries[0]
    others = [lib for lib in libraries if lib != reference]
    header = ["metric (median of runs)", *libraries]
    header += [f"{reference} advantage over {other}" for other in others]
    align = ["---"] + ["---:"] * (len(libraries) + len(others))
    if others:
        header.append("best")
        align.append("---")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = [row.label, *(row.unit_fmt.format(row.values[lib]) for lib in libraries)]
        cells += [f"{advantage(row, reference, other):.2f}x" for other in others]
        if others:
            sign = 1.0 if row.higher_is_better else -1.0
            cells.append(max(libraries, key=lambda lib: sign * row.values[lib]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scenario_table(plan: Plan) -> str:
    lines = [
        "| key | scenario | concurrency | pool | requests per run | time cap (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for sc in plan.scenarios:
        pool = f"{sc.pool_size} (client of {sc.pool_of})" if sc.pool_of else str(sc.pool_size)
        lines.append(
            f"| {sc.key} | {sc.title} | {sc.concurrency} | {pool} | {sc.count:,} "
            f"| {sc.max_seconds:g} |"
        )
    return "\n".join(lines)


def details_table(samples: list[Sample]) -> str:
    lines = [
        "| scenario | library | done / planned | wall (s) | rate (/s) | client CPU (ms/op) "
        "| p50 (ms) | p99 (ms) | client core busy | upstream core busy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in samples:
        busy = "n/a" if s.upstream_busy is None else f"{s.upstream_busy:.0%}"
        lines.append(
            f"| {s.scenario} | {s.library} | {s.count:,} / {s.planned:,} | {s.wall_s:.1f} "
            f"| {s.rate:,.0f} | {s.cpu_ms_per_op:.3f} "
            f"| {s.p50_ms:.3f} | {s.p99_ms:.3f} | {s.cpu_s / s.wall_s:.0%} | {busy} |"
        )
    return "\n".join(lines)


def environment(upstream: UpstreamProcess) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    parser = getattr(aiohttp, "http_parser", None)
    response_parser = getattr(parser, "HttpResponseParser", None)
    c_parser = getattr(response_parser, "__module__", "") == "aiohttp._http_parser"
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "cpu_model": _cpu_model(),
        "pinning": (
            f"client core {CLIENT_CORE}, upstream core {UPSTREAM_CORE}"
            if upstream.pinned
            else "none (fewer than 2 usable cores)"
        ),
        "aiohttp": version("aiohttp") + (" (C parser)" if c_parser else " (pure-Python parser)"),
        "httpx": version("httpx"),
        "httpcore": version("httpcore"),
        "h11": version("h11"),
        "gateway client": f"oai-gateway {version('oai-gateway')} "
        f"(httptools {version('httptools')})",
        "anyio": version("anyio"),
        "uvloop": version("uvloop"),
        # Other work on the machine skews every number; record it.
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def parse_libraries(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in LIBRARIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(LIBRARIES)}, got {value!r}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HTTP client libraries compared as the gateway's upstream client"
    )
    parser.add_argument("--quick", action="store_true", help="15%% of the counts, ~20 s")
    parser.add_argument(
        "--libraries",
        type=parse_libraries,
        default=LIBRARIES,
        help=f"comma-separated, in table order (default {','.join(LIBRARIES)})",
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the Python ceiling driver")
    parser.add_argument("--json", type=Path, help="also write raw samples as JSON here")
    parser.add_argument(
        "--upstream-delay-ms",
        type=float,
        default=0.0,
        help="make the upstream wait before each response, to mimic a slow model",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.quick, args.libraries)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})
    else:
        log("fewer than 2 usable cores: running unpinned, numbers will be noisier")
    if os.getloadavg()[0] > 0.5:
        log("warning: the machine is busy (load average > 0.5); rates will be noisy")
    upstream = start_upstream(pin, args.upstream_delay_ms)
    try:
        env = environment(upstream)
        loop_factory = _loop_factory()
        env["client loop"] = "uvloop" if loop_factory else "asyncio"
        env["upstream delay"] = f"{args.upstream_delay_ms:g} ms"
        ceiling = (
            None if args.no_wrk else wrk_ceiling(upstream.base_url, 64, plan.ceiling_seconds, pin)
        )
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            if ceiling is None:
                ceiling = runner.run(python_ceiling(upstream.port, 64, plan.ceiling_seconds))
            log(f"upstream ceiling: {ceiling.requests_per_s:,.0f} req/s via {ceiling.tool}")
            samples = runner.run(benchmark(upstream, plan, log))
    finally:
        upstream.stop()
    env["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    rows = build_rows(samples, plan)
    print(f"## Upstream client library: {' vs '.join(plan.libraries)}\n")
    print("Environment: " + "; ".join(f"{k}: {v}" for k, v in env.items()))
    print(
        f"\nUpstream ceiling (c=64 non-stream chat, {ceiling.tool}): "
        f"{ceiling.requests_per_s:,.0f} req/s\n"
    )
    print(scenario_table(plan))
    print()
    print(markdown_table(rows, plan.libraries))
    print(f"\nAll runs ({plan.repeats} per library and scenario):\n")
    print(details_table(samples))
    print(f"\nTotal time: {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": env,
            "libraries": list(plan.libraries),
            "ceiling": asdict(ceiling),
            "scenarios": [asdict(s) for s in plan.scenarios],
            "samples": [asdict(s) for s in samples],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
