"""A fake Cerebras Inference API: strict field checking, flat errors, no embeddings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from aiohttp import web

from .base import JSON, ReplyError, dumps, json_response
from .openai_compat import OpenAICompatUpstream

# Request fields the Cerebras SDK types (cerebras.md §3); anything else is rejected.
CHAT_FIELDS = frozenset(
    {
        "model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p",
        "seed", "stop", "n", "logprobs", "top_logprobs", "user", "frequency_penalty",
        "presence_penalty", "logit_bias", "parallel_tool_calls", "service_tier",
        "response_format", "tools", "tool_choice", "stream", "stream_options",
        "reasoning_effort", "reasoning_format", "clear_thinking", "disable_reasoning",
        "min_tokens", "min_completion_tokens", "prediction",
    }
)  # fmt: skip
COMPLETION_FIELDS = frozenset(
    {
        "model", "prompt", "best_of", "echo", "logprobs", "max_tokens", "min_tokens", "n",
        "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "seed", "user",
        "grammar_root", "return_raw_tokens", "reasoning_format",
    }
)  # fmt: skip
STREAM_OPTION_FIELDS = frozenset({"include_usage"})
MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})


class CerebrasUpstream(OpenAICompatUpstream):
    health_paths: ClassVar[frozenset[str]] = frozenset()
    default_models: ClassVar[tuple[str, ...]] = ("llama3.1-8b", "gpt-oss-120b", "zai-glm-4.7")
    system_fingerprint: ClassVar[str | None] = "fp_cerebras"

    def __init__(
        self,
        *,
        api_key: str = "csk-test-key",
        models: Sequence[str] | None = None,
        chunk_delay_s: float = 0.0,
        stream_chunks: int = 3,
    ) -> None:
        super().__init__(
            api_key=api_key, models=models, chunk_delay_s=chunk_delay_s, stream_chunks=stream_chunks
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model:.+}", self._get_model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)

    def error(
        self,
        request: web.Request,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        del request  # Cerebras errors are flat, not wrapped in "error"
        return json_response(
            status, {"message": message, "type": type_, "param": param, "code": code}
        )

    def auth_error(self, request: web.Request) -> web.Response:
        message = "Wrong API Key"
        return self.error(request, 401, message, param="api_key", code="wrong_api_key")

    def model_not_found(self, request: web.Request, name: str) -> web.Response:
        message = "Model does not exist or you do not have access to it."
        return self.error(
            request, 404, message, type_="not_found_error", param="model", code="model_not_found"
        )

    def model_entry(self, name: str) -> JSON:
        return {"id": name, "object": "model", "created": 1_721_692_800, "owned_by": "Cerebras"}

    def _reject(self, request: web.Request, message: str) -> ReplyError:
        return ReplyError(
            self.error(request, 400, message, param="validation_error", code="wrong_api_format")
        )

    def validate(self, request: web.Request, body: JSON) -> None:
        allowed = CHAT_FIELDS if request.path.endswith("/chat/completions") else COMPLETION_FIELDS
        options = body.get("stream_options")
        nested = [f"stream_options.{k}" for k in options] if isinstance(options, dict) else []
        extra = [k for k in body if k not in allowed]
        extra += [k for k in nested if k.split(".", 1)[1] not in STREAM_OPTION_FIELDS]
        if extra:
            raise self._reject(request, f"{extra[0]}: property '{extra[0]}' is unsupported")
        for i, message in enumerate(body.get("messages") or []):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in MESSAGE_ROLES:
                allowed_roles = ", ".join(sorted(MESSAGE_ROLES))
                raise self._reject(
                    request, f"messages.{i}.role: '{role}' is not one of [{allowed_roles}]"
                )
        temperature = body.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 1.5:
            raise self._reject(request, "temperature: must be between 0 and 1.5")

    def reasoning_for(self, prompt: str) -> str | None:
        return f"The user wrote {len(prompt.split())} words."

    def extras(self) -> JSON:
        return {
            "time_info": {
                "queue_time": 0.0001,
                "prompt_time": 0.0002,
                "completion_time": 0.001,
                "total_time": 0.0015,
                "created": time.time(),
            }
        }

    def finish_stream(self, chunks: list[JSON], usage: JSON, include_usage: bool) -> None:
        # Cerebras always reports usage, on the chunk carrying finish_reason, whatever was asked.
        chunks[-1].update({"usage": usage, **self.extras()})

    def mid_stream_error(self, first_event: JSON | None) -> bytes:
        del first_event
        error = {
            "id": "err-1",
            "code": "internal_error",
            "message": "Internal server error during generation",
            "param": None,
            "type": "server_error",
        }
        return b"data: " + dumps({"error": error, "status_code": 500}) + b"\n\n"
