"""The one place where secrets are removed from text bound for clients or logs."""

from __future__ import annotations

import re
from collections.abc import Iterable

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
REDACTED = "[REDACTED]"
_REPLACEMENT = r"\1" + REDACTED


class Redactor:
    """Replaces every configured secret, and any bearer token, with a fixed marker."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is removed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        # A case-insensitive pattern is tried at every position of the text, several times the
        # cost of lower-casing it and one substring search; most lines hold no bearer token. No
        # character matches a letter of "bearer" under IGNORECASE without lower-casing to it.
        if "bearer" not in text.lower():
            return text
        return _BEARER.sub(_REPLACEMENT, text)
