"""The one place where secrets are removed from text bound for clients or logs."""

from __future__ import annotations

import re
from collections.abc import Iterable

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
REDACTED = "[REDACTED]"


class Redactor:
    """Replaces every configured secret, and any bearer token, with a fixed marker."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is removed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _BEARER.sub(r"\1" + REDACTED, text)
