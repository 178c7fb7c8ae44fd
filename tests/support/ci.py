"""Whether the suite runs in CI, where a missing tool fails a test instead of skipping it."""

from __future__ import annotations

import os

_YES = frozenset({"true", "1", "yes"})


def running_in_ci() -> bool:
    """`CI` set to true, 1 or yes (any case, surrounding spaces ignored), as CI services do."""
    return os.environ.get("CI", "").strip().lower() in _YES
