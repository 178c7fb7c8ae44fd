"""Bench targets for virtual keys (`bench/run.py --targets gateway,gateway-vkey,...`).

- `gateway-vkey`: a virtual key without limits or budget (SQLite store): the cached lookup only.
- `gateway-vkey-sqlite`: a virtual key with rpm + tpm limits on a SQLite store.
- `gateway-vkey-redis`: the same on a Redis store (redis-server on loopback, pinned to core 1
  with the upstream and the load drivers).

The limits are far above what the load reaches, so every request runs the whole admission
and settlement without being refused. On SQLite a limited key starts with the window of a key
in steady use (`fill_window`): a request in each of the last 60 one-second slots. For Redis
the script calls per request are counted from INFO commandstats over a fixed number of
sequential requests.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from oai_gateway.keys.records import KeyRecord, Limits, now_iso
from oai_gateway.keys.secrets import SecretHasher, full_key, new_id, new_secret, parse_key
from oai_gateway.keys.store import WINDOW_S, open_store

HIGH = Limits(rpm=1_000_000_000, tpm=1_000_000_000_000)
COUNTED_REQUESTS = 200
_WORK = Path(tempfile.mkdtemp(prefix="oai-gateway-bench-keys-"))
_redis: list[tuple[subprocess.Popen[bytes], int]] = []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_port(pinned: Callable[[int | str, list[str]], list[str]]) -> int:
    """One redis-server for the whole run, no persistence, stopped at exit."""
    if _redis:
        return _redis[0][1]
    port = _free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(pinned(1, argv), stdout=subprocess.DEVNULL)
    _redis.append((process, port))
    atexit.register(process.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis_command(port, "PING").startswith(b"+PONG"):
                return port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def redis_command(port: int, command: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(command.encode() + b"\r\n")
        time.sleep(0.05)
        return conn.recv(1 << 20)


def store_url(kind: str, pinned: Callable[[int | str, list[str]], list[str]]) -> str:
    if kind == "redis":
        return f"redis://127.0.0.1:{redis_port(pinned)}/0"
    return f"sqlite:///{_WORK / f'store-{time.monotonic_ns()}.db'}"


def issue_key(url: str, limits: Limits) -> str:
    async def run() -> str:
        store = open_store(url)
        await store.start()
        try:
            secret = new_secret()
            record = KeyRecord(
                id=new_id(),
                secret_hash=SecretHasher(await store.pepper()).hash(secret),
                name="bench",
                created_at=now_iso(),
                limits=limits,
            )
            await store.create_key(record)
            return full_key(record.id, secret)
        finally:
            await store.aclose()

    key = asyncio.run(run())
    if limits.rpm is not None or limits.tpm is not None:
        fill_window(url, key)
    return key


def fill_window(url: str, key: str) -> None:
    """Give a SQLite key the window of a key in steady use: a request in each of the last 60
    one-second slots (a bench run under valgrind is too slow to reach that by itself)."""
    parsed = parse_key(key)
    if not url.startswith("sqlite:///") or parsed is None:
        return
    width = WINDOW_S / 60
    now_slot = math.floor(time.time() / width)
    rows = [(parsed.key_id, slot, 1, 1) for slot in range(now_slot - 59, now_slot + 1)]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.executemany("INSERT INTO key_slots VALUES (?, ?, ?, ?)", rows)


def store_calls(port: int) -> int:
    """EVALSHA calls the Redis server answered so far (INFO commandstats). The commands the
    scripts run inside Redis are counted there too, so only the calls themselves are taken."""
    text = redis_command(port, "INFO commandstats").decode()
    for line in text.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


async def _sequential(url: str, key: str, body: dict[str, Any], count: int) -> None:
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(url, json=body, headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, reply.status


def redis_calls_per_request(port: int, url: str, key: str, body: dict[str, Any]) -> float:
    """Redis commands per request, counted over COUNTED_REQUESTS sequential requests."""
    before = store_calls(port)
    asyncio.run(_sequential(url, key, body, COUNTED_REQUESTS))
    time.sleep(0.2)  # the settlements of the last requests run after their answers
    return (store_calls(port) - before) / COUNTED_REQUESTS


KEY_ROWS = (
    ("chat c=1 p50 ms", "chat, c=1: added p50 over the static key (ms)", "added"),
    ("chat c=64 req/s", "chat, c=64: requests/s vs the static key", "ratio"),
    ("stream c=16 streams/s", "stream, c=16: streams/s vs the static key", "ratio"),
    ("stream c=64 streams/s", "stream, c=64: streams/s vs the static key", "ratio"),
    ("redis calls/req", "Redis script calls (EVALSHA) per request", "value"),
)


def keys_table(medians: dict[str, dict[str, float | None]]) -> str:
    """Each virtual-key target against the static-key `gateway` target."""
    names = [n for n in medians if n.startswith("gateway-vkey")]
    if not names or "gateway" not in medians:
        return ""
    lines = ["| virtual keys | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    base = medians["gateway"]
    for key, label, how in KEY_ROWS:
        cells = []
        for name in names:
            value, static = medians[name].get(key), base.get(key)
            if value is None or (how != "value" and static is None):
                cells.append("—")
            elif how == "added":
                cells.append(f"{value - static:+.3f}")  # type: ignore[operator]
            elif how == "ratio":
                cells.append(f"{value / static:.2f}x")  # type: ignore[operator]
            else:
                cells.append(f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
