"""Request ids (SPEC §4.2): keep a valid client id or make one."""

from __future__ import annotations

import os
import re

from oai_gateway.server.asgi import Scope, header

_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return f"req_{os.urandom(16).hex()}"


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is 1-128 chars of [A-Za-z0-9._:-], else a new one."""
    supplied = header(scope, b"x-request-id")
    if supplied is not None and _VALID.fullmatch(supplied):
        return supplied.decode("ascii")
    return new_request_id()
