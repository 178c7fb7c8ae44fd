"""Responses API objects and stream events, checked against OpenAI's OpenAPI document."""

from __future__ import annotations

from typing import Any

from tests.support import spec
from tests.support.spec import event_problems, event_schemas

__all__ = ["event_problems", "event_schemas", "response_problems"]


def response_problems(response: Any) -> list[str]:
    return spec.problems("Response", response)
