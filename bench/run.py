"""Direct vs gateway (and the bare reference proxy) on the scenarios of the performance work.

    uv run python bench/run.py [--runs 3] [--quick] [--json bench/results/run.json]
        [--targets direct,reference,gateway,gateway-granian,gateway-w2,litellm,portkey,
                   gateway-vkey,gateway-vkey-sqlite,gateway-vkey-redis]

Pins the target (gateway, reference proxy) to core 0 and the upstream and the load drivers to
core 1, as the published figures were measured. Two more gateway targets are optional:
`gateway-granian` is the gateway's configuration served by granian (one worker, one runtime
thread, HTTP/1) instead of uvicorn, and `gateway-w2` is `serve --workers 2`, pinned to cores 0
and 1, which it then shares with the upstream and the load drivers. A target's CPU time and RSS
are summed over its process and all its descendants (server supervisor plus workers).
Throughput and c=1 latency come from `wrk` (`apt-get install wrk`); streams and embeddings from
a small aiohttp client. Prints a Markdown table of medians over the runs. Only 127.0.0.1; every
loop is bounded.

The virtual-key targets (bench/keys_targets.py) run the gateway with a virtual key instead of
the static one: `gateway-vkey` without limits, `gateway-vkey-sqlite` and `gateway-vkey-redis` with
rpm + tpm limits on each store; a second table compares them with `gateway`.

The peer gateways `litellm` (LiteLLM proxy, pip) and `portkey` (@portkey-ai/gateway, npm) are
optional targets. The script installs a pinned version of each into its own throw-away
environment under ~/.cache/oai-gateway/bench-peers/ on first use (never into the project's venv),
starts it with one worker pinned to core 0 and routes it to the loopback upstream. A peer that
cannot be installed or started is reported in one line and left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from oai_gateway.keys.records import Limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keys_targets

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
CHAT = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly, please."}],
    "max_tokens": 16,
}
TICKS = os.sysconf("SC_CLK_TCK")
LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER_VERSION = "1.13.8"
PEERS = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "oai-gateway" / "bench-peers"
)


def pinned(cores: int | str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cores), *argv] if shutil.which("taskset") else argv


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name, which may contain spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _descendants(root: int) -> list[int]:
    # /proc/<pid>/task/*/children needs CONFIG_PROC_CHILDREN, which not every kernel has, so
    # the tree is rebuilt from every process's parent id.
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # gone since the listing
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _cpu_s(pid: int) -> float:
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    # Children it has reaped count too (cutime, cstime), so that CPU spent by a worker that
    # exits during a load does not vanish from the total.
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Process:
    """A child process whose CPU time and memory, with its descendants', come from /proc.

    Servers with a supervisor (uvicorn with several workers, granian even with one) serve from
    child processes, so figures for the started process alone would miss the work.
    """

    def __init__(
        self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self.started = time.perf_counter()
        # A peer's output goes to a file so that a failed start can be diagnosed.
        out = log.open("wb") if log else subprocess.DEVNULL
        try:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if log and not isinstance(out, int):
                out.close()

    def pids(self) -> list[int]:
        return [self.popen.pid, *_descendants(self.popen.pid)]

    def cpu_s(self) -> float:
        return sum(_cpu_s(pid) for pid in self.pids())

    def rss_mb(self) -> float:
        # Shared pages (the interpreter, libraries) count once per process, so for a
        # multi-process server this is an upper bound on the memory it really takes.
        return sum(_rss_mb(pid) for pid in self.pids())

    def settle(self, timeout_s: float, window_s: float = 0.25) -> None:
        """Wait until the process tree is idle, e.g. until every worker has finished booting."""
        deadline = time.monotonic() + timeout_s
        before = self.cpu_s()
        while time.monotonic() < deadline:
            time.sleep(window_s)
            now = self.cpu_s()
            if now - before < 2 / TICKS:
                return
            before = now
        raise RuntimeError(f"still busy {timeout_s} s after serving its first request")

    def stop(self) -> None:
        descendants = _descendants(self.popen.pid)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
            # A supervisor killed outright leaves its workers behind, still holding the port.
            for pid in descendants:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(
    url: str,
    timeout_s: float,
    body: dict[str, object] | None,
    extra: Mapping[str, str] | None = None,
    process: Process | None = None,
    *,
    poll_s: float = 0.005,
) -> float:
    """Seconds until `url` first answers 200 (POSTing `body` when given)."""
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {KEY}", **(extra or {})}
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < timeout_s:
            if process is not None and process.popen.poll() is not None:
                raise RuntimeError(f"exited with status {process.popen.returncode} before serving")
            try:
                request = (
                    session.post(url, json=body, headers=headers) if body else session.get(url)
                )
                async with request as reply:
                    if reply.status == 200:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(poll_s)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Target:
    name: str
    base: str  # URL prefix that /chat/completions etc. are appended to
    process: Process | None = None
    startup_s: float | None = None
    idle_rss_mb: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    redis_port: int | None = None  # the Redis store of a virtual-key target


def start_upstream(port: int, chunks: int) -> Process:
    argv = [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", str(port)]
    process = Process(pinned(1, [*argv, "--chunks", str(chunks)]))
    asyncio.run(_wait_ready(f"http://127.0.0.1:{port}/v1/models", 10, None))
    return process


def _start_local(
    name: str,
    argv: list[str],
    port: int,
    env: dict[str, str] | None = None,
    *,
    cores: int | str = 0,
    settle: bool = False,
) -> Target:
    process = Process(pinned(cores, argv), env)
    url = f"http://127.0.0.1:{port}/custom/v1"
    try:
        asyncio.run(_wait_ready(url + "/chat/completions", 20, CHAT, process=process))
        startup = time.perf_counter() - process.started
        if settle:
            # The first answer comes from whichever worker is up first; the others must not
            # boot during the first load, or their start-up CPU is charged to its requests.
            process.settle(20)
    except BaseException:
        process.stop()
        raise
    return Target(name, url, process, startup, process.rss_mb())


def _gateway_env(upstream: str) -> dict[str, str]:
    return {
        **os.environ,
        "CUSTOM_BASE_URL": upstream,
        "ALLOWED_API_KEYS": KEY,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }


def start_gateway(upstream: str) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    return _start_local("gateway", argv, port, _gateway_env(upstream))


def start_gateway_w2(upstream: str) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port), "--workers", "2"]
    # Two workers on one core would only measure context switches.
    return _start_local("gateway-w2", argv, port, _gateway_env(upstream), cores="0,1", settle=True)


def start_gateway_granian(upstream: str) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # One runtime thread and HTTP/1 only, like uvicorn's single event loop; no websockets, as
    # the gateway runs uvicorn with ws="none".
    argv += ["--runtime-threads", "1", "--http", "1", "--loop", "uvloop", "--no-ws"]
    # The gateway writes its own access line per request, as it does under uvicorn; a second
    # one from the server would be extra work that uvicorn does not do.
    argv += ["--no-access-log", "--log-level", "info"]
    argv += ["oai_gateway.app:app_from_environment"]
    return _start_local("gateway-granian", argv, port, _gateway_env(upstream))


def start_reference(upstream: str) -> Target:
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "reference_proxy.py"), "--port", str(port)]
    return _start_local("reference", [*argv, "--upstream", upstream], port)


def _start_gateway_vkey(name: str, upstream: str, store: str, limits: Limits) -> Target:
    port = free_port()
    url = keys_targets.store_url(store, pinned)
    key = keys_targets.issue_key(url, limits)
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    target = _start_local(name, argv, port, {**_gateway_env(upstream), "STORE_URL": url})
    target.headers = {"authorization": f"Bearer {key}"}
    if store == "redis":
        target.redis_port = keys_targets.redis_port(pinned)
    return target


LOCAL_STARTERS: dict[str, Callable[[str], Target]] = {
    "reference": start_reference,
    "gateway": start_gateway,
    "gateway-granian": start_gateway_granian,
    "gateway-w2": start_gateway_w2,
    "gateway-vkey": lambda up: _start_gateway_vkey("gateway-vkey", up, "sqlite", Limits()),
    "gateway-vkey-sqlite": lambda up: _start_gateway_vkey(
        "gateway-vkey-sqlite", up, "sqlite", keys_targets.HIGH
    ),
    "gateway-vkey-redis": lambda up: _start_gateway_vkey(
        "gateway-vkey-redis", up, "redis", keys_targets.HIGH
    ),
}


# -- peer gateways -------------------------------------------------------------------------


def _install(marker: Path, steps: list[list[str]], timeout_s: float, log: Path) -> None:
    """Run the install steps once; `marker` records a finished install of this version."""
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with log.open("w") as out:
        for step in steps:
            left = deadline - time.monotonic()
            try:
                subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=left, check=True)
            except subprocess.TimeoutExpired as error:
                raise RuntimeError(
                    f"install timed out after {timeout_s:.0f} s (see {log})"
                ) from error
            except subprocess.CalledProcessError as error:
                raise RuntimeError(
                    f"install failed: {step[0]} {error.returncode} (see {log})"
                ) from error
    marker.write_text("ok\n")


def _start_peer(
    name: str, argv: list[str], env: dict[str, str], base: str, headers: dict[str, str]
) -> Target:
    log = PEERS / f"{name}.log"
    process = Process(pinned(0, argv), env, log)
    try:
        asyncio.run(
            _wait_ready(base + "/chat/completions", 120, CHAT, headers, process, poll_s=0.1)
        )
    except Exception as error:
        process.stop()
        raise RuntimeError(f"{error} (see {log})") from error
    except BaseException:
        process.stop()
        raise
    startup = time.perf_counter() - process.started
    return Target(name, base, process, startup, process.rss_mb(), headers)


def _quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", **extra}


def start_litellm(upstream: str) -> Target:
    home = PEERS / "litellm"
    python = home / "bin" / "python"
    _install(
        home / f".installed-{LITELLM_VERSION}",
        [
            [shutil.which("python3") or sys.executable, "-m", "venv", str(home)],
            [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        ],
        900,
        PEERS / "litellm-install.log",
    )
    port = free_port()
    config = home / "bench-config.yaml"
    # YAML is a superset of JSON, so the config needs no YAML writer here.
    models = [
        {
            "model_name": model,
            "litellm_params": {"model": f"openai/{model}", "api_base": upstream, "api_key": "x"},
        }
        for model in ("bench-model", "bench-embedding")
    ]
    config.write_text(
        json.dumps(
            {
                "model_list": models,
                "general_settings": {"master_key": KEY},
                "litellm_settings": {"telemetry": False, "set_verbose": False},
            },
            indent=1,
        )
    )
    env = _quiet_env(
        # No phoning home: telemetry off, the model cost map from the package, not GitHub.
        LITELLM_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        DISABLE_ADMIN_UI="True",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    argv = [str(home / "bin" / "litellm"), "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return _start_peer("litellm", argv, env, f"http://127.0.0.1:{port}/v1", {})


def start_portkey(upstream: str) -> Target:
    home = PEERS / "portkey"
    marker = home / f".installed-{PORTKEY_VERSION}-{HONO_NODE_SERVER_VERSION}"
    if not marker.exists():
        shutil.rmtree(home, ignore_errors=True)  # an override only applies to a fresh tree
        home.mkdir(parents=True)
        # @hono/node-server from 1.14 on hands Portkey upstream responses whose headers are
        # immutable, and every stream fails with "TypeError: immutable" (Portkey-AI/gateway#1389).
        package = {
            "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
            "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
        }
        (home / "package.json").write_text(json.dumps(package))
    npm = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(home)]
    _install(marker, [npm], 600, PEERS / "portkey-install.log")
    port = free_port()
    server = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    argv = ["node", str(server), f"--port={port}", "--headless"]
    env = _quiet_env(NODE_ENV="production")
    # Portkey routes by header: the openai provider with a custom (loopback) base URL.
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": upstream}
    return _start_peer("portkey", argv, env, f"http://127.0.0.1:{port}/v1", headers)


PEER_STARTERS: dict[str, Callable[[str], Target]] = {
    "litellm": start_litellm,
    "portkey": start_portkey,
}


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


def wrk(
    url: str,
    connections: int,
    seconds: float,
    body: dict[str, object],
    extra: Mapping[str, str] | None = None,
) -> WrkResult:
    headers = {
        "Content-Type": "application/json",
        "authorization": f"Bearer {KEY}",  # lower case, as the targets' own headers override it
        **(extra or {}),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n')
        for name, value in headers.items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
        script.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
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


async def _streams(
    url: str, concurrency: int, total: int, extra: Mapping[str, str] | None = None
) -> StreamResult:
    body = {**CHAT, "stream": True}
    first: list[float] = []
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"authorization": f"Bearer {KEY}", **(extra or {})}
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


def streams(
    url: str, concurrency: int, total: int, extra: Mapping[str, str] | None = None
) -> StreamResult:
    return asyncio.run(_streams(url, concurrency, total, extra))


async def _latencies(
    url: str, body: dict[str, object], count: int, extra: Mapping[str, str] | None = None
) -> float:
    headers = {"authorization": f"Bearer {KEY}", **(extra or {})}
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, reply.status
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def _paired_added(
    url: str,
    direct_url: str,
    body: dict[str, object],
    count: int,
    extra: Mapping[str, str] | None = None,
) -> float:
    """Median of (target - direct) over back-to-back pairs, alternating which goes first.

    Measured apart, a megabyte answer's latency drifts with whatever else the machine does
    between the two measurements; in pairs the drift is the same on both sides and cancels.
    """
    headers = {"authorization": f"Bearer {KEY}", **(extra or {})}
    added = []
    async with aiohttp.ClientSession() as target, aiohttp.ClientSession() as direct:

        async def timed(session: aiohttp.ClientSession, address: str) -> float:
            started = time.perf_counter()
            async with session.post(address, json=body, headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, reply.status
            return (time.perf_counter() - started) * 1000

        for i in range(count):
            if i % 2:
                through, straight = await timed(target, url), await timed(direct, direct_url)
            else:
                straight, through = await timed(direct, direct_url), await timed(target, url)
            added.append(through - straight)
    return statistics.median(added)


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


def measure(target: Target, results: Measure, quick: bool, direct_base: str) -> None:
    secs = 3 if quick else 8
    n_streams = 600 if quick else 3000
    chat = target.base + "/chat/completions"
    for connections in (1, 64):
        outcome: list[WrkResult] = []

        def load(c: int = connections, out: list[WrkResult] = outcome) -> int:
            out.append(wrk(chat, c, secs, CHAT, target.headers))
            return out[-1].requests

        _, cpu = cpu_per(target, load)
        results.add(f"chat c={connections} req/s", outcome[0].requests_per_s)
        results.add(f"chat c={connections} p50 ms", outcome[0].p50_ms)
        if cpu is not None:
            results.add(f"chat c={connections} cpu ms/req", cpu)
    for concurrency in (16, 64):
        stream_outcome: list[StreamResult] = []

        def stream_load(c: int = concurrency, out: list[StreamResult] = stream_outcome) -> int:
            out.append(streams(chat, c, n_streams, target.headers))
            return out[-1].streams

        _, cpu = cpu_per(target, stream_load)
        results.add(f"stream c={concurrency} streams/s", stream_outcome[0].streams_per_s)
        if cpu is not None:
            results.add(f"stream c={concurrency} cpu ms/stream", cpu)
    results.add(
        "stream c=1 first chunk p50 ms",
        streams(chat, 1, 100 if quick else 300, target.headers).first_chunk_p50_ms,
    )
    embed: dict[str, object] = {
        "model": "bench-embedding",
        "input": [f"text number {i}" for i in range(64)],
    }
    results.add(
        "embeddings 64x1536 p50 ms",
        asyncio.run(
            _latencies(target.base + "/embeddings", embed, 30 if quick else 100, target.headers)
        ),
    )
    if target.base != direct_base:
        results.add(
            "embeddings 64x1536 added p50 ms",
            asyncio.run(
                _paired_added(
                    target.base + "/embeddings",
                    direct_base + "/embeddings",
                    embed,
                    30 if quick else 200,
                    target.headers,
                )
            ),
        )
    if target.process is not None:
        results.add("RSS after load MB", target.process.rss_mb())
    if target.redis_port is not None:
        key = target.headers["authorization"].removeprefix("Bearer ")
        calls = keys_targets.redis_calls_per_request(target.redis_port, chat, key, CHAT)
        results.add("redis calls/req", calls)


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
    ("embeddings 64x1536 added p50 ms", "embeddings 64x1536, c=1: added, paired with direct (ms)"),
    ("idle RSS MB", "idle RSS (MB)"),
    ("RSS after load MB", "RSS after load (MB)"),
    ("startup s", "start to first served request (s)"),
)


NOTES = {
    "gateway-granian": "gateway-granian: the gateway served by granian instead of uvicorn; CPU "
    "and RSS include granian's supervisor process.",
    "gateway-w2": "gateway-w2: two uvicorn workers pinned to cores 0 and 1, which the upstream "
    "and the load drivers share; CPU and RSS are summed over all its processes (supervisor, "
    "both workers and multiprocessing's resource tracker).",
}


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
    if notes := [NOTES[name] for name in names if name in NOTES]:
        lines += ["", *notes]
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
    wanted = [name.strip() for name in args.targets.split(",") if name.strip()]
    known = {"direct", *LOCAL_STARTERS, *PEER_STARTERS}
    if unknown := [name for name in wanted if name not in known]:
        print(f"unknown targets {unknown}; known: {sorted(known)}", file=sys.stderr)
        return 2
    by_target: dict[str, Measure] = {name: Measure() for name in wanted}
    skipped: set[str] = set()
    upstream_port = free_port()
    upstream = start_upstream(upstream_port, chunks=20)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    try:
        for run in range(args.runs):
            for name in wanted:
                if name in skipped:
                    continue
                print(f"run {run + 1}/{args.runs}: {name}", file=sys.stderr)
                if name == "direct":
                    target = Target("direct", upstream_url)
                elif name in LOCAL_STARTERS:
                    target = LOCAL_STARTERS[name](upstream_url)
                else:
                    try:
                        target = PEER_STARTERS[name](upstream_url)
                    except Exception as error:  # a missing peer must not end the run
                        print(f"skipping {name}: {error}", file=sys.stderr)
                        skipped.add(name)
                        continue
                try:
                    if target.startup_s is not None:
                        by_target[name].add("startup s", target.startup_s)
                    if target.idle_rss_mb is not None:
                        by_target[name].add("idle RSS MB", target.idle_rss_mb)
                    measure(target, by_target[name], args.quick, upstream_url)
                except Exception as error:
                    if name not in PEER_STARTERS:
                        raise
                    print(f"{name} failed under load, partial figures: {error!r}", file=sys.stderr)
                finally:
                    if target.process is not None:
                        target.process.stop()
    finally:
        upstream.stop()
    for name in skipped:
        if not by_target[name].values:
            del by_target[name]
    print(table(by_target))
    medians = {
        name: {key: m.median(key) for key, *_ in keys_targets.KEY_ROWS}
        for name, m in by_target.items()
    }
    if versus_static := keys_targets.keys_table(medians):
        print("\n" + versus_static)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({k: v.values for k, v in by_target.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
