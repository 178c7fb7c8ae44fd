"""The composition root's lifespan: a gateway that cannot start says so and does not serve."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from oai_gateway.app import create_app
from oai_gateway.server.asgi import Message
from tests.support.gateway import make_config
from tests.support.sockets import free_port

NOT_A_DATABASE = b"this file is no SQLite database, though its name says one " * 4


def broken_store(tmp_path: Path) -> str:
    """A STORE_URL that passes the configuration check but cannot be opened."""
    path = tmp_path / "gateway.db"
    path.write_bytes(NOT_A_DATABASE)
    return f"sqlite:///{path}"


def test_a_startup_failure_is_reported_to_the_server(tmp_path: Path) -> None:
    app = create_app(make_config(store_url=broken_store(tmp_path)))
    sent: list[Message] = []

    async def lifespan() -> None:
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        inbox.put_nowait({"type": "lifespan.startup"})

        async def send(message: Message) -> None:
            sent.append(message)

        await asyncio.wait_for(app({"type": "lifespan"}, inbox.get, send), 10)

    asyncio.run(lifespan())
    assert sent == [{"type": "lifespan.startup.failed", "message": "file is not a database"}]


def test_serve_exits_with_the_reason_when_startup_fails(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "STORE_URL": broken_store(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "oai_gateway", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 3, done.stderr  # uvicorn's status for a failed startup
    assert "file is not a database" in done.stderr
    assert "Application startup failed" in done.stderr
    assert "Traceback" not in done.stderr
