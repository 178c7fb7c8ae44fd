"""A generic OpenAI-compatible upstream (vLLM / llama.cpp style) and the shared fake model."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from .base import JSON, ReplyError, UpstreamServer, dumps, json_response
from .responses import ResponsesEndpoint

Step = tuple[JSON, str | None]  # (delta, finish_reason) of one streamed chat chunk


@dataclass(frozen=True)
class Output:
    """What the fake model "generated" for one choice."""

    content: str | None
    tool_call: JSON | None
    finish_reason: str
    reasoning: str | None
    completion_tokens: int


def words(text: str) -> int:
    return len(text.split())


def split_text(text: str, parts: int) -> list[str]:
    """Cut ``text`` into ``parts`` pieces whose concatenation is ``text``."""
    parts = max(1, parts)
    size = len(text)
    return [text[i * size // parts : (i + 1) * size // parts] for i in range(parts)]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def fake_embedding(item: str | list[int], dimensions: Any) -> list[float]:
    # Multiples of 1/128 are exact in float32, so base64 and float answers compare equal.
    vec = [b / 128 - 1 for b in hashlib.sha256(dumps(item)).digest()[:8]]
    return vec[:dimensions] if isinstance(dimensions, int) and dimensions > 0 else vec


def b64_floats(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def input_items(raw: Any) -> list[str | list[int]] | None:
    """Normalise an OpenAI ``input``/``prompt``; None when it has no valid form."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(x, str) for x in raw):
        return list(raw)
    if all(isinstance(x, int) for x in raw):
        return [list(raw)]
    if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in raw):
        return [list(x) for x in raw]
    return None


