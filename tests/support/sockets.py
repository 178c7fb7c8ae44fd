"""Bare loopback sockets: free ports, and requests whose every byte and hang-up a test decides."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson

from tests.support.values import GATEWAY_KEY


def free_port() -> int:
    """A loopback port free right now (for a child process to listen on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def closed_port() -> int:
    """A loopback port nobody listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def open_raw(port: int, path: str, body: dict[str, Any], key: str = GATEWAY_KEY) -> socket.socket:
    """POST `body` on a bare socket, so a test decides exactly when to hang up."""
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(head.encode() + payload)
    return conn


def read_until(conn: socket.socket, marker: bytes, timeout_s: float = 5.0) -> bytes:
    """Everything received until `marker` appears; fails after `timeout_s` or on close."""
    received = b""
    deadline = time.monotonic() + timeout_s
    while marker not in received:
        assert time.monotonic() < deadline, received
        part = conn.recv(65536)
        assert part, f"connection closed before {marker!r}: {received!r}"
        received += part
    return received
