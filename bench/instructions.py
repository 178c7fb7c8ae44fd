"""CPU instructions the gateway process spends per request, counted by valgrind's callgrind.

    uv run python bench/instructions.py [--scenarios static,stream,vkey,vkey-sqlite,...]
        [--requests 400] [--concurrency 1,16] [--src OTHER_CHECKOUT/src]

Wall-clock figures (bench/run.py) swing by ±20 % when anything else runs on the machine; an
instruction count does not: callgrind counts the same total for the same code and inputs
whatever else the cores are doing. So this is the figure to compare two trees with (`--src`
runs another checkout's package with the same driver), and bench/run.py the figure to publish.

The gateway runs under `valgrind --tool=callgrind` (about 50x slower, which does not change the
count), is warmed up, its counters are zeroed (`callgrind_control -z`), then `--requests`
requests are sent at each concurrency and the counters dumped; the total over the requests is
the figure. The upstream (bench/upstream.py) and the client run natively. Needs valgrind
(`apt-get install valgrind`) and, for the Redis scenarios, redis-server. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keys_targets
from failover import PROVIDERS
from oai_gateway.keys.records import Limits
from run import CHAT, KEY, free_port, start_upstream

STREAM = {**CHAT, "stream": True}
_SUMMARY = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)


@dataclass
class Scenario:
    body: dict[str, Any]
    env: Callable[[str, Path], dict[str, str]]
    key: Callable[[dict[str, str]], str] = lambda env: KEY
    provider: str = "custom"


def _static(upstream: str, work: Path) -> dict[str, str]:
    return {"CUSTOM_BASE_URL": upstream, "ALLOWED_API_KEYS": KEY}


def _store(kind: str, limits: Limits, *, static_key: bool = False) -> Scenario:
    def env(upstream: str, work: Path) -> dict[str, str]:
        url = keys_targets.store_url(kind, lambda cores, argv: argv)
        return {
            **_static(upstream, work),
            "STORE_URL": url,
            "BENCH_KEY": keys_targets.issue_key(url, limits),
        }

    if static_key:  # the store and its ledger, but the request carries the static key
        return Scenario(CHAT, env)
    return Scenario(CHAT, env, key=lambda env: env["BENCH_KEY"])


def _two(upstream: str, work: Path) -> dict[str, str]:
    providers = work / "providers.toml"
    # failover.py's providers file; its `two` is the one provider with two upstreams.
    providers.write_text(PROVIDERS.format(a=upstream, b=upstream), encoding="utf-8")
    return {"PROVIDERS_FILE": str(providers), "ALLOWED_API_KEYS": KEY}


SCENARIOS: dict[str, Scenario] = {
    "static": Scenario(CHAT, _static),
    "stream": Scenario(STREAM, _static),
    "static-sqlite": _store("sqlite", Limits(), static_key=True),
    "static-redis": _store("redis", Limits(), static_key=True),
    "vkey": _store("sqlite", Limits()),
    "vkey-sqlite": _store("sqlite", keys_targets.HIGH),
    "vkey-redis": _store("redis", keys_targets.HIGH),
    # The same providers file's provider with one `base_url`: what two upstreams are compared to.
    "one-upstream": Scenario(CHAT, _two, provider="one"),
    "two-upstreams": Scenario(CHAT, _two, provider="two"),
}


async def _send(url: str, key: str, body: dict[str, Any], count: int, concurrency: int) -> None:
    headers = {"authorization": f"Bearer {key}"}
    remaining = [count]
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(session: aiohttp.ClientSession) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with session.post(url, json=body, headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"status {reply.status}: {await reply.text()}")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def _instructions(pid: int, out: Path) -> int:
    """Dump the counters of the running gateway and sum what the dump files hold."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        if dump.name != out.name:  # the files named with a dump number
            total += sum(int(n) for n in _SUMMARY.findall(dump.read_bytes()))
            dump.unlink()
    return total


def measure(name: str, src: str | None, requests: int, concurrencies: list[int]) -> list[str]:
    scenario = SCENARIOS[name]
    work = Path(tempfile.mkdtemp(prefix="oai-gateway-bench-instr-"))
    upstream_port = free_port()
    upstream = start_upstream(upstream_port, 20)
    env = {**os.environ, "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    env.update(scenario.env(f"http://127.0.0.1:{upstream_port}/v1", work))
    if src:
        env["PYTHONPATH"] = src
    port = free_port()
    out = work / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    argv += [sys.executable, "-m", "oai_gateway", "serve", "--port", str(port)]
    gateway = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/{scenario.provider}/v1/chat/completions"
    key = scenario.key(env)
    rows = []
    try:
        _wait(url, key, scenario.body, gateway)
        asyncio.run(_send(url, key, scenario.body, 100, max(concurrencies)))
        for concurrency in concurrencies:
            _instructions(gateway.pid, out)  # zeroes by dumping what came before
            asyncio.run(_send(url, key, scenario.body, requests, concurrency))
            time.sleep(1.0)  # settlements and ledger writes that follow the last answers
            per = _instructions(gateway.pid, out) / requests
            rows.append(f"| {name} | {concurrency} | {per / 1000:,.1f} |")
    finally:
        gateway.terminate()
        gateway.wait(60)
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _wait(url: str, key: str, body: dict[str, Any], gateway: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise RuntimeError("the gateway exited during start-up")
        try:
            asyncio.run(_send(url, key, body, 1, 1))
            return
        except (aiohttp.ClientError, RuntimeError, OSError):
            time.sleep(0.5)
    raise RuntimeError("the gateway did not answer within 180 s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="static,stream")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--src", help="run the gateway package from this src/ directory")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print("| scenario | concurrency | thousand instructions per request |")
    print("|---|---|---|")
    for name in args.scenarios.split(","):
        for row in measure(name, args.src, args.requests, concurrencies):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
