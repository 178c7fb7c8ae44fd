"""Routed providers through the real gateway over HTTP (SPEC §11): the attempt headers, the
SDK told not to retry, the commit point of streams, /readyz, /metrics and the access line."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from oai_gateway.observability import log
from tests.routing.rig import BODY, providers_toml, served, upstreams
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.fake_upstreams.base import openai_error_body
from tests.support.gateway import GatewayServer, make_config
from tests.support.sockets import open_raw

KEY = "gateway-routing-test-key"


@contextmanager
def gateway(tmp_path: Path, text: str) -> Iterator[httpx.Client]:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    config = make_config(providers_file=str(path), allowed_api_keys=[KEY])
    with GatewayServer(config) as server, server.client(KEY) as client:
        yield client


def chat(client: httpx.Client, provider: str = "local", **extra: object) -> httpx.Response:
    return client.post(f"/{provider}/v1/chat/completions", json={**BODY, **extra})


def test_answers_name_the_serving_upstream_and_the_attempts(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        broken, healthy = servers
        broken.fault = Fault("status", status=503, body=openai_error_body("busy", "server_error"))
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            replies = [chat(client) for _ in range(6)]
            stream = chat(client, stream=True)
    assert all(r.status_code == 200 for r in replies)
    assert {r.headers["x-gateway-upstream"] for r in replies} == {"local/1"}
    assert {r.headers["x-gateway-attempts"] for r in replies} == {"1", "2"}
    assert all("x-should-retry" not in r.headers for r in replies)
    assert all(healthy.base_url not in str(r.headers) for r in replies)
    assert stream.status_code == 200
    assert stream.headers["x-gateway-upstream"] == "local/1"
    assert stream.text.endswith("data: [DONE]\n\n")


def test_a_spent_budget_tells_the_sdk_not_to_retry(tmp_path: Path) -> None:
    with upstreams(3) as servers:
        for server in servers:
            server.fault = Fault(
                "status", status=503, body=openai_error_body("down", "server_error")
            )
        text = providers_toml([s.base_url for s in servers], "max_attempts = 2\n")
        with gateway(tmp_path, text) as client:
            sdk = openai.OpenAI(
                base_url=f"{str(client.base_url).rstrip('/')}/local/v1",
                api_key=KEY,
                max_retries=2,
                timeout=10,
            )
            with pytest.raises(openai.InternalServerError) as caught:
                sdk.chat.completions.create(model="gpt-test", messages=BODY["messages"])
            counts = served(servers)
    response = caught.value.response
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-gateway-attempts"] == "2"
    assert sum(counts) == 2  # the SDK's own two retries did not happen


def test_out_of_candidates_before_the_budget_leaves_the_sdk_its_retries(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        for server in servers:
            server.fault = Fault("status", status=503)
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            reply = chat(client)
    assert reply.status_code == 502
    assert reply.headers["x-gateway-attempts"] == "2"
    assert "x-should-retry" not in reply.headers
    assert reply.json()["error"]["code"] == "upstream_error"


def test_a_client_error_is_returned_at_once_through_the_gateway(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        for server in servers:
            server.fault = Fault("status", status=400, body=openai_error_body("bad", param="n"))
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            reply = chat(client)
            counts = served(servers)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "n"
    assert reply.headers["x-gateway-attempts"] == "1"
    assert sum(counts) == 1


def test_a_stream_fails_over_before_its_first_byte_and_never_after(tmp_path: Path) -> None:
    with upstreams(2, stream_chunks=4) as servers:
        broken, healthy = servers
        broken.stop()
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            failed_over = [chat(client, stream=True) for _ in range(3)]
            healthy.fault = Fault("stream_break", after_chunks=2)
            cut = chat(client, stream=True)
            counts = served([healthy])
    assert all(r.status_code == 200 for r in failed_over)
    assert all(r.text.endswith("data: [DONE]\n\n") for r in failed_over)
    assert cut.status_code == 200
    events = [line for line in cut.text.split("\n\n") if line]
    assert events[-1].startswith('data: {"error"')
    assert "[DONE]" not in cut.text
    assert counts == [4]  # the cut stream was not sent anywhere again


def test_readyz_reports_each_upstream_and_its_breaker(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        servers[1].stop()
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            reply = client.get("/readyz")
    local = reply.json()["providers"]["local"]
    assert reply.status_code == 200
    assert local["ready"] is True
    assert local["upstreams"]["local/0"] == {"ready": True, "detail": None, "breaker": "closed"}
    assert local["upstreams"]["local/1"]["ready"] is False
    assert "not reachable" in local["upstreams"]["local/1"]["detail"]


def test_metrics_count_attempts_by_outcome_per_upstream(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        servers[0].fault = Fault("status", status=502)
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            for _ in range(4):
                assert chat(client).status_code == 200
            text = client.get("/metrics").text
    assert 'oai_gateway_upstream_attempts_total{outcome="ok",upstream="local/1"} 4.0' in text
    assert 'oai_gateway_upstream_attempts_total{outcome="http_502",upstream="local/0"}' in text
    assert 'oai_gateway_upstream_breaker_state{state="closed",upstream="local/1"} 1.0' in text
    assert 'oai_gateway_upstream_in_flight{upstream="local/0"} 0.0' in text


def test_the_access_line_names_the_upstream_and_the_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through plain logging, where caplog sees it, even if an earlier test configured a writer.
    monkeypatch.setattr(log, "_access_writer", None)
    with upstreams(2) as servers:
        servers[0].fault = Fault("reset_before_headers")
        with (
            caplog.at_level(logging.INFO),
            gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client,
        ):
            for _ in range(4):
                assert chat(client).status_code == 200
    lines = [
        r for r in caplog.records if getattr(r, "route", None) == "/{provider}/v1/chat/completions"
    ]
    assert lines
    assert {getattr(r, "upstream", None) for r in lines} == {"local/1"}
    assert {getattr(r, "attempts", None) for r in lines} <= {1, 2}
    assert 2 in {getattr(r, "attempts", None) for r in lines}


def test_a_single_base_url_keeps_the_old_behaviour(tmp_path: Path) -> None:
    with OpenAICompatUpstream() as server:
        server.fault = Fault("status", status=503)
        text = f'[providers.plain]\nkind = "openai"\nbase_url = "{server.base_url}/v1"\n'
        with gateway(tmp_path, text) as client:
            reply = chat(client, "plain")
        count = served([server])
    assert reply.status_code == 502
    assert "x-gateway-attempts" not in reply.headers
    assert "x-gateway-upstream" not in reply.headers
    assert count == [1]  # never retried once the upstream may have the request (§4.2a)


def test_models_are_the_union_of_the_upstreams(tmp_path: Path) -> None:
    with upstreams(2) as servers:
        servers[0].models = ["only-on-zero", "gpt-test"]
        servers[1].models = ["only-on-one", "gpt-test"]
        with gateway(tmp_path, providers_toml([s.base_url for s in servers])) as client:
            ids = [m["id"] for m in client.get("/local/v1/models").json()["data"]]
            one = client.get("/local/v1/models/only-on-one")
    assert sorted(ids) == ["gpt-test", "only-on-one", "only-on-zero"]
    assert one.status_code == 200
    assert json.loads(one.text)["id"] == "only-on-one"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_leaving_closes_the_attempt_and_frees_the_upstream(
    tmp_path: Path, stream: bool
) -> None:
    with upstreams(2) as servers:
        for server in servers:
            server.fault = Fault("delay_headers", delay_s=4.0)
        text = providers_toml([s.base_url for s in servers], 'strategy = "least_in_flight"\n')
        path = tmp_path / "providers.toml"
        path.write_text(text, encoding="utf-8")
        config = make_config(providers_file=str(path), allowed_api_keys=[KEY])
        with GatewayServer(config) as gateway:
            body = {**BODY, "stream": stream}
            conn = open_raw(gateway.port, "/local/v1/chat/completions", body, KEY)
            for _ in range(500):  # bounded: 5 s
                if any(s.requests for s in servers):
                    break
                time.sleep(0.01)
            conn.close()
            busy = next(s for s in servers if s.requests)
            assert busy.wait_for_disconnect(2.0), "the upstream attempt was left running"
            for server in servers:
                server.fault = None
            metrics = httpx.get(
                f"{gateway.url}/metrics", headers={"authorization": f"Bearer {KEY}"}, timeout=5
            ).text
    assert 'oai_gateway_upstream_in_flight{upstream="local/0"} 0.0' in metrics
    assert 'oai_gateway_upstream_in_flight{upstream="local/1"} 0.0' in metrics
    assert sum(len(s.requests) for s in servers) == 1  # the departure was not a failed attempt
