"""How Responses streams are framed (SPEC §9): `event: <type>`, `data: <json>`, a blank line;
no `data: [DONE]` at the end."""

from __future__ import annotations

from typing import Any

import orjson


def frame(event: dict[str, Any]) -> bytes:
    """One event, named by its `type`."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def frame_raw(kind: bytes, data: bytes) -> bytes:
    """One event whose JSON is already encoded (an upstream's bytes, relayed as they are)."""
    return b"event: " + kind + b"\ndata: " + data + b"\n\n"
