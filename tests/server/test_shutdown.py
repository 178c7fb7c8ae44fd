"""Graceful shutdown of a real `oai-gateway serve` process on SIGTERM (SHUTDOWN_GRACE_S)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.processes import GatewayProcess, base_env
from tests.support.sockets import free_port
from tests.support.values import chat_body

EXIT_BOUND_S = 5.0


@pytest.fixture
def slow_upstream() -> Iterator[OpenAICompatUpstream]:
    """Its own upstream, so pacing the stream cannot disturb the shared ones."""
    with OpenAICompatUpstream(api_key=CUSTOM_KEY, chunk_delay_s=0.1, stream_chunks=12) as server:
        yield server


class StreamReader:
    """Reads one streaming chat answer in a thread; `first_chunk` is set once data flows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.first_chunk = threading.Event()
        self.text = ""
        self.status = 0
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
        body = chat_body("custom", stream=True)
        try:
            with (
                httpx.Client(timeout=15) as http,
                http.stream(
                    "POST", f"{self.url}/custom/v1/chat/completions", json=body, headers=headers
                ) as response,
            ):
                self.status = response.status_code
                for part in response.iter_text():
                    self.text += part
                    if "data: {" in self.text:
                        self.first_chunk.set()
        except httpx.HTTPError as exc:  # the cut stream surfaces as a protocol error
            self.failure = exc
        finally:
            self.first_chunk.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream reader never finished"


def refuses_connections(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


def start_gateway(tmp_path: Path, upstream: OpenAICompatUpstream, grace: str) -> GatewayProcess:
    port = free_port()
    env = base_env(
        tmp_path,
        SERVICE_PORT=str(port),
        ALLOWED_API_KEYS=GATEWAY_KEY,
        CUSTOM_BASE_URL=upstream.base_url + "/v1",
        CUSTOM_API_KEY=CUSTOM_KEY,
        SHUTDOWN_GRACE_S=grace,
    )
    gateway = GatewayProcess("module", [], env, tmp_path, port)
    gateway.wait_healthy()
    return gateway


def test_sigterm_lets_an_inflight_stream_finish(
    tmp_path: Path, slow_upstream: OpenAICompatUpstream
) -> None:
    with start_gateway(tmp_path, slow_upstream, "10") as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        reader = StreamReader(gateway.url)
        assert reader.first_chunk.wait(5), "the stream never started"
        assert "[DONE]" not in reader.text, "the stream was too quick to be in flight"
        gateway.process.send_signal(signal.SIGTERM)
        assert refuses_connections(port, 2.0), "still accepting after SIGTERM"
        reader.join(10)
        code = gateway.process.wait(timeout=EXIT_BOUND_S)
    assert reader.failure is None, reader.failure
    assert reader.status == 200
    assert reader.text.endswith("data: [DONE]\n\n"), reader.text[-200:]
    assert reader.text.count("data: {") == 1 + 12 + 1  # role, 12 content pieces, finish
    assert code == 0, gateway.log()
    assert "Traceback" not in gateway.log()


def test_stream_longer_than_the_grace_period_is_cut(
    tmp_path: Path, slow_upstream: OpenAICompatUpstream
) -> None:
    slow_upstream.chunk_delay_s, slow_upstream.stream_chunks = 0.2, 60  # 12 s
    grace = 1.0
    with start_gateway(tmp_path, slow_upstream, str(grace)) as gateway:
        reader = StreamReader(gateway.url)
        assert reader.first_chunk.wait(5), "the stream never started"
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        code = gateway.process.wait(timeout=grace + EXIT_BOUND_S)
        elapsed = time.monotonic() - started
        reader.join(5)
        log = gateway.log()
    assert code == 0, log
    # The grace period is waited out; the end is bounded by the wait above and comes long before
    # the 12 s stream could finish, as the missing [DONE] shows.
    assert elapsed > grace - 0.2, elapsed
    assert "data: [DONE]" not in reader.text
    # The client is told why its stream ended, and the log has no traceback for it.
    last = reader.text.rstrip().rsplit("\n\n", 1)[-1]
    assert last.startswith("data: {"), reader.text[-300:]
    error = orjson.loads(last.removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down", error
    assert error["type"] == "api_error", error
    assert "Traceback" not in log, log
    # Cutting the client's stream also closes the upstream call (pools closed on the way out).
    assert slow_upstream.wait_for_disconnect(2.0), "the upstream stream was left running"


def test_a_plain_request_outliving_the_grace_period_gets_a_503(
    tmp_path: Path, slow_upstream: OpenAICompatUpstream
) -> None:
    slow_upstream.fault = Fault(kind="delay_headers", delay_s=6.0)
    outcome: list[httpx.Response] = []

    def ask() -> None:
        headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
        with httpx.Client(timeout=15) as http:
            url = f"{gateway.url}/custom/v1/chat/completions"
            outcome.append(http.post(url, json=chat_body("custom"), headers=headers))

    with start_gateway(tmp_path, slow_upstream, "0.5") as gateway:
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        assert slow_upstream.wait_for_requests(1, 5.0), "the request never reached the upstream"
        gateway.process.send_signal(signal.SIGTERM)
        code = gateway.process.wait(timeout=EXIT_BOUND_S)
        asking.join(5)
        log = gateway.log()
    assert code == 0, log
    assert outcome, "the client got no answer"
    response = outcome[0]
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "server_shutting_down", error
    assert error["type"] == "api_error", error
    assert "Traceback" not in log, log
