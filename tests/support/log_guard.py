"""Session-wide guard: no log record emitted by any test may carry a configured secret (§4.5).

Every record is inspected as it is handled, whichever logger or handler setup a test installed
(the gateway's own `configure_logging` replaces the root handlers, so a root handler alone could
miss records). The session fails at its end, naming the records, if a key value was seen.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
_LOGGING = Path(logging.__file__).resolve().parent
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def configured_secrets() -> frozenset[str]:
    """Every UPPER_CASE string constant whose name says KEY or SECRET in any test module loaded
    (the session fixture runs after collection, so that is every module of the run): a key
    added anywhere in the suite is watched without being listed here."""
    found: set[str] = set()
    for name, module in list(sys.modules.items()):
        if name != "tests" and not name.startswith("tests."):
            continue
        for attr, value in vars(module).items():
            named = attr.isupper() and ("KEY" in attr or "SECRET" in attr)
            # Values, not variable names such as LOCAL_KEY_ENV = "LOCAL_LLM_KEY".
            if named and isinstance(value, str) and len(value) >= 8 and not value.isupper():
                found.add(value)
    return frozenset(found)


def record_text(record: logging.LogRecord) -> str:
    """Everything a formatter could write from this record."""
    try:
        parts = [record.getMessage()]
    except (TypeError, ValueError):
        parts = [str(record.msg), repr(record.args)]
    parts.extend(repr(v) for k, v in record.__dict__.items() if k not in _STANDARD)
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def logged_by_a_test() -> bool:
    """Whether the record comes straight from a test function, not from gateway code.

    tests/observability/test_logging.py logs key values on purpose to prove the formatter redacts
    them; those records are the test's input, not a leak by the gateway.
    """
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        if path.parent != _LOGGING and path != Path(__file__).resolve():
            return _TESTS in path.parents and path.name.startswith("test_")
        frame = frame.f_back  # type: ignore[assignment]
    return False


# Virtual keys are made while the suite runs, so they are not constants: any full key
# (`sk-gw-<id>-<secret>`) in a record is a leak, whoever made it. Ids alone are public.
VIRTUAL_KEY = re.compile(r"sk-gw-[a-z0-9]{12}-[A-Za-z0-9_-]{32,}")


def virtual_keys_in(text: str) -> list[str]:
    return VIRTUAL_KEY.findall(text)


class SecretWatch:
    def __init__(self, secrets: frozenset[str]) -> None:
        self.secrets = secrets
        self.records = 0
        self.leaks: list[str] = []

    def inspect(self, record: logging.LogRecord) -> None:
        self.records += 1
        if logged_by_a_test():
            return
        text = record_text(record)
        where = f"{record.name}:{record.levelname} ({record.pathname}:{record.lineno})"
        for secret in self.secrets:
            if secret in text:
                self.leaks.append(f"{where}: {secret[:4]}… in {text[:300]!r}")
        for key in virtual_keys_in(text):
            self.leaks.append(f"{where}: virtual key {key[:18]}… in a log record")


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log_record() -> Iterator[SecretWatch]:
    watch = SecretWatch(configured_secrets())
    assert watch.secrets, "no secrets found to watch for"
    original = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        watch.inspect(record)
        original(self, record)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging.Logger, "handle", handle)
        yield watch
    assert not watch.leaks, f"secrets in {len(watch.leaks)} log records:\n" + "\n".join(
        watch.leaks[:20]
    )
