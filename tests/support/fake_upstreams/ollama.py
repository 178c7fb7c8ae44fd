"""A fake Ollama: health/native model routes plus its OpenAI layer with Ollama's quirks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from aiohttp import web

from .base import JSON, ReplyError, dumps, json_response
from .openai_compat import OpenAICompatUpstream, Output, Step

_STATUS_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def _modified(index: int) -> tuple[str, int]:
    """Go's RFC3339Nano as Ollama prints it (nanoseconds; local offset or Z), and Unix time."""
    tz = timezone(timedelta(hours=-8)) if index % 2 == 0 else UTC
    when = datetime(2024, 12, 7, 11, 41, 24, tzinfo=tz) - timedelta(days=index)
    offset = when.strftime("%z")
    suffix = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return f"{when:%Y-%m-%dT%H:%M:%S}.539218186{suffix}", int(when.timestamp())


class OllamaUpstream(OpenAICompatUpstream):
    health_paths: ClassVar[frozenset[str]] = frozenset({"/", "/api/version"})
    default_models: ClassVar[tuple[str, ...]] = (
        "llama3.2:1b",
        "myorg/custom:latest",
        "nomic-embed-text:latest",
    )
    max_token_fields: ClassVar[tuple[str, ...]] = ("max_tokens",)  # max_completion_tokens ignored
    honours_n: ClassVar[bool] = False
    fragment_tool_arguments: ClassVar[bool] = False
    system_fingerprint: ClassVar[str | None] = "fp_ollama"

    def __init__(
        self,
        *,
        models: Sequence[str] | None = None,
        legacy_stream: bool = False,
        version: str = "0.33.0",
        chunk_delay_s: float = 0.0,
        stream_chunks: int = 3,
    ) -> None:
        super().__init__(models=models, chunk_delay_s=chunk_delay_s, stream_chunks=stream_chunks)
        self.legacy_stream = legacy_stream
        self.version = version

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/show", self._show)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model:.+}", self._get_model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self.responses.add_routes(app)  # Ollama serves /v1/responses since 0.13.3

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
        # Ollama derives the type from the status alone and never sets param or code.
        if request.path.startswith("/v1/"):
            kind = _STATUS_TYPES.get(status, "api_error")
            payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
            return json_response(status, payload)
        return json_response(status, {"error": message})

    def resolve_model(self, name: str) -> str | None:
        full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        return full if full in self.models else None

    def model_not_found(self, request: web.Request, name: str) -> web.Response:
        return self.error(request, 404, f"model '{name}' not found")

    def model_entry(self, name: str) -> JSON:
        created = _modified(self.models.index(name))[1]
        owner = name.split("/", 1)[0] if "/" in name else "library"
        return {"id": name, "object": "model", "created": created, "owned_by": owner}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{random.randrange(999)}"  # Ollama's ids collide by design

    def reasoning_for(self, prompt: str) -> str | None:
        return f"The user wrote {len(prompt.split())} words."

    def extras(self) -> JSON:
        return {}

    def finish_stream(self, chunks: list[JSON], usage: JSON, include_usage: bool) -> None:
        if not include_usage:
            return
        if chunks[0]["object"] == "text_completion":
            zero = self.usage(0, 0)
            for chunk in chunks:
                chunk["usage"] = zero
        chunks.append({**chunks[-1], "choices": [], "usage": usage})

    def choice_steps(self, out: Output) -> list[Step]:
        steps = super().choice_steps(out)
        middle = [({"content": "", **delta}, None) for delta, _ in steps[1:-1]]
        if not self.legacy_stream:
            return [steps[0], *middle, steps[-1]]
        # Before 0.32.6 every chunk repeated the role and the last one carried finish_reason.
        legacy: list[Step] = [({"role": "assistant", **delta}, None) for delta, _ in middle]
        legacy[-1] = (legacy[-1][0], steps[-1][1])
        return legacy

    def mid_stream_error(self, first_event: JSON | None) -> bytes:
        # Ollama parses the native {"error": ...} line as an ordinary chunk: one empty delta.
        base = first_event or self.envelope("chat.completion.chunk", self.ident("chatcmpl"), "", [])
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return b"data: " + dumps({**base, "choices": [choice]}) + b"\n\n"

    def prompt_items(self, request: web.Request, raw: Any) -> list[str]:
        if not isinstance(raw, str):
            kind = "array" if isinstance(raw, list) else type(raw).__name__
            msg = f"json: cannot unmarshal {kind} into Go struct field CompletionRequest.prompt"
            raise ReplyError(self.error(request, 400, f"{msg} of type string"))
        return [raw]

    def embedding_items(self, request: web.Request, raw: Any) -> list[str | list[int]]:
        if isinstance(raw, str):
            return [raw]
        if isinstance(raw, list) and not raw:
            raise ReplyError(self.error(request, 400, "invalid input"))
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return list(raw)
        raise ReplyError(self.error(request, 400, "invalid input type"))

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(200, {"version": self.version})

    def _details(self, name: str) -> JSON:
        embed = "embed" in name
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "nomic-bert" if embed else "llama",
            "families": ["nomic-bert" if embed else "llama"],
            "parameter_size": "137M" if embed else "1.2B",
            "quantization_level": "F16" if embed else "Q4_K_M",
        }

    async def _tags(self, request: web.Request) -> web.Response:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": _modified(i)[0],
                "size": 1_321_098_329 + i,
                "digest": f"{i:064x}",
                "details": self._details(name),
            }
            for i, name in enumerate(self.models)
        ]
        return json_response(200, {"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        body = await self.read_json(request)
        name = body.get("model") or body.get("name")
        model = self.resolve_model(name) if isinstance(name, str) else None
        if model is None:
            return self.model_not_found(request, str(name))
        embed = "embed" in model
        return json_response(
            200,
            {
                "modelfile": f"FROM {model}",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": self._details(model),
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                "capabilities": ["embedding"] if embed else ["completion", "tools"],
                "modified_at": _modified(self.models.index(model))[0],
            },
        )

    async def _list_models(self, request: web.Request) -> web.Response:
        # Ollama serialises an empty Go slice as null.
        data = [self.model_entry(m) for m in self.models] or None
        return json_response(200, {"object": "list", "data": data})
