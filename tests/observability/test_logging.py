"""Logging (SPEC §4.5): one access line per request, JSON or text, never a secret or a prompt.

The gateway runs as a real `oai-gateway serve` process and its stderr is the log under test.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from oai_gateway.observability.log import (
    ACCESS_LOGGER,
    JsonFormatter,
    TextFormatter,
    configure_logging,
)
from oai_gateway.observability.redact import REDACTED, Redactor
from tests.conftest import CEREBRAS_KEY, CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.fake_upstreams.base import openai_error_body
from tests.support.processes import GatewayProcess, base_env
from tests.support.sockets import free_port
from tests.support.sse import parse_sse

SECOND_GATEWAY_KEY = "gw-second-key-for-logs-998877"
WRONG_TOKEN = "xyz-client-token-not-a-key-5566"
PROMPT = "zebra-quartz-prompt-marker-3141"
COMPLETION_PROMPT = "walrus-legacy-prompt-marker-2718"
EMBED_INPUT = "otter-embedding-input-marker-1618"
SECRETS = (GATEWAY_KEY, SECOND_GATEWAY_KEY, CUSTOM_KEY, CEREBRAS_KEY, WRONG_TOKEN)
JSON = dict[str, Any]


@dataclass
class LogRun:
    raw: str
    lines: list[JSON]
    responses: dict[str, httpx.Response] = field(default_factory=dict)
    usage: dict[str, JSON] = field(default_factory=dict)

    def access(self, request_id: str) -> JSON:
        found = [
            line
            for line in self.lines
            if line["logger"] == ACCESS_LOGGER and line.get("request_id") == request_id
        ]
        assert len(found) == 1, f"{len(found)} access lines for {request_id}:\n{self.raw}"
        return found[0]


def gateway_env(
    home: Path,
    custom: OpenAICompatUpstream,
    ollama: OllamaUpstream,
    cerebras: CerebrasUpstream,
    **values: str,
) -> dict[str, str]:
    return base_env(
        home,
        ALLOWED_API_KEYS=f'["{GATEWAY_KEY}", "{SECOND_GATEWAY_KEY}"]',
        CUSTOM_BASE_URL=custom.base_url + "/v1",
        CUSTOM_API_KEY=CUSTOM_KEY,
        OLLAMA_BASE_URL=ollama.base_url,
        CEREBRAS_BASE_URL=cerebras.base_url + "/v1",
        CEREBRAS_API_KEY=CEREBRAS_KEY,
        REQUEST_TIMEOUT_S="5",
        **values,
    )


def chat(prompt: str, **extra: Any) -> JSON:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}], **extra}


@pytest.fixture(scope="module")
def json_run(
    tmp_path_factory: pytest.TempPathFactory,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> LogRun:
    """One gateway process at INFO in JSON format, driven through a mix of requests."""
    home = tmp_path_factory.mktemp("json-logs")
    env = gateway_env(home, custom_upstream, ollama_upstream, cerebras_upstream, LOG_FORMAT="json")
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port)]
    responses: dict[str, httpx.Response] = {}
    usage: dict[str, JSON] = {}
    with GatewayProcess("module", args, env, home, port) as gateway:
        gateway.wait_healthy()
        auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
        with httpx.Client(base_url=gateway.url, timeout=10) as http:

            def send(rid: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
                headers = {**auth, **kwargs.pop("headers", {}), "x-request-id": rid}
                response = http.request(method, path, headers=headers, **kwargs)
                responses[rid] = response
                return response

            send("log-chat", "POST", "/custom/v1/chat/completions", json=chat(PROMPT))
            usage["log-chat"] = responses["log-chat"].json()["usage"]

            stream_body = chat(PROMPT, stream=True, stream_options={"include_usage": True})
            stream_body["model"] = "gpt-oss-120b"
            text = send(
                "log-stream", "POST", "/cerebras/v1/chat/completions", json=stream_body
            ).text
            events, done = parse_sse(text)
            assert done
            usage["log-stream"] = events[-1]["usage"]

            completion = {"model": "gpt-test", "prompt": COMPLETION_PROMPT}
            send("log-legacy", "POST", "/custom/v1/completions", json=completion)
            embed = {"model": "nomic-embed-text", "input": [EMBED_INPUT]}
            send("log-embed", "POST", "/ollama/v1/embeddings", json=embed)
            send("log-model", "GET", "/cerebras/v1/models/gpt-oss-120b")
            send(
                "log-second-key",
                "GET",
                "/custom/v1/models",
                headers={"authorization": f"Bearer {SECOND_GATEWAY_KEY}"},
            )
            send(
                "log-unauth",
                "POST",
                "/custom/v1/chat/completions",
                json=chat(PROMPT),
                headers={"authorization": f"Bearer {WRONG_TOKEN}"},
            )
            # An upstream that echoes the key it rejected, as real APIs partly do.
            custom_upstream.fault = Fault(
                kind="status",
                status=401,
                body=openai_error_body(f"Incorrect API key provided: {CUSTOM_KEY}"),
            )
            try:
                send("log-upstream-auth", "POST", "/custom/v1/chat/completions", json=chat(PROMPT))
            finally:
                custom_upstream.fault = None
            send("log-health", "GET", "/healthz")
        gateway.terminate()
        raw = gateway.log()
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    return LogRun(raw, lines, responses, usage)


# --- JSON format ------------------------------------------------------------------------------


def test_json_format_is_one_object_per_line(json_run: LogRun) -> None:
    assert len(json_run.lines) >= len(json_run.responses)
    for line in json_run.lines:
        assert isinstance(line, dict)
        assert {"ts", "level", "logger", "message"} <= set(line)


def test_the_requests_were_answered_as_expected(json_run: LogRun) -> None:
    statuses = {rid: r.status_code for rid, r in json_run.responses.items()}
    assert statuses == {
        "log-chat": 200,
        "log-stream": 200,
        "log-legacy": 200,
        "log-embed": 200,
        "log-model": 200,
        "log-second-key": 200,
        "log-unauth": 401,
        "log-upstream-auth": 502,
        "log-health": 200,
    }


def test_exactly_one_access_line_per_request(json_run: LogRun) -> None:
    access = [line for line in json_run.lines if line["logger"] == ACCESS_LOGGER]
    ours = [line["request_id"] for line in access if line["request_id"] in json_run.responses]
    assert sorted(ours) == sorted(json_run.responses)
    # The rest are the readiness polls of the harness, each with a generated id.
    others = [line for line in access if line["request_id"] not in json_run.responses]
    assert {line["route"] for line in others} <= {"/healthz"}
    assert len({line["request_id"] for line in others}) == len(others)


def test_access_line_of_a_chat_completion(json_run: LogRun) -> None:
    line = json_run.access("log-chat")
    usage = json_run.usage["log-chat"]
    assert line["level"] == "INFO"
    assert line["method"] == "POST"
    assert line["route"] == "/{provider}/v1/chat/completions"
    assert line["provider"] == "custom"
    assert line["model"] == "gpt-test"
    assert line["status"] == 200
    assert line["stream"] is False
    assert line["prompt_tokens"] == usage["prompt_tokens"]
    assert line["completion_tokens"] == usage["completion_tokens"]
    assert line["total_tokens"] == usage["total_tokens"]
    assert isinstance(line["duration_ms"], float)
    assert isinstance(line["upstream_ms"], float)
    assert 0 < line["upstream_ms"] <= line["duration_ms"]


def test_access_line_of_a_stream_has_usage_from_the_final_chunk(json_run: LogRun) -> None:
    line = json_run.access("log-stream")
    usage = json_run.usage["log-stream"]
    assert line["route"] == "/{provider}/v1/chat/completions"
    assert line["provider"] == "cerebras"
    assert line["model"] == "gpt-oss-120b"
    assert line["status"] == 200
    assert line["stream"] is True
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    assert 0 < line["upstream_ms"] <= line["duration_ms"]


def test_access_line_of_embeddings_and_legacy_completions(json_run: LogRun) -> None:
    embed = json_run.access("log-embed")
    assert embed["route"] == "/{provider}/v1/embeddings"
    assert (embed["provider"], embed["model"], embed["status"]) == (
        "ollama",
        "nomic-embed-text",
        200,
    )
    assert (
        embed["prompt_tokens"] == json_run.responses["log-embed"].json()["usage"]["prompt_tokens"]
    )
    legacy = json_run.access("log-legacy")
    assert legacy["route"] == "/{provider}/v1/completions"
    assert (legacy["provider"], legacy["model"], legacy["stream"]) == ("custom", "gpt-test", False)
    assert (
        legacy["total_tokens"] == json_run.responses["log-legacy"].json()["usage"]["total_tokens"]
    )


def test_access_line_uses_the_route_template_not_the_path(json_run: LogRun) -> None:
    line = json_run.access("log-model")
    assert line["method"] == "GET"
    assert line["route"] == "/{provider}/v1/models/{model}"
    assert line["provider"] == "cerebras"
    assert line["model"] == "gpt-oss-120b"
    assert line["status"] == 200
    assert line["prompt_tokens"] is None


def test_access_line_of_rejected_and_failed_requests(json_run: LogRun) -> None:
    unauth = json_run.access("log-unauth")
    assert unauth["status"] == 401
    assert unauth["method"] == "POST"
    upstream_auth = json_run.access("log-upstream-auth")
    assert upstream_auth["status"] == 502
    assert upstream_auth["provider"] == "custom"
    assert upstream_auth["route"] == "/{provider}/v1/chat/completions"
    assert json_run.access("log-health")["route"] == "/healthz"


def test_access_line_request_id_matches_the_response_header(json_run: LogRun) -> None:
    for rid, response in json_run.responses.items():
        assert response.headers["x-request-id"] == rid
        assert json_run.access(rid)["request_id"] == rid


def test_no_secret_reaches_the_log(json_run: LogRun) -> None:
    for secret in SECRETS:
        assert secret not in json_run.raw
    for line in json_run.lines:
        assert "Bearer" not in str(line) or f"Bearer {REDACTED}" in str(line)


def test_no_prompt_or_completion_text_at_info(json_run: LogRun) -> None:
    # The fake models echo their prompt, so this covers completion text as well.
    assert PROMPT in json_run.responses["log-chat"].text
    for marker in (PROMPT, COMPLETION_PROMPT, EMBED_INPUT):
        assert marker not in json_run.raw


def test_startup_lines_are_logged_as_json(json_run: LogRun) -> None:
    ready = [line for line in json_run.lines if line["message"] == "providers ready"]
    assert len(ready) == 1
    assert ready[0]["providers"] == ["cerebras", "custom", "ollama"]


# --- text format, DEBUG -----------------------------------------------------------------------


def test_text_format_at_debug_keeps_secrets_out(
    tmp_path: Path,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    env = gateway_env(
        tmp_path,
        custom_upstream,
        ollama_upstream,
        cerebras_upstream,
        LOG_FORMAT="text",
        LOG_LEVEL="debug",
    )
    port = free_port()
    with GatewayProcess("script", ["--port", str(port)], env, tmp_path, port) as gateway:
        gateway.wait_healthy()
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            ok = http.post(
                "/custom/v1/chat/completions",
                json=chat(PROMPT),
                headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": "text-ok"},
            )
            denied = http.get(
                "/custom/v1/models",
                headers={"authorization": f"Bearer {WRONG_TOKEN}", "x-request-id": "text-denied"},
            )
        gateway.terminate()
        raw = gateway.log()
    assert (ok.status_code, denied.status_code) == (200, 401)
    # The upstream did receive its own key, so the log had it within reach.
    assert custom_upstream.requests[-1].headers["authorization"] == f"Bearer {CUSTOM_KEY}"
    lines = raw.splitlines()
    for line in lines:
        assert not line.lstrip().startswith("{"), line
    by_id: dict[str, list[str]] = {"text-ok": [], "text-denied": []}
    for line in lines:
        for rid, found in by_id.items():
            if f" {ACCESS_LOGGER} " in line and f"request_id={rid} " in line:
                found.append(line)
    assert [len(found) for found in by_id.values()] == [1, 1], raw
    ok_line, denied_line = by_id["text-ok"][0], by_id["text-denied"][0]
    assert " INFO " in ok_line
    assert "asctime=" not in ok_line
    for part in (
        "method=POST",
        "route=/{provider}/v1/chat/completions",
        "provider=custom",
        "model=gpt-test",
        "status=200",
        "duration_ms=",
        "upstream_ms=",
        "stream=False",
        "total_tokens=",
    ):
        assert part in ok_line
    assert "status=401" in denied_line
    for secret in SECRETS:
        assert secret not in raw


# --- the formatters and configure_logging, in process -----------------------------------------


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("oai_gateway.test", logging.INFO, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_json_formatter_redacts_message_and_fields() -> None:
    formatter = JsonFormatter(Redactor([CUSTOM_KEY]))
    line = formatter.format(
        record(
            "upstream said %s",
            f"bad key {CUSTOM_KEY}",
            headers={"Authorization": "Bearer abc.def-ghi"},
            request_id="r-1",
        )
    )
    entry = orjson.loads(line)
    assert entry["message"] == f"upstream said bad key {REDACTED}"
    assert entry["request_id"] == "r-1"
    assert "abc.def-ghi" not in line
    assert CUSTOM_KEY not in line
    assert entry["level"] == "INFO"
    assert entry["logger"] == "oai_gateway.test"
    assert "\n" not in line


def test_json_formatter_keeps_an_exception_on_one_line() -> None:
    try:
        raise RuntimeError(f"boom with {CEREBRAS_KEY}")
    except RuntimeError:
        failed = record("unexpected error")
        failed.exc_info = sys.exc_info()
    line = JsonFormatter(Redactor([CEREBRAS_KEY])).format(failed)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert "RuntimeError" in entry["exception"]
    assert CEREBRAS_KEY not in line


def test_text_formatter_appends_fields_and_redacts() -> None:
    line = TextFormatter(Redactor([GATEWAY_KEY])).format(
        record("auth %s", GATEWAY_KEY, status=401, provider=None, note="Bearer zzz-top")
    )
    assert "auth [REDACTED]" in line
    assert "status=401" in line
    assert "provider=" not in line  # unknown fields are left out rather than printed as None
    assert "zzz-top" not in line
    assert GATEWAY_KEY not in line
    assert "asctime=" not in line


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn_state = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    access_disabled = logging.getLogger("uvicorn.access").disabled
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, (old, propagate) in uvicorn_state.items():
        logging.getLogger(name).handlers[:] = old
        logging.getLogger(name).propagate = propagate
    logging.getLogger("uvicorn.access").disabled = access_disabled


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_installs_one_redacting_handler(fmt: str) -> None:
    configure_logging("WARNING", fmt, Redactor([CUSTOM_KEY]))
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.WARNING
    assert logging.getLogger("uvicorn.access").disabled is True
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    logging.getLogger("oai_gateway.test").info("hidden below the level")
    logging.getLogger("uvicorn.error").warning("key %s rejected", CUSTOM_KEY)
    output = stream.getvalue()
    assert "hidden below the level" not in output
    assert f"key {REDACTED} rejected" in output
    assert CUSTOM_KEY not in output
    if fmt == "json":
        assert orjson.loads(output.strip())["logger"] == "uvicorn.error"
    else:
        assert " WARNING uvicorn.error " in output


@pytest.mark.parametrize(
    "text",
    ["Authorization: Bearer sk-abc123", "token=BEARER\tsk-abc123;", "bEaReR  sk-abc123"],
)
def test_a_bearer_token_in_any_case_is_redacted(text: str) -> None:
    redacted = Redactor().redact(text)
    assert "sk-abc123" not in redacted
    assert REDACTED in redacted


def test_a_line_without_a_bearer_token_is_returned_as_it_is() -> None:
    line = '{"route":"/custom/v1/chat/completions","status":200}'
    assert Redactor(["secret"]).redact(line) is line
