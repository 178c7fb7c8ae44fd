"""TLS upstreams through UpstreamClient, as providers use it: the system's verification rules
(here with a test CA made by trustme, given as SSL_CERT_FILE), a hostname mismatch, an IP SAN, an
expired certificate, and SNI. A verification failure is its own error, said as such and never
retried: the same certificate fails the same way every time.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest
import trustme

from oai_gateway.errors import UpstreamError
from oai_gateway.upstream.client import UpstreamClient
from tests.upstream.test_http1 import OK_HEAD, RunLoop, ScriptedServer, Timer, run

__all__ = ["run"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA as the machine's trust store, for ssl.create_default_context()."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def server_context(cert: trustme.LeafCert, seen_names: list[str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    def record(_socket: object, name: str | None, _context: object) -> None:
        seen_names.append(name)

    context.sni_callback = record
    return context


async def answer(
    server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server.read_request(reader)
    writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
    await writer.drain()
    await reader.read()


async def get(host: str, port: int) -> bytes:
    client = UpstreamClient(
        base_url=f"https://{host}:{port}/v1",
        headers={},
        timeout_s=5,
        label="tls upstream",
        unreachable_hint="start it",
    )
    await client.start()
    try:
        response = await client.request("GET", "/models", request_id="r", timer=Timer())
        return await response.read()
    finally:
        await client.aclose()


@pytest.mark.usefixtures("trusted")
@pytest.mark.parametrize(
    ("identity", "host"), [("localhost", "localhost"), ("127.0.0.1", "127.0.0.1")]
)
def test_a_verified_certificate_by_name_or_ip_san_serves(
    ca: trustme.CA, identity: str, host: str, run: RunLoop
) -> None:
    names: list[str | None] = []

    async def scenario() -> None:
        context = server_context(ca.issue_cert(identity), names)
        async with ScriptedServer(answer, context) as server:
            assert await get(host, server.port) == b"{}"

    run(scenario())
    # SNI names the host; an IP address is never sent as SNI (RFC 6066 §3).
    assert names == ([host] if host == "localhost" else [None])


@pytest.mark.usefixtures("trusted")
@pytest.mark.parametrize(
    ("issue", "reason"),
    [
        (lambda ca: ca.issue_cert("other.example"), "Hostname mismatch"),
        (lambda ca: ca.issue_cert("127.0.0.2"), "IP address mismatch"),
        (
            lambda ca: ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
                not_after=datetime.datetime(2020, 2, 1, tzinfo=datetime.UTC),
            ),
            "certificate has expired",
        ),
        (lambda _ca: trustme.CA().issue_cert("localhost", "127.0.0.1"), "unable to get local"),
    ],
    ids=["hostname-mismatch", "ip-mismatch", "expired", "unknown-ca"],
)
def test_a_certificate_that_fails_verification_is_said_so_and_not_retried(
    ca: trustme.CA, issue: object, reason: str, run: RunLoop
) -> None:
    names: list[str | None] = []

    async def scenario() -> None:
        context = server_context(issue(ca), names)  # type: ignore[operator]
        host = "127.0.0.1" if "ip" in reason.lower() else "localhost"
        async with ScriptedServer(answer, context) as server:
            with pytest.raises(UpstreamError) as raised:
                await get(host, server.port)
            message = str(raised.value)
            assert "refused a secure connection: certificate verification failed" in message
            assert reason in message, message
            assert "not reachable" not in message
            assert server.requests == []  # the request never left

    run(scenario())
    assert len(names) == 1  # one handshake: not retried
