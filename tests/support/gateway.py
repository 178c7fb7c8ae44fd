"""Runs the real gateway (uvicorn + the app from `create_app`) on loopback for the tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from oai_gateway.app import GatewayApp, create_app
from oai_gateway.config.loader import Config
from oai_gateway.config.providers_file import read_providers_file
from oai_gateway.config.settings import Settings, builtin_providers
from oai_gateway.server.asgi import ASGIApp
from oai_gateway.server.protocol import EnvelopeHttpToolsProtocol
from tests.support.spec import SpecCheckingApp, load_spec
from tests.support.values import GATEWAY_KEY

START_TIMEOUT_S = 10.0


class ExplicitSettings(Settings):
    """Settings from the values passed in alone: no environment variable and no `.env` file.

    A developer's shell (a real CEREBRAS_API_KEY, ALLOWED_API_KEYS, CORS_ALLOW_ORIGINS…) must not
    change what a test's gateway does, nor send its readiness checks to a real provider.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def make_config(
    *, env: dict[str, str] | None = None, providers_file: str | None = None, **values: Any
) -> Config:
    """A Config from explicit values only, never the machine's environment or `.env`."""
    settings = ExplicitSettings(**values)
    providers = {p.name: p for p in builtin_providers(settings)}
    if providers_file is not None:
        named, problems = read_providers_file(
            Path(providers_file), env or {}, settings.request_timeout_s
        )
        assert not problems, problems
        providers.update((p.name, p) for p in named)
    return Config(settings, tuple(providers.values()))


class LoopbackServer:
    """An ASGI app served by uvicorn in a background thread, on a free loopback port."""

    def __init__(
        self, app: ASGIApp, http: type[asyncio.Protocol] = EnvelopeHttpToolsProtocol
    ) -> None:
        # IPPROTO_TCP, not 0: asyncio only disables Nagle (TCP_NODELAY) on sockets that say TCP.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        uv_config = uvicorn.Config(
            app,
            loop="asyncio",
            http=http,
            ws="none",
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        self.loop.close()

    def start(self) -> None:
        self._thread.start()
        started = threading.Event()

        def poll() -> None:
            for _ in range(int(START_TIMEOUT_S / 0.01)):
                if self._server.started:
                    started.set()
                    return
                threading.Event().wait(0.01)

        poll()
        if not started.is_set():
            raise RuntimeError("the gateway did not start in time")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT_S)
        self._socket.close()

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


class GatewayServer(LoopbackServer):
    """The gateway from `create_app`, every response it sends checked against OpenAI's spec."""

    def client(self, key: str | None = GATEWAY_KEY, *, timeout_s: float = 10) -> httpx.Client:
        """An httpx client of this gateway sending `key` as its bearer token (None: no key)."""
        headers = {} if key is None else {"authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def __init__(
        self, config: Config, http: type[asyncio.Protocol] = EnvelopeHttpToolsProtocol
    ) -> None:
        load_spec()  # before serving: the first check must not stall the gateway's event loop
        self.app: GatewayApp = create_app(config)
        super().__init__(SpecCheckingApp(self.app), http)


@contextmanager
def gateway_client(config: Config, key: str | None = GATEWAY_KEY) -> Iterator[httpx.Client]:
    """A gateway from `config` and a client of it sending `key`, both closed afterwards."""
    with GatewayServer(config) as server, server.client(key) as http:
        yield http
