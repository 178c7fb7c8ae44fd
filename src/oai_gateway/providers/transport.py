"""The one transport helper every provider kind shares: requests to its upstream through the
provider's `UpstreamClient`, upstream error answers mapped to the `GatewayError` tree, and the
checks that an answer is JSON (or, for a stream, an event stream)."""

from __future__ import annotations

from typing import Any

import orjson

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import GatewayError, UpstreamError, upstream_status_error
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers.base import Json, UpstreamCall
from oai_gateway.upstream.client import UpstreamClient, UpstreamResponse, json_headers


class Transport:
    """Requests to one provider's upstream; `label` names it in every message."""

    def __init__(self, spec: ProviderSpec, redactor: Redactor, label: str) -> None:
        self.spec = spec
        self.redactor = redactor
        self.label = label
        key = spec.api_key.get_secret_value() if spec.api_key else None
        self.client = UpstreamClient(
            base_url=spec.base_url,
            headers=json_headers(key, spec.headers),
            timeout_s=spec.timeout_s,
            label=label,
            unreachable_hint=self._unreachable_hint(),
        )

    def _unreachable_hint(self) -> str:
        if self.spec.base_url_env:
            return f"start it or set {self.spec.base_url_env}"
        return f"start it or fix base_url of provider '{self.spec.name}' in the providers file"

    def _key_hint(self) -> str:
        if self.spec.api_key_env and self.spec.api_key:
            return f"check the key in {self.spec.api_key_env}"
        if self.spec.api_key_env:
            return f"set {self.spec.api_key_env}"
        return f"give provider '{self.spec.name}' a key with api_key_env in the providers file"

    async def start(self) -> None:
        await self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()

    def _status_error(self, response: UpstreamResponse, body: bytes) -> GatewayError:
        return upstream_status_error(
            label=self.label,
            key_hint=self._key_hint(),
            status=response.status,
            body=body,
            headers=response.headers,
            redactor=self.redactor,
        )

    async def call_bytes(
        self, call: UpstreamCall, method: str, path: str, body: Json | None
    ) -> bytes:
        """The body of a successful upstream answer, as it came."""
        response = await self.client.request(
            method,
            path,
            body=None if body is None else orjson.dumps(body),
            request_id=call.request_id,
            timer=call.timer,
            deadline=call.deadline,
        )
        raw = await response.read()
        if response.status >= 400:
            raise self._status_error(response, raw)
        return raw

    def parse(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.label} sent a response that is not valid JSON.") from None

    def parse_object(self, raw: bytes) -> Json:
        answer = self.parse(raw)
        if not isinstance(answer, dict):
            raise UpstreamError(f"{self.label} sent JSON that is not an object.")
        return answer

    async def call(self, call: UpstreamCall, method: str, path: str, body: Json | None) -> Any:
        return self.parse(await self.call_bytes(call, method, path, body))

    async def call_object(
        self, call: UpstreamCall, method: str, path: str, body: Json | None
    ) -> Json:
        return self.parse_object(await self.call_bytes(call, method, path, body))

    async def open_stream(self, call: UpstreamCall, path: str, body: Json) -> UpstreamResponse:
        """A streaming POST whose answer passed its status and content-type checks."""
        response = await self.client.request(
            "POST",
            path,
            body=orjson.dumps(body),
            request_id=call.request_id,
            timer=call.timer,
            stream=True,
        )
        if response.status >= 400:
            raise self._status_error(response, await response.read())
        if response.content_type != "text/event-stream":
            response.close()
            raise UpstreamError(
                f"{self.label} answered a streaming request with {response.content_type or 'no'} "
                "content instead of an event stream."
            )
        return response
