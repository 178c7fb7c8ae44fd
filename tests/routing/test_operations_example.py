"""The worked example of docs/operations.md, exactly as printed there: it validates, and with
its servers on loopback it routes, fails over and falls back as the doc says."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from oai_gateway.config.providers_file import fallback_problems
from oai_gateway.errors import GatewayError
from oai_gateway.providers.base import Operation
from oai_gateway.wire.requests import RequestFacts
from tests.routing.rig import Rig, context, served, upstreams
from tests.support.fake_upstreams.cerebras import CerebrasUpstream
from tests.support.gateway import GatewayServer, make_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
CEREBRAS_KEY = "csk-operations-example-key"


def example() -> str:
    section = DOC.read_text(encoding="utf-8").split("### Worked example", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found is not None, "the worked example lost its TOML block"
    return found.group(1)


def test_the_example_validates_as_printed(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(example(), encoding="utf-8")
    config = make_config(
        providers_file=str(path), allowed_api_keys=["k"], cerebras_api_key=CEREBRAS_KEY
    )
    providers = {p.name: p for p in config.providers}
    assert fallback_problems(path, providers) == []
    local = providers["local"]
    assert [u.base_url for u in local.upstreams] == [
        "http://127.0.0.1:8001/v1",
        "http://127.0.0.1:8002/v1",
    ]
    assert local.fallbacks == {"llama-3.1-8b": ("cerebras/llama3.1-8b",)}


@pytest.mark.parametrize("stopped", [0, 1, 2])
def test_the_example_routes_fails_over_and_falls_back(tmp_path: Path, stopped: int) -> None:
    with (
        upstreams(2, models=["llama-3.1-8b"]) as local,
        CerebrasUpstream(api_key=CEREBRAS_KEY) as cloud,
    ):
        text = example()
        for port, server in zip((8001, 8002), local, strict=True):
            text = text.replace(f"http://127.0.0.1:{port}/v1", f"{server.base_url}/v1")
        path = tmp_path / "providers.toml"
        path.write_text(text, encoding="utf-8")
        config = make_config(
            providers_file=str(path),
            allowed_api_keys=["k"],
            cerebras_api_key=CEREBRAS_KEY,
            cerebras_base_url=cloud.base_url + "/v1",
        )
        rig = Rig(tmp_path, "", specs=config.providers)
        for server in local[:stopped]:
            server.stop()

        async def work(rig: Rig) -> list[tuple[object, str | None, int]]:
            results = []
            for _ in range(6):
                ctx, request = context()
                body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
                try:
                    answered = await rig.local.generate(
                        ctx, Operation.CHAT, body, RequestFacts("llama-3.1-8b")
                    )
                    answer: object = orjson.loads(answered.body)
                except GatewayError as exc:
                    answer = exc
                results.append((answer, request.upstream, request.attempts))
            return results

        results = rig.run(work)
        cloud_calls = served([cloud])[0]
    assert all(isinstance(answer, dict) for answer, _, _ in results), results
    if stopped == 0:
        assert {u for _, u, _ in results} <= {"local/0", "local/1"}
        assert sum(served(local)) == 6
        assert cloud_calls == 0
    elif stopped == 1:
        assert {u for _, u, _ in results} == {"local/1"}
        assert cloud_calls == 0
    else:
        assert {u for _, u, _ in results} == {"cerebras/0"}
        assert all(a == 3 for _, _, a in results[:5])  # until the breakers open
        assert cloud_calls == 6
        assert all(answer["model"] == "llama3.1-8b" for answer, _, _ in results)  # type: ignore[index]
        assert cloud.requests[-1].json["model"] == "llama3.1-8b"


def test_the_example_through_the_gateway_answers_from_the_fallback(tmp_path: Path) -> None:
    with (
        upstreams(2, models=["llama-3.1-8b"]) as local,
        CerebrasUpstream(api_key=CEREBRAS_KEY) as cloud,
    ):
        text = example()
        for port, server in zip((8001, 8002), local, strict=True):
            text = text.replace(f"http://127.0.0.1:{port}/v1", f"{server.base_url}/v1")
            server.stop()
        path = tmp_path / "providers.toml"
        path.write_text(text, encoding="utf-8")
        config = make_config(
            providers_file=str(path),
            allowed_api_keys=["k"],
            cerebras_api_key=CEREBRAS_KEY,
            cerebras_base_url=cloud.base_url + "/v1",
        )
        body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
        with GatewayServer(config) as gateway:
            reply = httpx.post(
                f"{gateway.url}/local/v1/chat/completions",
                json=body,
                headers={"authorization": "Bearer k"},
                timeout=10,
            )
    assert reply.status_code == 200
    assert reply.headers["x-gateway-upstream"] == "cerebras/0"
    assert reply.headers["x-gateway-attempts"] == "3"
    assert reply.json()["model"] == "llama3.1-8b"