class OpenAICompatUpstream(UpstreamServer):
    health_paths: ClassVar[frozenset[str]] = frozenset({"/health"})
    default_models: ClassVar[tuple[str, ...]] = ("org/model-a", "llama3.2:1b", "gpt-test")
    max_token_fields: ClassVar[tuple[str, ...]] = ("max_completion_tokens", "max_tokens")
    honours_n: ClassVar[bool] = True
    fragment_tool_arguments: ClassVar[bool] = True
    system_fingerprint: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        chunk_delay_s: float = 0.0,
        stream_chunks: int = 3,
    ) -> None:
        super().__init__(api_key=api_key, chunk_delay_s=chunk_delay_s, stream_chunks=stream_chunks)
        self.models = list(self.default_models if models is None else models)
        # /v1/responses, native; `self.responses.deviant = True` answers as llama.cpp does.
        self.responses = ResponsesEndpoint(self)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model:.+}", self._get_model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self.responses.add_routes(app)

    # --- provider hooks -------------------------------------------------------------------

    def model_entry(self, name: str) -> JSON:
        owner = name.split("/", 1)[0] if "/" in name else "local"
        return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": owner}

    def resolve_model(self, name: str) -> str | None:
        return name if name in self.models else None

    def model_not_found(self, request: web.Request, name: str) -> web.Response:
        message = f"The model `{name}` does not exist or you do not have access to it."
        return self.error(request, 404, message, param="model", code="model_not_found")

    def validate(self, request: web.Request, body: JSON) -> None:
        """Provider-specific request checks; raise ReplyError to reject."""

    def reasoning_for(self, prompt: str) -> str | None:
        del prompt
        return None

    def extras(self) -> JSON:
        """Non-OpenAI fields on non-stream responses and on the last stream chunk."""
        return {"timings": {"prompt_n": 1, "prompt_ms": 0.5, "predicted_n": 1, "predicted_ms": 1.0}}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:24]}"

    def finish_stream(self, chunks: list[JSON], usage: JSON, include_usage: bool) -> None:
        if include_usage:
            chunks.append({**chunks[-1], "choices": [], "usage": usage})
        chunks[-1].update(self.extras())

    def prompt_items(self, request: web.Request, raw: Any) -> list[str]:
        items = input_items(raw)
        if items is None:
            raise ReplyError(
                self.error(request, 400, "'prompt' has an invalid type", param="prompt")
            )
        return [i if isinstance(i, str) else " ".join(map(str, i)) for i in items]

    def embedding_items(self, request: web.Request, raw: Any) -> list[str | list[int]]:
        items = input_items(raw)
        if items is None or any(i == "" for i in items):
            raise ReplyError(
                self.error(request, 400, "'input' has an invalid value", param="input")
            )
        return items

    # --- shared pieces --------------------------------------------------------------------

    def ident(self, prefix: str) -> tuple[str, int]:
        """Id and creation time, shared by every chunk of one response."""
        return self.new_id(prefix), int(time.time())

    def envelope(self, obj: str, rid: tuple[str, int], model: str, choices: list[JSON]) -> JSON:
        out: JSON = {"id": rid[0], "object": obj, "created": rid[1], "model": model}
        if self.system_fingerprint is not None:
            out["system_fingerprint"] = self.system_fingerprint
        out["choices"] = choices
        return out

    def require_model(self, request: web.Request, body: JSON) -> str:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ReplyError(self.error(request, 400, "'model' is required", param="model"))
        model = self.resolve_model(name)
        if model is None:
            raise ReplyError(self.model_not_found(request, name))
        return model

    def limit(self, body: JSON, text: str) -> tuple[str, str]:
        for key in self.max_token_fields:
            cap = body.get(key)
            if isinstance(cap, int) and words(text) > cap:
                return " ".join(text.split()[:cap]), "length"
        return text, "stop"

    def n_of(self, body: JSON) -> int:
        n = body.get("n")
        return n if self.honours_n and isinstance(n, int) and n > 0 else 1

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> JSON:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def generate(self, body: JSON, messages: list[Any]) -> Output:
        last = next(
            (
                m
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") in {"user", "tool"}
            ),
            {},
        )
        prompt = text_of(last.get("content"))
        reasoning = self.reasoning_for(prompt)
        tools = body.get("tools")
        if tools and body.get("tool_choice") != "none" and last.get("role") != "tool":
            choice = body.get("tool_choice")
            fn = choice.get("function", {}) if isinstance(choice, dict) else tools[0]["function"]
            args = dumps({"input": prompt}).decode()
            call: JSON = {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": fn["name"], "arguments": args},
            }
            return Output(None, call, "tool_calls", reasoning, max(1, words(args)))
        content, finish = self.limit(body, prompt)
        return Output(content, None, finish, reasoning, max(1, words(content)))

    def choice_steps(self, out: Output) -> list[Step]:
        steps: list[Step] = [({"role": "assistant", "content": ""}, None)]
        if out.reasoning is not None:
            steps.append(({"reasoning": out.reasoning}, None))
        if out.tool_call is not None:
            fn = out.tool_call["function"]
            whole = {"index": 0, **out.tool_call}
            if self.fragment_tool_arguments:
                first, second = split_text(fn["arguments"], 2)
                head = {**whole, "function": {"name": fn["name"], "arguments": first}}
                tail = {"index": 0, "function": {"arguments": second}}
                steps += [({"tool_calls": [head]}, None), ({"tool_calls": [tail]}, None)]
            else:
                steps.append(({"tool_calls": [whole]}, None))
        else:
            pieces = split_text(out.content or "", self.stream_chunks)
            steps += [({"content": piece}, None) for piece in pieces]
        steps.append(({}, out.finish_reason))
        return steps

    # --- handlers -------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return json_response(200, {"status": "ok"})

    async def _list_models(self, request: web.Request) -> web.Response:
        return json_response(
            200, {"object": "list", "data": [self.model_entry(m) for m in self.models]}
        )

    async def _get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        model = self.resolve_model(name)
        if model is None:
            return self.model_not_found(request, name)
        return json_response(200, self.model_entry(model))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        model = self.require_model(request, body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(
                request, 400, "'messages' must be a non-empty array", param="messages"
            )
        self.validate(request, body)
        outs = [self.generate(body, messages) for _ in range(self.n_of(body))]
        prompt_tokens = max(
            1, sum(words(text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        )
        usage = self.usage(prompt_tokens, sum(o.completion_tokens for o in outs))
        rid = self.ident("chatcmpl")
        if body.get("stream") is True:
            # Choices advance in lock-step, one choice per chunk, as OpenAI interleaves them.
            per_choice = [self.choice_steps(o) for o in outs]
            chunks: list[JSON] = []
            for step in range(max(len(s) for s in per_choice)):
                for i, steps in enumerate(per_choice):
                    if step < len(steps):
                        delta, finish = steps[step]
                        item = {"index": i, "delta": delta, "finish_reason": finish}
                        chunks.append(self.envelope("chat.completion.chunk", rid, model, [item]))
            self.finish_stream(chunks, usage, _include_usage(body))
            return await self.sse(request, chunks)
        choices = []
        for i, out in enumerate(outs):
            message: JSON = {"role": "assistant", "content": out.content}
            if out.tool_call is not None:
                message["tool_calls"] = [out.tool_call]
            if out.reasoning is not None:
                message["reasoning"] = out.reasoning
            choices.append({"index": i, "message": message, "finish_reason": out.finish_reason})
        payload = self.envelope("chat.completion", rid, model, choices)
        return json_response(200, {**payload, "usage": usage, **self.extras()})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        model = self.require_model(request, body)
        self.validate(request, body)
        prompts = self.prompt_items(request, body.get("prompt"))
        results = [self.limit(body, p) for p in prompts for _ in range(self.n_of(body))]
        usage = self.usage(
            max(1, sum(map(words, prompts))), max(1, sum(words(t) for t, _ in results))
        )
        rid = self.ident("cmpl")

        def choice(i: int, text: str, finish: str | None) -> JSON:
            return {"text": text, "index": i, "logprobs": None, "finish_reason": finish}

        if body.get("stream") is True:
            pieces = [split_text(text, self.stream_chunks) for text, _ in results]
            chunks = [
                self.envelope("text_completion", rid, model, [choice(i, p[step], None)])
                for step in range(max(1, self.stream_chunks))
                for i, p in enumerate(pieces)
            ]
            chunks += [
                self.envelope("text_completion", rid, model, [choice(i, "", finish)])
                for i, (_, finish) in enumerate(results)
            ]
            self.finish_stream(chunks, usage, _include_usage(body))
            return await self.sse(request, chunks)
        choices = [choice(i, text, finish) for i, (text, finish) in enumerate(results)]
        payload = self.envelope("text_completion", rid, model, choices)
        return json_response(200, {**payload, "usage": usage, **self.extras()})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self.read_json(request)
        model = self.require_model(request, body)
        items = self.embedding_items(request, body.get("input"))
        fmt = body.get("encoding_format") or "float"
        fmt = fmt.lower() if isinstance(fmt, str) else fmt
        if fmt not in ("float", "base64"):
            msg = "'encoding_format' must be 'float' or 'base64'"
            return self.error(request, 400, msg, param="encoding_format")
        data = []
        for i, item in enumerate(items):
            vec = fake_embedding(item, body.get("dimensions"))
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": b64_floats(vec) if fmt == "base64" else vec,
                }
            )
        tokens = sum(words(i) if isinstance(i, str) else len(i) for i in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response(200, {"object": "list", "data": data, "model": model, "usage": usage})


def _include_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
