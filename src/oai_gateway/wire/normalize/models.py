"""Model objects."""

from __future__ import annotations

from typing import Any

from oai_gateway.wire.answer_shapes import is_int
from oai_gateway.wire.normalize.common import Json


def model_object(obj: Any, *, owner: str) -> Json | None:
    """An OpenAI Model, or None for an entry without an id."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
        return None
    created = obj.get("created")
    owned_by = obj.get("owned_by")
    return {
        "id": obj["id"],
        "object": "model",
        "created": created if is_int(created) else 0,
        "owned_by": owned_by if isinstance(owned_by, str) and owned_by else owner,
    }
