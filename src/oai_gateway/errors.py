"""The gateway's error tree and its single mapping to OpenAI's error envelope (SPEC §5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from oai_gateway.observability.redact import Redactor

_MAX_UPSTREAM_MESSAGE = 600


class GatewayError(Exception):
    """An error that reaches the client as `{"error": {message, type, param, code}}`."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.type = error_type if error_type is not None else self.error_type
        self.http_status = status if status is not None else self.status
        self.headers: Mapping[str, str] = headers or {}
        self.upstream_status: int | None = None  # set when this maps an upstream HTTP error
        # Set when the upstream never answered: "refused", "reset", "connect_timeout" (SPEC §11).
        self.failure: str | None = None

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class InvalidRequestError(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationError(InvalidRequestError):
    status = 401
    default_code = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"www-authenticate": "Bearer"})


class ProviderNotFoundError(InvalidRequestError):
    status = 404
    default_code = "provider_not_found"


class ModelNotFoundError(InvalidRequestError):
    status = 404
    default_code = "model_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class UnsupportedOperationError(InvalidRequestError):
    default_code = "unsupported_operation"


class UnsupportedParameterError(InvalidRequestError):
    """A Responses feature the provider cannot serve (a built-in tool, stored state, …)."""

    default_code = "unsupported_parameter"


class RouteNotFoundError(InvalidRequestError):
    status = 404


class MethodNotAllowedError(InvalidRequestError):
    status = 405


class PayloadTooLargeError(InvalidRequestError):
    status = 413


class UnsupportedMediaTypeError(InvalidRequestError):
    status = 415


class HostNotAllowedError(InvalidRequestError):
    status = 403
    default_code = "host_not_allowed"


class UpstreamError(GatewayError):
    """The upstream could not be reached or answered with something unusable."""

    status = 502
    default_code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    default_code = "upstream_auth_failed"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    default_code = "upstream_timeout"


class ShuttingDownError(GatewayError):
    """The shutdown grace period ran out while this request was still being answered."""

    status = 503
    default_code = "server_shutting_down"


class ClientDisconnectedError(Exception):
    """The client went away; nothing more can be sent to it."""


INTERNAL_ERROR = GatewayError("The gateway hit an unexpected error; the request id identifies it.")

_PASSED_THROUGH = frozenset({400, 404, 409, 413})
_RETRY_HEADERS = ("retry-after", "retry-after-ms")


def _error_fields(body: bytes) -> dict[str, Any]:
    """Pull message/type/code/param out of an OpenAI-shaped, flat (Cerebras) or Ollama body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return {"message": text} if text else {}
    if not isinstance(parsed, dict):
        return {}
    inner = parsed.get("error", parsed)
    if isinstance(inner, str):
        return {"message": inner}
    if not isinstance(inner, dict):
        return {}
    return {
        k: v for k in ("message", "type", "code", "param") if isinstance(v := inner.get(k), str)
    }


def _looks_like_missing_model(fields: Mapping[str, Any]) -> bool:
    message = str(fields.get("message", "")).lower()
    return fields.get("code") == "model_not_found" or (
        "model" in message and ("not found" in message or "does not exist" in message)
    )


def upstream_status_error(
    *,
    label: str,
    key_hint: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    redactor: Redactor,
) -> GatewayError:
    """Map an upstream HTTP error answer to the gateway error the client should see (SPEC §5).

    `label` names the provider ("Ollama at …"), `key_hint` says how its key is configured.
    """
    error = _map_status(label, key_hint, status, body, headers=headers, redactor=redactor)
    error.upstream_status = status
    return error


def _refused(
    label: str, status: int, detail: str, fields: Mapping[str, Any], passed: dict[str, str]
) -> GatewayError:
    """An upstream's 429 as it came, or its 402 as the 429 `insufficient_quota` OpenAI sends."""
    if status == 429:
        return GatewayError(
            f"{label} is rate limiting requests: {detail}",
            status=429,
            error_type=fields.get("type", "requests"),
            code=fields.get("code", "rate_limit_exceeded"),
            param=fields.get("param"),
            headers=passed,
        )
    # OpenAI reports exhausted credit as 429 insufficient_quota; clients already handle that.
    return GatewayError(
        f"{label} refused the request for billing reasons: {detail}",
        status=429,
        error_type="insufficient_quota",
        code="insufficient_quota",
    )


def _client_error(label: str, status: int, detail: str, fields: Mapping[str, Any]) -> GatewayError:
    """A client error the upstream found in the request, passed on (422 as 400)."""
    error_type = fields.get("type", "invalid_request_error")
    if status == 404 and _looks_like_missing_model(fields):
        return ModelNotFoundError(f"{label}: {detail}")
    if error_type.endswith("not_found_error"):
        error_type = "invalid_request_error"
    return GatewayError(
        f"{label}: {detail}",
        status=400 if status == 422 else status,
        error_type=error_type,
        code=fields.get("code"),
        param=fields.get("param"),
    )


def _map_status(
    label: str,
    key_hint: str,
    status: int,
    body: bytes,
    *,
    headers: Mapping[str, str],
    redactor: Redactor,
) -> GatewayError:
    """Map an upstream HTTP error answer to the gateway error the client should see (SPEC §5).

    `label` names the provider ("Ollama at http://…"), `key_hint` says how its key is configured.
    """
    fields = _error_fields(body)
    detail = redactor.redact(str(fields.get("message") or f"HTTP {status}"))[:_MAX_UPSTREAM_MESSAGE]
    passed = {k: headers[k] for k in _RETRY_HEADERS if k in headers}
    if status in (401, 403):
        return UpstreamAuthError(
            f"{label} rejected the gateway's upstream credentials (HTTP {status}): {key_hint}."
        )
    if status in (402, 429):
        return _refused(label, status, detail, fields, passed)
    if status in _PASSED_THROUGH or status == 422:
        return _client_error(label, status, detail, fields)
    if status == 501:
        # llama.cpp's server without --embeddings, for one: the operation does not exist there,
        # and a 502 would make the SDKs retry what can never succeed.
        return UnsupportedOperationError(f"{label} does not implement this operation: {detail}")
    if status == 408:
        return UpstreamTimeoutError(f"{label} timed out handling the request (HTTP 408).")
    return UpstreamError(
        f"{label} failed with HTTP {status}: {detail}",
        headers=passed if status >= 500 else None,
    )
