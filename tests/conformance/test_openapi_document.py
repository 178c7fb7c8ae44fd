"""The gateway's own OpenAPI document: served, and always rebuilt from OpenAI's spec."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

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


def test_every_reference_resolves() -> None:
    document = json.loads((ROOT / "src" / "oai_gateway" / "openapi.json").read_text())
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        node = document
        for key in ref.removeprefix("#/").split("/"):
            node = node[key]
