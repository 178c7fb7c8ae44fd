"""Build the gateway's own OpenAPI document from OpenAI's, so the two cannot disagree.

    uv run python scripts/build_openapi.py     # rewrites src/oai_gateway/openapi.json

Every served route gets OpenAI's operation (request and response schemas, copied with everything
they reference) under `/{provider}/v1`, plus the error envelope for each status the gateway
answers with (SPEC §5). A test rebuilds the document and fails if the committed file differs.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "data" / "openai-openapi.yaml"
OUTPUT = ROOT / "src" / "oai_gateway" / "openapi.json"

# (OpenAI path, method, gateway error statuses besides the ones every route has)
OPERATIONS = (
    ("/models", "get", ()),
    ("/models/{model}", "get", ()),
    ("/embeddings", "post", (400, 413)),
    ("/completions", "post", (400, 413)),
    ("/chat/completions", "post", (400, 413)),
)
COMMON_ERRORS = (401, 404, 405, 429, 500, 502, 504)
ERROR_TEXT = {
    400: "Invalid request body or unsupported operation",
    401: "Missing or unknown gateway key",
    404: "Unknown provider, model or path",
    405: "Wrong method",
    413: "Request body over MAX_REQUEST_BYTES",
    429: "Upstream rate limit (retry-after passed through)",
    500: "Unexpected gateway error",
    502: "Upstream unreachable, failed, or rejected the gateway's upstream key",
    504: "Upstream timeout",
}
PROVIDER_PARAMETER = {
    "name": "provider",
    "in": "path",
    "required": True,
    "description": "A provider configured on the gateway (ollama, cerebras, custom, or named).",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"},
}


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _without_vendor_keys(node: Any) -> Any:
    """OpenAI's `x-oaiMeta` examples are documentation for their site, not for clients."""
    if isinstance(node, dict):
        return {k: _without_vendor_keys(v) for k, v in node.items() if not k.startswith("x-oai")}
    if isinstance(node, list):
        return [_without_vendor_keys(v) for v in node]
    return node


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_TEXT[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _operation(official: dict[str, Any], extra_errors: tuple[int, ...]) -> dict[str, Any]:
    operation: dict[str, Any] = _without_vendor_keys(copy.deepcopy(official))
    operation["parameters"] = [PROVIDER_PARAMETER, *operation.get("parameters", [])]
    responses = {"200": operation["responses"]["200"]}
    for status in sorted((*extra_errors, *COMMON_ERRORS)):
        responses[str(status)] = _error_response(status)
    operation["responses"] = responses
    operation["security"] = [{"GatewayKey": []}]
    return operation


def _health(description: str, statuses: tuple[int, ...]) -> dict[str, Any]:
    status_object = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "get": {
            "operationId": description.split(maxsplit=1)[0].lower(),
            "summary": description,
            "responses": {
                str(s): {
                    "description": "ok" if s == 200 else "not ready",
                    "content": {"application/json": {"schema": status_object}},
                }
                for s in statuses
            },
        }
    }


def build(spec_path: Path = SPEC) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = spec_path.read_text(encoding="utf-8")
    official: dict[str, Any] = yaml.load(text, Loader=loader)
    paths: dict[str, Any] = {}
    wanted: set[str] = {"#/components/schemas/ErrorResponse"}
    for path, method, errors in OPERATIONS:
        operation = _operation(official["paths"][path][method], errors)
        _refs(operation, wanted)
        paths[f"/{{provider}}/v1{path}"] = {method: operation}
    paths["/healthz"] = _health("Healthz: liveness", (200,))
    paths["/readyz"] = _health("Readyz: per-provider reachability", (200, 503))
    components: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    while wanted - done:
        ref = min(wanted - done)
        done.add(ref)
        node = _without_vendor_keys(_resolve(official, ref))
        _refs(node, wanted)
        _, section, name = ref.removeprefix("#/").split("/")
        components.setdefault(section, {})[name] = node
    components["securitySchemes"] = {"GatewayKey": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": official["openapi"],
        "info": {
            "title": "oai-gateway",
            "version": "0.1.0",
            "description": (
                "OpenAI's REST surface, once per provider under /{provider}/v1. Request and "
                f"response schemas are OpenAI's own (spec version {official['info']['version']}); "
                "every error uses OpenAI's envelope."
            ),
        },
        "paths": paths,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main() -> int:
    OUTPUT.write_text(render(build()), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
