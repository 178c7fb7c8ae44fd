"""`oai-gateway serve` and the other commands as real child processes, for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import pytest

START_TIMEOUT_S = 15.0
EXIT_TIMEOUT_S = 5.0


def command(entry: str, *args: str) -> list[str]:
    """`python -m oai_gateway ...` or the installed `oai-gateway` console script."""
    if entry == "module":
        return [sys.executable, "-m", "oai_gateway", *args]
    script = Path(sys.executable).parent / "oai-gateway"
    assert script.is_file(), f"console script missing at {script}"
    return [str(script), *args]


def base_env(home: Path, **values: str) -> dict[str, str]:
    """Only what a process needs to run, so the machine's own settings cannot leak in."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    # Under `--cov`, coverage's `patch = ["subprocess"]` (pyproject.toml) sets
    # COVERAGE_PROCESS_CONFIG; passing it on is what lets the children be measured too.
    env.update({k: v for k, v in os.environ.items() if k.startswith(("COV_CORE_", "COVERAGE_"))})
    env.update(values)
    return env


def run(
    entry: str, args: Sequence[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(entry, *args),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


class GatewayProcess:
    """`oai-gateway serve` as a child process; its stderr (the log) goes to a file."""

    def __init__(
        self, entry: str, args: Sequence[str], env: Mapping[str, str], cwd: Path, port: int
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = cwd / f"gateway-{port}.log"
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command(entry, "serve", *args),
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"gateway not healthy within {START_TIMEOUT_S}s:\n{self.log()}")

    def terminate(self) -> int:
        """SIGTERM, then the exit status, which must come within EXIT_TIMEOUT_S."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            self._close()

    def _close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        self._log_file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()
