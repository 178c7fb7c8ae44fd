"""The declared request structs cover every field OpenAI's spec defines, no more and no less."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
import pytest
import yaml

from oai_gateway.wire import request_schema
from tests.support.spec import SPEC_PATH


@cache
def schemas() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)
    found: dict[str, Any] = document["components"]["schemas"]
    return found


def spec_fields(name: str) -> tuple[set[str], set[str]]:
    """(every property, the required ones) of a component schema, through `allOf`."""
    schema = schemas()[name]
    fields = set(schema.get("properties", {}))
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            more, needed = spec_fields(part["$ref"].rsplit("/", 1)[1])
        else:
            more, needed = set(part.get("properties", {})), set(part.get("required", []))
        fields |= more
        required |= needed
    return fields, required


@pytest.mark.parametrize(
    ("spec_name", "struct"),
    [
        ("CreateChatCompletionRequest", request_schema.ChatCompletionRequest),
        ("CreateCompletionRequest", request_schema.CompletionRequest),
        ("CreateEmbeddingRequest", request_schema.EmbeddingRequest),
    ],
)
def test_struct_declares_exactly_the_spec_fields(spec_name: str, struct: type[Any]) -> None:
    fields, required = spec_fields(spec_name)
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    declared = {f.name for f in info.fields}
    declared_required = {f.name for f in info.fields if f.required}
    assert declared == fields, {
        "missing": sorted(fields - declared),
        "not in the spec": sorted(declared - fields),
    }
    assert declared_required == required


def test_message_roles_are_the_spec_roles() -> None:
    roles = set()
    for ref in schemas()["ChatCompletionRequestMessage"]["oneOf"]:
        message = schemas()[ref["$ref"].rsplit("/", 1)[1]]
        roles |= set(message["properties"]["role"]["enum"])
    info = msgspec.inspect.type_info(list[request_schema.Message])
    assert isinstance(info, msgspec.inspect.ListType)
    union = info.item_type
    assert isinstance(union, msgspec.inspect.UnionType)
    declared = {t.tag for t in union.types if isinstance(t, msgspec.inspect.StructType)}
    assert declared == roles
