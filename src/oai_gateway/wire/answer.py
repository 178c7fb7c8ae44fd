"""`Answer`: a complete (non-streaming) answer as it leaves the gateway.

The body is the exact bytes to send; the usage is read by the gateway itself (access log,
metrics, and whatever counts tokens per key), so it travels beside the body instead of being
parsed back out of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    usage: Json | None = None

    @classmethod
    def of(cls, obj: Json) -> Answer:
        """An answer built as a dict: serialised once, its `usage` object kept beside it."""
        usage = obj.get("usage")
        return cls(orjson.dumps(obj), usage if isinstance(usage, dict) else None)
