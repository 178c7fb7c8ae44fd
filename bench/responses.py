"""The Responses API's cost: native relay and translation, each beside its physical limit.

    uv run python bench/responses.py [--runs 3] [--pairs 400] [--streams 1000]

- native: a provider in `native` mode in front of the loopback upstream's own `/v1/responses`
  (exact OpenAI events, so they go out as their bytes). Added time to first event and added
  total, c=1, from back-to-back pairs (the direct call, then the same through the gateway) so
  that machine drift cancels; the median of the per-pair differences. The same pairs for a
  chat stream through the same provider give the figure to compare with. (`--alternate` lets
  the gateway go first in every other pair: two gateway requests then follow each other on
  one connection, which costs every route a few milliseconds on this machine.)
- translate: a provider in `translate` mode turning the upstream's chat stream into Responses
  events. Gateway CPU per stream (from /proc) against the same stream through
  `/chat/completions` on the same provider: the ratio is what translation costs.

The gateway is pinned to core 0, the upstream and this driver to core 1, as in bench/run.py.
Only 127.0.0.1; every loop is bounded. Prints one Markdown table of medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import KEY, Process, _wait_ready, free_port, pinned, start_upstream

CHUNKS = 20
REQUEST = {"model": "bench-model", "input": "Say something.", "stream": True}
CHAT = {"model": "bench-model", "messages": [{"role": "user", "content": "Say something."}]}
HEADERS = {"authorization": f"Bearer {KEY}"}
PROVIDERS = """\
[providers.native]
kind = "openai"
base_url = "{upstream}"
responses = "native"

[providers.translated]
kind = "openai"
base_url = "{upstream}"
responses = "translate"
"""


def start_gateway(upstream: str, workdir: Path) -> tuple[Process, str]:
    providers = workdir / "providers.toml"
    providers.write_text(PROVIDERS.format(upstream=upstream), encoding="utf-8")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "ALLOWED_API_KEYS": KEY,
        "PROVIDERS_FILE": str(providers),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }
    argv = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    process = Process(pinned(0, argv), env, workdir / "gateway.log")
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(
            _wait_ready(
                base + "/native/v1/responses", 20, {**REQUEST, "stream": False}, process=process
            )
        )
    except BaseException:
        process.stop()
        raise
    return process, base


async def _timed(session: aiohttp.ClientSession, url: str, body: object) -> tuple[float, float]:
    """(ms to the first event, ms to the end of the stream) for one streamed request."""
    started = time.perf_counter()
    first = 0.0
    async with session.post(url, json=body, headers=HEADERS) as reply:
        assert reply.status == 200, reply.status
        async for line in reply.content:
            if not first and line.startswith((b"event:", b"data:")):
                first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000


async def _paired(
    direct: str, through: str, body: object, pairs: int, alternate: bool
) -> tuple[float, float]:
    """Median added ms (first event, total) of the gateway over the direct call."""
    first: list[float] = []
    total: list[float] = []
    async with aiohttp.ClientSession() as a, aiohttp.ClientSession() as b:
        for _ in range(20):  # warm both paths and their connection pools
            await _timed(a, direct, body)
            await _timed(b, through, body)
        for i in range(pairs):
            if alternate and i % 2:
                g, d = await _timed(b, through, body), await _timed(a, direct, body)
            else:
                d, g = await _timed(a, direct, body), await _timed(b, through, body)
            first.append(g[0] - d[0])
            total.append(g[1] - d[1])
    return statistics.median(first), statistics.median(total)


async def _streams(url: str, body: object, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            await _timed(session, url, body)


def cpu_ms_per_stream(gateway: Process, url: str, body: object, count: int) -> float:
    asyncio.run(_streams(url, body, 50))  # warm-up, not counted
    before = gateway.cpu_s()
    asyncio.run(asyncio.wait_for(_streams(url, body, count), 600))
    return (gateway.cpu_s() - before) * 1000 / count


def one_run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    port = free_port()
    upstream_process = start_upstream(port, CHUNKS)
    upstream = f"http://127.0.0.1:{port}/v1"
    gateway, base = start_gateway(upstream, workdir)
    try:
        added_first, added_total = asyncio.run(
            asyncio.wait_for(
                _paired(
                    upstream + "/responses",
                    base + "/native/v1/responses",
                    REQUEST,
                    args.pairs,
                    args.alternate,
                ),
                600,
            )
        )
        chat_stream = {**CHAT, "stream": True}
        chat_first, chat_total = asyncio.run(
            asyncio.wait_for(
                _paired(
                    upstream + "/chat/completions",
                    base + "/native/v1/chat/completions",
                    chat_stream,
                    args.pairs,
                    args.alternate,
                ),
                600,
            )
        )
        translated = cpu_ms_per_stream(
            gateway, base + "/translated/v1/responses", REQUEST, args.streams
        )
        chat = cpu_ms_per_stream(
            gateway,
            base + "/translated/v1/chat/completions",
            {**CHAT, "stream": True},
            args.streams,
        )
    finally:
        gateway.stop()
        upstream_process.stop()
    return {
        "native added first event ms (p50)": added_first,
        "native added total ms (p50)": added_total,
        "chat stream added first chunk ms (p50), same pairs": chat_first,
        "chat stream added total ms (p50), same pairs": chat_total,
        "translate CPU ms/stream": translated,
        "chat CPU ms/stream (same upstream stream)": chat,
        "translate / chat CPU": translated / chat,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--alternate", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-responses-") as tmp:
        for run in range(args.runs):
            for key, value in one_run(args, Path(tmp)).items():
                results.setdefault(key, []).append(value)
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    print(f"| measure (c=1, {CHUNKS}-delta answers, median of {args.runs} runs) | value |")
    print("|---|---|")
    for key, values in results.items():
        print(f"| {key} | {statistics.median(values):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
