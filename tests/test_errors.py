"""An upstream 501 says the operation does not exist there: a 400 the SDKs do not retry."""

from __future__ import annotations

import httpx
import orjson

from tests.support.fake_upstreams import Fault, OpenAICompatUpstream

# What llama.cpp's server answers on /v1/embeddings when started without --embeddings.
LLAMA_501 = orjson.dumps(
    {
        "error": {
            "code": 501,
            "message": "This server does not support embeddings. Start it with `--embeddings`",
            "type": "not_supported_error",
        }
    }
)


def test_upstream_501_is_unsupported_operation_with_the_upstream_message(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="status", status=501, body=LLAMA_501)
    response = client.post("/custom/v1/embeddings", json={"model": "org/model-a", "input": "x"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_operation"
    assert "Start it with `--embeddings`" in error["message"], error
    assert len(custom_upstream.requests) == 1


def test_upstream_501_without_a_body_still_says_not_implemented(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="status", status=501, body=b"")
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
    response = client.post("/custom/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_operation"
    assert "501" in error["message"], error
