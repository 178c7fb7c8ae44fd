"""Fixtures for the store tests: one real Redis per session, and a fresh store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.keys.redis_server import RedisServer

BACKENDS = ("memory", "sqlite", "redis")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def store_url(backend: str, tmp_path: Path, redis_server: RedisServer) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    return store_url(backend, tmp_path, redis)  # type: ignore[arg-type]
