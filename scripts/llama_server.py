"""Start, wait for and stop one `llama-server` process (stdlib only).

Shared by the e2e tests, `scripts/demo.py` and `bench/real_llm.py`, so all of them run the
server the same way: the binary directly (not the `llama-cpp-server` wrapper, whose stop leaves
the real server running), on loopback, with the arguments `setup_llm.py` recorded, stopped by
PID with SIGTERM and then SIGKILL after a bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from setup_llm import State

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
_BIND_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _health_status(url: str) -> int | None:
    """/health's status, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:  # 503 while the model loads
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class LlamaServer:
    """One llama-server on a free loopback port; a context manager that always stops it."""

    def __init__(
        self, state: State, log_path: Path, *, extra_args: Sequence[str] = (), port: int = 0
    ) -> None:
        self.state = state
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, as a client or the gateway's CUSTOM_BASE_URL wants it."""
        return self.url + "/v1"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        return [
            self.state["llama_server"],
            "-m", self.state["model"],
            "--host", HOST,
            "--port", str(self.port),
            *self.state["server_args"],
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start it and wait until /health says 200; retry on a port taken meanwhile."""
        fixed_port = self.port != 0
        for attempt in range(_BIND_ATTEMPTS):
            if not fixed_port:
                self.port = free_port()
            self._log = self.log_path.open("ab")
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the parent is the parent's to handle
            )
            if self._wait_ready(timeout_s):
                return
            self.stop()
            if fixed_port or attempt == _BIND_ATTEMPTS - 1 or "bind" not in self.log_tail():
                break
        raise RuntimeError(
            f"llama-server did not become ready on {self.url} within {timeout_s:.0f}s; "
            f"the end of its log ({self.log_path}):\n{self.log_tail()}"
        )

    def _wait_ready(self, timeout_s: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _health_status(self.url) == 200:
                return True
            time.sleep(0.05)
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM by PID, SIGKILL if it is still there after `timeout_s`; always reaped."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
