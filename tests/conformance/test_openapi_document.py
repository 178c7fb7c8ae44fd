"""The gateway's own OpenAPI document: served, and always rebuilt from OpenAI's spec."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_openapi", ROOT / "scripts" / "build_openapi.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_document_matches_a_fresh_build() -> None:
    builder = _builder()
    committed = (ROOT / "src" / "oai_gateway" / "openapi.json").read_text(encoding="utf-8")
    assert committed == builder.render(builder.build()), (
        "src/oai_gateway/openapi.json is stale: run `uv run python scripts/build_openapi.py`"
    )


def test_document_is_served_without_a_key(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    chat = document["paths"]["/{provider}/v1/chat/completions"]["post"]
    request_ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert request_ref == "#/components/schemas/CreateChatCompletionRequest"
    assert "CreateChatCompletionRequest" in document["components"]["schemas"]
    for status in ("401", "404", "502", "504"):
        error = chat["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    assert {p["name"] for p in chat["parameters"]} == {"provider"}


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer names (RFC 6901 escapes included), or None."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def test_every_reference_resolves_and_every_schema_is_referenced() -> None:
    document = json.loads((ROOT / "src" / "oai_gateway" / "openapi.json").read_text())
    refs = set(_references(document))
    assert "#/components/schemas/CreateChatCompletionRequest" in refs, sorted(refs)[:10]
    assert "#/components/schemas/ErrorResponse" in refs, sorted(refs)[:10]
    unresolved = sorted(r for r in refs if not isinstance(_resolve(document, r), dict))
    assert not unresolved, f"references that name no schema: {unresolved}"
    # The builder copies only what the gateway's operations reach: nothing is carried unused.
    named = {r.removeprefix("#/components/schemas/") for r in refs}
    unused = sorted(set(document["components"]["schemas"]) - named)
    assert not unused, f"schemas nothing refers to: {unused}"
