"""Gateway replicas as real `oai-gateway serve` processes sharing one store, and the helpers to
issue keys straight into that store (as the CLI does)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from msgspec.structs import replace

from oai_gateway.keys.records import KeyRecord
from oai_gateway.keys.secrets import SecretHasher, full_key, new_secret
from oai_gateway.keys.store import Store, open_store
from tests.keys.contract import record
from tests.support.log_guard import virtual_keys_in
from tests.support.sockets import free_port

START_TIMEOUT_S = 20.0


class Replica:
    """One `oai-gateway serve` process; its log goes to a file the test can read."""

    def __init__(self, env: Mapping[str, str], cwd: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / f"replica-{self.port}.log"
        self._log = self.log_path.open("wb")
        base = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "PYTHONUNBUFFERED": "1"}
        base.update({k: v for k, v in os.environ.items() if k.startswith(("COV_", "COVERAGE_"))})
        command = [sys.executable, "-m", "oai_gateway", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env={**base, **env},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"replica not healthy in {START_TIMEOUT_S}s:\n{self.log()}")

    def close(self) -> None:
        self._stop()
        leaked = virtual_keys_in(self.log())
        assert not leaked, f"full virtual keys in the replica's log: {len(leaked)}"

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Self:
        self.wait_healthy()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


async def issue(store: Store, **values: Any) -> tuple[KeyRecord, str]:
    """A new key in `store`: its record and the full `sk-gw-…` key, shown once."""
    secret = new_secret()
    made = replace(record(**values), secret_hash=SecretHasher(await store.pepper()).hash(secret))
    await store.create_key(made)
    return made, full_key(made.id, secret)


def issue_in(url: str, **values: Any) -> tuple[KeyRecord, str]:
    async def run() -> tuple[KeyRecord, str]:
        store = open_store(url)
        await store.start()
        try:
            return await issue(store, **values)
        finally:
            await store.aclose()

    return asyncio.run(run())


def update_in(url: str, changed: KeyRecord) -> None:
    async def run() -> None:
        store = open_store(url)
        await store.start()
        try:
            await store.put_key(changed)
        finally:
            await store.aclose()

    asyncio.run(run())


async def burst(
    urls: list[str], key: str, path: str, body: dict[str, Any], count: int
) -> list[httpx.Response]:
    """`count` requests at once, spread over the replicas in turn."""
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=count)) as http:
        return await asyncio.gather(
            *(
                http.post(urls[i % len(urls)] + path, json=body, headers=headers)
                for i in range(count)
            )
        )


POLL_EVERY_S = 0.05
POLL_FOR_S = 5.0  # bounds the wait; the 1 s guarantee is the cache's TTL (keys/cache.py)


def until_status(
    url: str, key: str, path: str, body: dict[str, Any], status: int
) -> tuple[httpx.Response, float]:
    """Sends the request every POLL_EVERY_S until it answers `status` or POLL_FOR_S has
    passed: the last answer, and the seconds from the first request to it."""
    headers = {"authorization": f"Bearer {key}"}
    started = time.monotonic()
    while True:
        reply = httpx.post(url + path, json=body, headers=headers, timeout=10)
        waited = time.monotonic() - started
        if reply.status_code == status or waited > POLL_FOR_S:
            return reply, waited
        time.sleep(POLL_EVERY_S)
